"""Real datasets read from `manual_dir` as tfds builders: COCO captions, VQA v2, image-text JSONL.

Each builder has two configs: `images` stores each image's encoded file bytes (decoded and resized by the
pipeline, at whatever resolution the model wants), `regions` stores detector region features read from
`manual_dir/regions/` (bottom-up-attention TSV files or per-image .npz, see `local_files`) joined to the
text by image id. Nothing is downloaded. Missing or malformed annotation files raise `DataFileError`
naming the file and line or record, and so does an id listed twice (which of the two records is right
cannot be known, and the same image in two splits would leak). An example that cannot be trained on is
skipped, named in the log, and counted in `info.metadata["skipped"]` by split and reason: an image that
is missing or cannot be decoded (or has no region features), an example with no non-blank text
(`no_text`), a VQA question without answers (`no_answers`). A blank text beside others is dropped and a
text over `MAX_TEXT_CHARS` is cut, each counted in `info.metadata["amended"]`.

The tfds names carry a `vlf_` prefix (tfds has its own `coco_captions`); the pipeline knows them by the
short names in `BUILDERS`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vlfusion.data import local_files
from vlfusion.data.local_files import DataFileError, field
from vlfusion.data.vqa_answers import normalize_answer, soft_score  # the official VQA definitions.

Example = tuple[str, dict[str, Any]]
# Longest text kept at preparation, in characters. A row holds at most 512 tokens (BERT's position
# table), about 3,000 characters of ordinary words: the cut never shortens what a model reads, while a
# megabyte caption would be tokenised whole at every draw (seconds a row).
MAX_TEXT_CHARS = 10_000


@dataclasses.dataclass
class LocalConfig(tfds.core.BuilderConfig):
  source: str = "images"  # images | regions
  feature_dim: int = 2048


LOCAL_CONFIGS = [
    LocalConfig(name="images", description="Encoded image bytes.", source="images"),
    LocalConfig(name="regions", description="2048-d detector region features from manual_dir/regions.",
                source="regions", feature_dim=2048),
]


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What the local builders share: the image or region features of an example, and skip counting."""

  BUILDER_CONFIGS = LOCAL_CONFIGS

  @staticmethod
  def find_release_file(manual_dir: str, filename: str) -> str | None:
    """A release's annotation file: `manual_dir/<filename>` or `manual_dir/data/<filename>`, else None."""
    for path in (os.path.join(manual_dir, filename), os.path.join(manual_dir, "data", filename)):
      if local_files.is_file(path):
        return path
    return None

  def _media_features(self) -> dict[str, Any]:
    f = tfds.features
    if self.builder_config.source == "images":
      return {"image_bytes": f.Tensor(shape=(), dtype=np.object_)}
    d = self.builder_config.feature_dim
    return {"region_features": f.Tensor(shape=(None, d), dtype=np.float32),
            "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
            "labels": f.Tensor(shape=(None,), dtype=np.int32)}

  def _start(self, manual_dir: Any) -> str:
    manual_dir = os.fspath(manual_dir)
    if not local_files.is_dir(manual_dir):
      raise DataFileError(f"{self.name}: manual_dir not found: {manual_dir}")
    self._manual_dir = manual_dir
    self.info.metadata["inputs"] = fingerprint(self, manual_dir)
    self._skips = local_files.SkipCounter(self.name)
    self.info.metadata.update(self._skips.as_metadata())  # the same dicts, filled in as examples go by.
    self._regions = None
    if self.builder_config.source == "regions":
      self._regions = local_files.RegionStore(os.path.join(manual_dir, "regions"),
                                              self.builder_config.feature_dim)
    return manual_dir

  def annotation_files(self, manual_dir: str) -> list[str]:
    """The files under `manual_dir` (relative paths) whose content decides the examples; each builder
    lists its own, and the prepared dataset's fingerprint covers them."""
    raise TypeError(f"{type(self).__name__} does not list its annotation files; a local dataset builder "
                    "must override annotation_files so that changed inputs are detected")

  def data_files(self, manual_dir: str) -> list[str]:
    """The files (paths) that hold the examples' media, fingerprinted by size and time only (they may be
    many and large): the region feature files of the `regions` config; a builder adds its own."""
    if self.builder_config.source != "regions":
      return []
    return local_files.files_under(os.path.join(manual_dir, "regions"), (".tsv", ".npz"))

  def settings(self) -> dict[str, Any]:
    """{config.data field: value} of the fields besides `manual_dir` that decide the examples; a prepared
    dataset records them and is refused when they differ (none by default)."""
    return {}

  def _read_media(self, key: str, image_path: str) -> tuple[dict[str, Any] | None, str, str]:
    """(image bytes or regions of image `key`, "", "") or (None, reason, what) when they cannot be had."""
    if self._regions is not None:
      regions = self._regions.get(key)
      if regions is None:
        return None, "missing_regions", f"image {key}"
      return {"region_features": regions.features, "boxes": regions.boxes, "labels": regions.labels}, "", ""
    data, reason = local_files.read_image(image_path)
    if data is None:
      return None, reason, image_path
    return {"image_bytes": data}, "", ""

  def _media(self, split: str, key: str, image_path: str) -> dict[str, Any] | None:
    """The image bytes or regions of image `key`, or None (counted) when they cannot be had."""
    media, reason, what = self._read_media(key, image_path)
    if media is None:
      self._skips.skip(split, reason, what)
    return media

  def _texts(self, split: str, texts: list[str], what: str) -> list[str] | None:
    """`texts` of the example `what` as stored: blank ones dropped and those over `MAX_TEXT_CHARS` cut,
    each counted under `amended`; None (the example skipped, counted as `no_text`) when all are blank."""
    if not any(t.strip() for t in texts):
      self._skips.skip(split, "no_text", what)
      return None
    kept = []
    for j, text in enumerate(texts):
      if not text.strip():
        self._skips.amend(split, "empty_text", f"{what}: text {j} is blank, dropped")
        continue
      if len(text) > MAX_TEXT_CHARS:
        self._skips.amend(split, "long_text",
                          f"{what}: text {j} of {len(text)} characters cut to {MAX_TEXT_CHARS}")
        text = text[:MAX_TEXT_CHARS]
      kept.append(text)
    return kept

  def _generate_examples(self, *args: Any, **kwargs: Any) -> Iterator[Example]:
    raise NotImplementedError("each builder's _split_generators returns its own generators")

  def _finish(self, split: str, generated: int, where: str) -> None:
    skipped, amended = self._skips.total(split), self._skips.amended.get(split)
    if skipped or amended:
      logging.warning("%s/%s: %d examples written, %d skipped %s, texts changed %s (see info.metadata"
                      "['skipped'] and ['amended']).", self.name, split, generated, skipped,
                      self._skips.counts.get(split, {}), amended or {})
    if not generated:
      raise DataFileError(f"{self.name}/{split}: no usable examples in {where} ({skipped} skipped: "
                          f"{self._skips.counts.get(split, {})}); check the image or region paths")


def _image_root(manual_dir: str) -> str:
  images = os.path.join(manual_dir, "images")
  return images if local_files.is_dir(images) else manual_dir


class CocoCaptions(LocalBuilder):
  """COCO captions on the Karpathy split (train = train + restval, validation = val, test = test)."""

  name = "vlf_coco_captions"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Karpathy split, images or region features.",
                   "1.1.0": "Images without a non-blank sentence skipped, blank sentences dropped, long ones "
                            "cut; an image listed twice refused."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds dataset_coco.json (the Karpathy split) and the images
  at images/<filepath>/<filename> (or <filepath>/<filename>); for the `regions` config, regions/ with
  bottom-up-attention TSV files or <image_id>.npz files."""
  SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}

  def annotation_files(self, manual_dir: str) -> list[str]:
    return ["dataset_coco.json"]

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({"image_id": f.Text(), "captions": f.Sequence(f.Text()),
                                 **self._media_features()}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    path = os.path.join(manual_dir, "dataset_coco.json")
    images = field(local_files.read_json(path, "Karpathy split file"), "images", path, list)
    keys = self._keys(path, images)
    return {split: self._generate(split, names, path, images, keys) for split, names in self.SPLITS.items()}

  @staticmethod
  def _keys(path: str, images: list) -> list[str]:
    """The image key of each entry; an image listed twice (in one split or two) is refused."""
    keys, first = [], {}
    for i, entry in enumerate(images):
      where = f"{path}: images[{i}]"
      if not isinstance(entry, dict):
        raise DataFileError(f"{where}: expected an object, got {type(entry).__name__}")
      key = local_files.image_key(entry.get("cocoid", field(entry, "filename", where, str)))
      if key in first:
        raise DataFileError(f"{where}: image {key} is listed twice (first at images[{first[key]}]); "
                            "remove one of them")
      first[key] = i
      keys.append(key)
    return keys

  def _generate(self, split: str, names: tuple[str, ...], path: str, images: list,
                keys: list[str]) -> Iterator[Example]:
    root, generated = _image_root(self._manual_dir), 0
    for i, (entry, key) in enumerate(zip(images, keys, strict=True)):
      where = f"{path}: images[{i}]"
      if field(entry, "split", where, str) not in names:
        continue
      filename = field(entry, "filename", where, str)
      sentences = field(entry, "sentences", where, list)
      captions = [field(s, "raw", f"{where}.sentences[{j}]", str) if isinstance(s, dict) else
                  _bad(f"{where}.sentences[{j}]") for j, s in enumerate(sentences)]
      captions = self._texts(split, captions, f"{where}: image {key} ({filename})")
      if captions is None:
        continue
      media = self._media(split, key, os.path.join(root, str(entry.get("filepath", "")), filename))
      if media is None:
        continue
      generated += 1
      yield key, {"image_id": key, "captions": captions, **media}
    self._finish(split, generated, path)


def _bad(where: str):
  raise DataFileError(f"{where}: expected an object")


class ImageTextJsonl(LocalBuilder):
  """Generic image-text pairs: `<split>.jsonl` files of {"image": path, "text": str or [str, ...]}.

  Image paths are relative to manual_dir (or absolute); an optional "image_id" field names the image for
  joining region features, otherwise the image file name does.
  """

  name = "vlf_image_text_jsonl"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "JSON lines of image path and text.",
                   "1.1.0": "Lines without a non-blank text skipped, blank texts dropped, long ones cut."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds train.jsonl (and optionally validation.jsonl,
  test.jsonl), one {"image": path, "text": caption} object per line, and the images they name."""
  SPLIT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")

  def annotation_files(self, manual_dir: str) -> list[str]:
    return [f for f in self.SPLIT_FILES if local_files.is_file(os.path.join(manual_dir, f))]

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({"image_id": f.Text(), "captions": f.Sequence(f.Text()),
                                 **self._media_features()}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    local_files.require_file(os.path.join(manual_dir, "train.jsonl"), "image-text train file")
    return {split: self._generate(split, os.path.join(manual_dir, f"{split}.jsonl"))
            for split in ("train", "validation", "test")
            if local_files.is_file(os.path.join(manual_dir, f"{split}.jsonl"))}

  def _generate(self, split: str, path: str) -> Iterator[Example]:
    generated = 0
    for number, record in local_files.read_jsonl(path, f"image-text {split} file"):
      where = f"{path}: line {number}"
      image = field(record, "image", where, str)
      text = field(record, "text", where, (str, list))
      captions = [text] if isinstance(text, str) else text
      if not captions or not all(isinstance(c, str) for c in captions):
        raise DataFileError(f"{where}: field 'text' must be a string or a non-empty list of strings")
      key = local_files.image_key(record.get("image_id", image))
      captions = self._texts(split, captions, f"{where}: image {key}")
      if captions is None:
        continue
      media = self._media(split, key, os.path.join(self._manual_dir, image))
      if media is None:
        continue
      generated += 1
      yield f"{number}", {"image_id": key, "captions": captions, **media}
    self._finish(split, generated, path)


@dataclasses.dataclass
class _Question:
  """A VQA question joined to its annotation, checked: `text` as stored, `answers` the annotators'
  answers normalised (one per annotator, never empty), `where` the two records in their files."""

  q: dict[str, Any]
  a: dict[str, Any]
  where: str
  text: str
  answers: list[str]
  multiple_choice_answer: str


def _object(entry: Any, where: str) -> dict[str, Any]:
  if not isinstance(entry, dict):
    raise DataFileError(f"{where}: expected an object, got {type(entry).__name__}")
  return entry


class VqaV2(LocalBuilder):
  """VQA v2 questions with soft-scored answers (train = train2014, validation = val2014).

  Each image (or its region features) is stored once, in the split `<split>_images` (one record per image,
  ordered by image id); a question record holds no media but `image_index`, the position of its image
  there. `answers` are the distinct normalised answers of the 10 annotators and `answer_scores` their
  official soft scores (`soft_score`). `info.metadata["answer_counts"]` counts each normalised
  `multiple_choice_answer` of the train split: the pipeline's answer vocabulary is drawn from it.
  """

  name = "vlf_vqa_v2"
  VERSION = tfds.core.Version("2.2.0")
  RELEASE_NOTES = {"1.0.0": "Questions, soft scores, images or region features.",
                   "1.1.0": "Answers normalised as the official evaluation does (contraction table).",
                   "2.0.0": "Images stored once, in <split>_images; questions point at them.",
                   "2.1.0": "Both of the above, and question_type / answer_type from the annotations.",
                   "2.2.0": "Questions without answers or text skipped, long questions cut; a repeated "
                            "id or disagreeing image_id refused."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds v2_OpenEnded_mscoco_{train,val}2014_questions.json,
  v2_mscoco_{train,val}2014_annotations.json and the images train2014/, val2014/ (or under images/); for
  the `regions` config, regions/ with TSV or .npz features."""
  SUBSETS = {"train": "train2014", "validation": "val2014"}
  IMAGES = "_images"  # suffix of the split that holds a split's images.

  def annotation_files(self, manual_dir: str) -> list[str]:
    kinds = (("v2_OpenEnded_mscoco", "questions.json"), ("v2_mscoco", "annotations.json"))
    names = [f"{kind}_{subset}_{suffix}" for subset in self.SUBSETS.values() for kind, suffix in kinds]
    return [f for f in names if local_files.is_file(os.path.join(manual_dir, f))]

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({
            "question_id": np.int64, "image_id": f.Text(), "image_index": np.int64, "question": f.Text(),
            "question_type": f.Text(), "answer_type": f.Text(), "multiple_choice_answer": f.Text(),
            "answers": f.Sequence(f.Text()), "answer_scores": f.Tensor(shape=(None,), dtype=np.float32),
            **self._media_features()}),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)  # records in key order: an image's position is its rank by id.

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    splits = {}
    for split, subset in self.SUBSETS.items():
      questions = os.path.join(manual_dir, f"v2_OpenEnded_mscoco_{subset}_questions.json")
      annotations = os.path.join(manual_dir, f"v2_mscoco_{subset}_annotations.json")
      if split != "train" and not local_files.is_file(questions):
        continue
      items = self._load(questions, annotations, split)
      images, unusable = self._usable_images(split, subset, items)
      splits[split] = self._generate(split, subset, items, images, unusable)
      splits[split + self.IMAGES] = self._generate_images(subset, images)
    return splits

  def _load(self, questions_path: str, annotations_path: str, split: str) -> list[_Question]:
    """The questions of a subset joined to their annotations. A question or annotation listed twice, a
    question without annotation, an annotation of another image or a malformed answer is refused; a
    question without answers or with a blank text is skipped (counted)."""
    questions = field(local_files.read_json(questions_path, "VQA questions file"), "questions",
                      questions_path, list)
    annotations = field(local_files.read_json(annotations_path, "VQA annotations file"), "annotations",
                        annotations_path, list)
    by_id = {}
    for j, a in enumerate(annotations):
      qid = field(_object(a, f"{annotations_path}: annotations[{j}]"), "question_id",
                  f"{annotations_path}: annotations[{j}]", int)
      if qid in by_id:
        raise DataFileError(f"{annotations_path}: annotations[{j}]: question_id {qid} is listed twice "
                            f"(first at annotations[{by_id[qid][1]}]); remove one of them")
      by_id[qid] = (a, j)
    out, counts, first = [], collections.Counter(), {}
    for i, q in enumerate(questions):
      where = f"{questions_path}: questions[{i}]"
      qid = field(_object(q, where), "question_id", where, int)
      if qid in first:
        raise DataFileError(f"{where}: question_id {qid} is listed twice (first at questions[{first[qid]}]); "
                            "remove one of them")
      first[qid] = i
      if qid not in by_id:
        raise DataFileError(f"{where}: question_id {qid} has no entry in {annotations_path}")
      a, j = by_id[qid]
      a_where = f"{annotations_path}: annotations[{j}]"
      image_id = field(q, "image_id", where, int)
      if "image_id" in a and a["image_id"] != image_id:
        raise DataFileError(f"question_id {qid} is about image_id {image_id} in {where} but image_id "
                            f"{a['image_id']!r} in {a_where}; the files do not belong together")
      mc_answer = normalize_answer(field(a, "multiple_choice_answer", a_where, str))
      counts[mc_answer] += 1
      given = []
      for k, x in enumerate(field(a, "answers", a_where, list)):
        if not isinstance(x, dict):
          raise DataFileError(f"{a_where} (question_id {qid}): answers[{k}] is {type(x).__name__}, not an "
                              "object with an 'answer'")
        answer = field(x, "answer", f"{a_where} (question_id {qid}): answers[{k}]", str)
        given.append(normalize_answer(answer))
      if not given:  # an all-zero target would teach "no answer is right".
        self._skips.skip(split, "no_answers", f"question {qid} ({a_where})")
        continue
      text = self._texts(split, [field(q, "question", where, str)], f"question {qid} ({where})")
      if text is None:
        continue
      out.append(_Question(q=q, a=a, where=f"{where} / {a_where}", text=text[0], answers=given,
                           multiple_choice_answer=mc_answer))
    if split == "train":
      self.info.metadata["answer_counts"] = dict(counts.most_common())
    return out

  def _image_path(self, subset: str, image_id: int) -> str:
    return os.path.join(_image_root(self._manual_dir), subset, f"COCO_{subset}_{image_id:012d}.jpg")

  def _usable_images(self, split: str, subset: str, items: list) -> tuple[list[int], dict[int, str]]:
    """(sorted ids of the images that can be read, {id: reason} of those that cannot); each unusable
    image is counted once under `<split>_images`."""
    usable, unusable = [], {}
    for image_id in sorted({item.q["image_id"] for item in items}):
      media, reason, what = self._read_media(str(image_id), self._image_path(subset, image_id))
      if media is None:
        self._skips.skip(split + self.IMAGES, reason, what)
        unusable[image_id] = reason
      else:
        usable.append(image_id)
    return usable, unusable

  def _generate_images(self, subset: str, images: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
    for image_id in images:
      media, _, _ = self._read_media(str(image_id), self._image_path(subset, image_id))
      if media is None:  # readable a moment ago.
        raise DataFileError(f"{self._image_path(subset, image_id)}: changed while preparing")
      yield image_id, {**self._no_question(), "image_id": str(image_id), **media}

  def _no_question(self) -> dict[str, Any]:
    return {"question_id": -1, "image_index": -1, "question": "", "question_type": "", "answer_type": "",
            "multiple_choice_answer": "", "answers": [], "answer_scores": np.zeros((0,), np.float32)}

  def _no_media(self) -> dict[str, Any]:
    if self.builder_config.source == "images":
      return {"image_bytes": b""}
    return {"region_features": np.zeros((0, self.builder_config.feature_dim), np.float32),
            "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int32)}

  def _generate(self, split: str, subset: str, items: list[_Question], images: list[int],
                unusable: dict[int, str]) -> Iterator[tuple[int, dict[str, Any]]]:
    index, generated = {image_id: i for i, image_id in enumerate(images)}, 0
    for item in items:
      q, a = item.q, item.a
      image_id = q["image_id"]
      if image_id in unusable:
        self._skips.skip(split, unusable[image_id], f"question {q['question_id']}: image {image_id}")
        continue
      counts = collections.Counter(item.answers)
      answers = sorted(counts)
      generated += 1
      yield q["question_id"], {
          "question_id": q["question_id"], "image_id": str(image_id), "image_index": index[image_id],
          "question": item.text,
          "question_type": str(a.get("question_type", "")), "answer_type": str(a.get("answer_type", "")),
          "multiple_choice_answer": item.multiple_choice_answer,
          "answers": answers,
          "answer_scores": np.array([soft_score(counts[x], len(item.answers)) for x in answers], np.float32),
          **self._no_media()}
    self._finish(split, generated, f"the VQA {subset} files")


BUILDERS = {"coco_captions": CocoCaptions, "vqa_v2": VqaV2, "image_text_jsonl": ImageTextJsonl}


def make_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder for `family/config` (e.g. `image_text_jsonl/images`) under `data_dir`."""
  family, _, config = name.partition("/")
  return BUILDERS[family](data_dir=data_dir, config=config or "images")


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
  """Writes the dataset (ArrayRecord) from `manual_dir` unless it is already prepared."""
  if builder.is_prepared():
    return
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with local_files.open_file(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(builder: LocalBuilder, manual_dir: str, hashes: bool = True) -> dict[str, Any]:
  """What a prepared dataset was made from: the resolved `manual_dir`, its annotation files (size, mtime
  and, with `hashes`, SHA-256), its `data_files` (size, mtime: region features, shards; named relative to
  `manual_dir` when under it) and its `settings`. Image files are not listed (stat-ing a hundred
  thousand images on every start would cost more than it protects): an image replaced in place under
  the same name is not detected. A remote `manual_dir` (`gs://...`) is kept as given."""
  manual_dir = os.fspath(manual_dir)
  if not local_files.is_remote(manual_dir):
    manual_dir = os.path.realpath(manual_dir)
  files = {}
  for name in builder.annotation_files(manual_dir):
    path = os.path.join(manual_dir, name)
    files[name] = local_files.file_stat(path)
    if hashes:
      files[name]["sha256"] = _sha256(path)
  for path in builder.data_files(manual_dir):
    files[local_files.relative_name(path, manual_dir)] = local_files.file_stat(path)
  settings = builder.settings()
  return {"manual_dir": manual_dir, "files": files, **({"settings": settings} if settings else {})}


def _same_file(saved: dict[str, Any], now: dict[str, Any], path: str) -> bool:
  if saved.get("size") != now["size"]:
    return False
  if saved.get("mtime_ns") == now["mtime_ns"] or "sha256" not in saved:
    return saved.get("mtime_ns") == now["mtime_ns"]
  return saved["sha256"] == _sha256(path)  # touched or copied: the content decides.


def input_changes(builder: LocalBuilder, manual_dir: str) -> list[str]:
  """How `manual_dir` differs from what the prepared `builder` was made from ([] when it does not).

  Files are compared by size and modification time, annotation files by content when only the time
  differs; a dataset prepared before fingerprints were recorded cannot be checked (a warning says so).
  """
  saved = (builder.info.metadata or {}).get("inputs")
  where = f"{builder.name}/{builder.builder_config.name} in {builder.data_dir}"
  if not saved:
    logging.warning("%s was prepared without a record of its input files: it cannot be checked against "
                    "config.data.manual_dir=%r (delete it to prepare it again).", where, manual_dir)
    return []
  now = fingerprint(builder, manual_dir, hashes=False)
  if saved["manual_dir"] != now["manual_dir"]:
    return [f"config.data.manual_dir={manual_dir!r} but {where} was prepared from {saved['manual_dir']!r}"]
  saved_files, changes = saved.get("files", {}), []
  for name, value in sorted(builder.settings().items()):
    was = saved.get("settings", {}).get(name)
    if was != value:
      changes.append(f"config.data.{name}={value!r} but {where} was prepared with {was!r}")
  for name in sorted(set(saved_files) | set(now["files"])):
    if name not in now["files"]:
      what = "is gone"
    elif name not in saved_files:
      what = "is new"
    elif not _same_file(saved_files[name], now["files"][name], os.path.join(now["manual_dir"], name)):
      what = "changed"
    else:
      continue
    changes.append(f"{name} (in config.data.manual_dir={manual_dir!r}) {what} since {where} was prepared")
  return changes
