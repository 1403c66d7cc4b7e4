"""SNLI-VE (Xie et al., 2019) from its release on disk, as a tfds builder (`snli_ve/{images,regions}`).

The release's `snli_ve_train.jsonl`, `snli_ve_dev.jsonl` and `snli_ve_test.jsonl` (in manual_dir or its
`data/`) hold one hypothesis a line: a JSON object with the image's `Flickr30K_ID`, the hypothesis
`sentence2` and its `gold_label` (entailment, neutral or contradiction). The images are
`<Flickr30K_ID>.jpg` in `images/`, `flickr30k_images/` or `Flickr30K/flickr30k_images/` of manual_dir
(the first that exists, else manual_dir itself); the `regions` config reads region features joined by
the same id instead. Splits: train, validation (dev), test. The premise caption (`sentence1`) is not
stored: in visual entailment the image is the premise.

Records are grouped by image, as COCO captions are: one record per image holds its `hypotheses` and
their `hypothesis_labels` (0 entailment, 1 neutral, 2 contradiction; the names in
`info.metadata["labels"]`), in file order. Bad lines are counted per line in `info.metadata["skipped"]`
and named in the log, never a crash: a `gold_label` that is missing, empty or "-" (SNLI's mark for
annotators without a majority) as `no_label`, any other label as `unknown_label`, a blank hypothesis as
`no_text`, and each line of an image that is missing or cannot be decoded (or has no region features)
as `missing_image` / `corrupt_image` / `missing_regions`. A line without `Flickr30K_ID` or
`sentence2`, and an image listed in two split files (the release splits by image; one image in two
splits would leak), are refused naming the file and line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from vlfusion.data import local_files
from vlfusion.data.local_datasets import Example, LocalBuilder
from vlfusion.data.local_files import DataFileError, field
from vlfusion.data.visual_entailment import LABELS

SPLITS = {"train": "train", "validation": "dev", "test": "test"}
IMAGE_DIRS = ("images", "flickr30k_images", os.path.join("Flickr30K", "flickr30k_images"))
_NO_LABEL = ("", "-")


@dataclasses.dataclass
class _Image:
  """One image of a split file: its Flickr30K id and its usable lines (line number, text, label)."""

  flickr_id: str
  lines: list[tuple[int, str, int]]


def split_file(release_split: str) -> str:
  return f"snli_ve_{release_split}.jsonl"


class SnliVe(LocalBuilder):
  """SNLI-VE hypotheses about Flickr30K images: entailment, neutral or contradiction."""

  name = "vlf_snli_ve"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train, dev and test hypotheses grouped by image, images or regions."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds snli_ve_{train,dev,test}.jsonl (or under data/) and
  the Flickr30K images <Flickr30K_ID>.jpg under images/, flickr30k_images/ or Flickr30K/flickr30k_images/
  (or manual_dir itself); for the `regions` config, regions/ with TSV or .npz features."""

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({
            "image_id": f.Text(), "hypotheses": f.Sequence(f.Text()),
            "hypothesis_labels": f.Tensor(shape=(None,), dtype=np.int32), **self._media_features()}),
        metadata=tfds.core.MetadataDict(labels=list(LABELS)))

  def annotation_files(self, manual_dir: str) -> list[str]:
    """The release's JSON lines files present (the prepared dataset's fingerprint covers them)."""
    found = (self.find_release_file(manual_dir, split_file(name)) for name in SPLITS.values())
    return [os.path.relpath(path, manual_dir) for path in found if path]

  def _image_dir(self) -> str:
    for name in IMAGE_DIRS:
      path = os.path.join(self._manual_dir, name)
      if local_files.is_dir(path):
        return path
    return self._manual_dir

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    files = {split: self.find_release_file(manual_dir, split_file(name)) for split, name in SPLITS.items()}
    files = {split: path for split, path in files.items() if path}
    if not files:
      raise DataFileError(f"{self.name}: none of {[split_file(n) for n in SPLITS.values()]} in "
                          f"{manual_dir} or {manual_dir}/data")
    groups, seen = {}, {}
    for split, path in files.items():
      groups[split] = self._read(split, path)
      for key, image in groups[split].items():
        first = image.lines[0][0]
        if key in seen:
          raise DataFileError(f"{path}: line {first}: image {image.flickr_id} is also in {seen[key]}; "
                              "the release splits by image, so one image in two splits means files "
                              "mixed up")
        seen[key] = f"{path} (line {first})"
    return {split: self._generate(split, path, groups[split]) for split, path in files.items()}

  def _read(self, split: str, path: str) -> dict[str, _Image]:
    """{image key: its id and lines} of one file, in file order; lines without a usable label or text
    are counted and left out."""
    groups: dict[str, _Image] = {}
    for number, record in local_files.read_jsonl(path, f"SNLI-VE {SPLITS[split]} file"):
      where = f"{path}: line {number}"
      flickr_id = str(field(record, "Flickr30K_ID", where, (str, int))).strip()
      key = local_files.image_key(flickr_id)
      text = field(record, "sentence2", where, str)
      gold = record.get("gold_label")
      gold = gold.strip().lower() if isinstance(gold, str) else gold
      if gold is None or gold in _NO_LABEL:
        self._skips.skip(split, "no_label", f"{where}: gold_label {record.get('gold_label')!r}")
        continue
      if gold not in LABELS:
        self._skips.skip(split, "unknown_label", f"{where}: gold_label {gold!r} is not one of {list(LABELS)}")
        continue
      kept = self._texts(split, [text], f"{where}: image {key}")
      if kept is None:
        continue
      groups.setdefault(key, _Image(flickr_id, [])).lines.append((number, kept[0], LABELS.index(gold)))
    return groups

  def _generate(self, split: str, path: str, groups: dict[str, _Image]) -> Iterator[Example]:
    image_dir, generated = self._image_dir(), 0
    for key, image in groups.items():
      lines = image.lines
      media, reason, what = self._read_media(key, os.path.join(image_dir, f"{image.flickr_id}.jpg"))
      if media is None:
        for number, _, _ in lines:
          self._skips.skip(split, reason, f"{path}: line {number}: {what}")
        continue
      generated += 1
      yield key, {"image_id": key, "hypotheses": [text for _, text, _ in lines],
                  "hypothesis_labels": np.array([lab for _, _, lab in lines], np.int32), **media}
    self._finish(split, generated, path)


def make_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder for `snli_ve/images` (or `snli_ve`) or `snli_ve/regions` under `data_dir`."""
  config = name.partition("/")[2] or "images"
  return SnliVe(data_dir=data_dir, config=config)
