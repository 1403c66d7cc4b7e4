"""One row of a batch, by task: a caption (with ITM negative and MLM corruption), a VQA question with its
soft scores, or a statement about two images (the shapes world's pairs, NLVR2); and the row's image or
regions (decoded, resized or padded, augmented) with masked-region targets. Every random choice comes
from the generator given, so a row is a pure function of (example, generator, train)."""

from __future__ import annotations

import bisect
import hashlib
from typing import Any

import ml_collections
import numpy as np

from vlfusion.data import images, local_files, masking, questions, scenes
from vlfusion.data.compatibility import active_objectives
from vlfusion.data.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

# VQA v2 answer types, as `vqa_answer_type` indexes them (-1: none, e.g. the shapes world).
ANSWER_TYPES = ("yes/no", "number", "other")
# Host-side strings `example(keep_text=True)` adds to a row; never sent to devices.
HOST_KEYS = ("text", "vqa_question_type_name")
# Keys of a row that hold its image(s): whatever is shown in place of a row's image replaces all of them.
IMAGE_KEYS = ("image", "image_mask", "regions", "pair_image", "pair_image_mask", "pair_regions")
# An evaluation row's images of another image of the split (`BatchSource.eval_batches(image_donors=)`),
# nested under this key as {image key: value}.
SHUFFLED_IMAGES = "shuffled_images"
_RANDOM = scenes.NEGATIVE_KINDS.index("random")


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _media_identity(record: dict[str, Any]) -> str:
  """`id:<image id>` of a record that names its image, else `sha1:<digest>` of its pixels, encoded image
  or region features."""
  if "image_id" in record:
    return "id:" + _text(record["image_id"])
  for key in ("image", "image_bytes", "region_features"):
    if key in record:
      data = record[key]
      data = data if isinstance(data, bytes) else np.ascontiguousarray(np.asarray(data)).tobytes()
      return "sha1:" + hashlib.sha1(data).hexdigest()
  raise KeyError(f"a record without image id, image or regions (keys: {sorted(record)})")


class RowBuilder:
  """Builds the model inputs of one example of a data source (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, builder: Any, data_source: Any, images_source: Any,
               tokenizer: WordPieceTokenizer, answer_vocab: list[str]):
    self.config = config
    self.builder = builder
    self.data_source = data_source
    self._images = images_source
    self.num_examples = len(data_source)
    self.tokenizer = tokenizer
    self.objectives = active_objectives(config)
    self.answer_vocab = answer_vocab
    self._answer_index = {a: i for i, a in enumerate(answer_vocab)}
    self._random_ids = np.array([i for t, i in tokenizer.vocab.items() if t not in SPECIAL_TOKENS], np.int32)
    self._special_ids = np.array([tokenizer.vocab[t] for t in SPECIAL_TOKENS], np.int32)
    mix = np.asarray(config.data.itm_negative_mix, np.float64)
    self._negative_mix = mix / mix.sum()
    # Shapes-world VQA: the training steps at which each phase of question-type weights starts, and
    # each phase's weights indexed by type id (None = the uniform draw).
    phases = questions.parse_type_weight_schedule(config.data.question_type_weights)
    self._phase_starts = [start for start, _ in phases]
    self._type_weights = [np.array([named.get(t, 1.0) for t in questions.QUESTION_TYPES])
                          if named else None for _, named in phases]

  def example(self, index: int, rng: np.random.Generator, keep_text: bool = False,
              train: bool = False, step: int = 0) -> dict[str, Any]:
    """One model input: image or regions, a text, and the targets of the enabled objectives.

    The text is a caption or ITM negative (with its MLM corruption), or with `vqa` a question and its
    `vqa_scores`, or with `pairs` a statement about this scene and its pair's (`pair_labels`). `train`
    turns on image augmentation (`config.data.randaugment_num_ops`) and, with the training `step`, the
    question-type weights; `keep_text` adds the strings of `HOST_KEYS` (the row's text; a VQA v2 row's
    question type).
    """
    record = self.data_source[index]
    ex: dict[str, Any] = {"example_mask": np.bool_(True)}
    if "vqa" in self.objectives:
      text, positive = self._vqa(record, rng, ex, step if train else None), False
    elif "pairs" in self.objectives:
      text, positive = _text(record["pair_statement"]), False
      ex["pair_labels"] = np.int32(record["pair_label"])
      pair = self.media(self._partner(record), rng, train)
      ex.update({f"pair_{k}": v for k, v in pair.items()})
    else:
      text, kind, form = self._caption(record, index, rng)
      positive = kind == 0
      ex["itm_labels"], ex["itm_negative_kind"] = np.int32(positive), np.int32(kind)
      ex["itm_caption_form"] = np.int32(form)
    ex.update(self._text_inputs(text, positive, rng))
    media = self.media_record(record)
    ex.update(self.media(media, rng, train))
    if keep_text:
      ex["text"] = text
      if "vqa" in self.objectives:
        ex["vqa_question_type_name"] = _text(record.get("question_type", ""))
    if "mrm" in self.objectives and "regions" in ex:
      ex.update(self._mask_regions(ex["regions"], media, positive, rng))
    return ex

  def _pairs(self) -> bool:
    """Whether a row holds a second image (`pairs`, unless `vqa` takes the text)."""
    return "pairs" in self.objectives and "vqa" not in self.objectives

  def _partner(self, record: dict[str, Any]) -> dict[str, Any]:
    """The record that holds the second image of a pair row."""
    if "pair_image_bytes" in record:  # NLVR2
      return {"image_bytes": record["pair_image_bytes"]}
    return self.data_source[int(record["pair_index"])]

  def image_inputs(self, index: int) -> dict[str, Any]:
    """The keys of `IMAGE_KEYS` that an evaluation row of example `index` holds (no augmentation, no
    masked regions): what another row is given when it is shown this example's image."""
    record = self.data_source[index]
    out = self.media(self.media_record(record), None, False)
    if self._pairs():
      out.update({f"pair_{k}": v for k, v in self.media(self._partner(record), None, False).items()})
    return out

  def image_identity(self, index: int) -> str:
    """What names example `index`'s image: the data's image id where it has one, else a digest of the
    pixels or region features (the shapes world, NLVR2); a pair row's names both of its images. Rows of
    equal identity show the same image."""
    record = self.data_source[index]
    identity = _media_identity(self.media_record(record))
    if self._pairs():
      identity += "|" + _media_identity(self._partner(record))
    return identity

  def media_record(self, record: dict[str, Any]) -> dict[str, Any]:
    """The record that holds `record`'s image or regions: itself, or the image it points at."""
    if self._images is None:
      return record
    image = self._images[int(record["image_index"])]
    if _text(image["image_id"]) != _text(record["image_id"]):
      raise local_files.DataFileError(
          f"{self.config.data.name} in {self.builder.data_dir}: image_index {int(record['image_index'])} "
          f"of question {record.get('question_id')} holds image {_text(image['image_id'])}, not "
          f"{_text(record['image_id'])}; delete the prepared dataset to prepare it again")
    return image

  def media(self, record: dict[str, Any], rng: np.random.Generator | None, train: bool) -> dict[str, Any]:
    """`regions` {features, boxes, mask} padded to num_regions, or `image` [H, W, 3] in [0, 1] (and
    `image_mask` [H, W] with `config.data.image_resize='pad'`; see `images`). `rng` is only drawn from
    when `train` augments."""
    m = self.config.model
    if m.image.input == "regions":
      r = m.image.num_regions
      n = min(len(record["boxes"]), r)  # detectors' regions come by confidence: keep the first r.
      features = np.zeros((r, m.image.feature_dim), np.float32)
      boxes = np.zeros((r, 4), np.float32)
      features[:n] = record["region_features"][:n]
      boxes[:n] = record["boxes"][:n]
      return {"regions": {"features": features, "boxes": boxes, "mask": np.arange(r) < n}}
    d, size = self.config.data, m.image.image_size
    num_ops = d.randaugment_num_ops if train else 0
    mode = d.image_resize
    data = record["image_bytes"] if "image_bytes" in record else np.asarray(record["image"])
    if isinstance(data, np.ndarray) and not num_ops and mode == "square":
      return {"image": data.astype(np.float32) / 255.0}  # the shapes world's own pixels, as stored.
    image = images.open_image(data, size)
    if num_ops:
      image = images.randaugment(image, rng, num_ops, d.randaugment_magnitude)
    if mode == "pad":
      pixels, mask = images.resize_pad(image, size)
      return {"image": pixels.astype(np.float32) / 255.0, "image_mask": mask}
    return {"image": images.resize_square(image, size).astype(np.float32) / 255.0}

  def _caption(self, record: dict[str, Any], index: int, rng: np.random.Generator
               ) -> tuple[str, int, int]:
    """(text, negative kind, caption form): a true caption, or with `itm_negative_rate` a negative.

    The caption is drawn the same way for both labels, and a negative keeps the drawn caption's form
    (shapes world: describe, count, relation, scene; the form is -1 for data without caption kinds), so
    that the form of a caption never tells its label. The negative is the caption's own edit (its hard
    negative: a changed attribute or count, or a swapped relation) or a caption of the same form about
    another scene (random), drawn with `itm_negative_mix`'s weights over the kinds the form allows. When
    the mix weighs none of them (e.g. relation only, on a describe caption), another caption of the scene
    whose edit the mix weighs gives it. Data without hard negatives (real captions) gives a caption of
    another random example.
    """
    captions = [_text(c) for c in record["captions"]]
    c = int(rng.integers(len(captions)))
    caption_kinds = np.asarray(record["caption_kinds"]) if "caption_kinds" in record else None
    form = lambda i: -1 if caption_kinds is None else int(caption_kinds[i])
    if rng.random() >= self.config.data.itm_negative_rate:
      return captions[c], 0, form(c)
    if "hard_negatives" not in record:
      return self._other_caption(index, rng), _RANDOM, form(c)
    kinds = np.asarray(record["hard_negative_kinds"])
    weight = lambda kind: float(self._negative_mix[kind - 1])
    if weight(_RANDOM) + weight(int(kinds[c])) <= 0:
      weighed = [i for i in range(len(captions)) if weight(int(kinds[i])) > 0]
      c = weighed[int(rng.integers(len(weighed)))] if weighed else c
    hard, other = weight(int(kinds[c])), weight(_RANDOM)
    if other <= 0 or (hard > 0 and rng.random() * (other + hard) < hard):
      return _text(record["hard_negatives"][c]), int(kinds[c]), form(c)
    if "random_negatives" in record:
      return _text(record["random_negatives"][c]), _RANDOM, form(c)
    return self._other_caption(index, rng), _RANDOM, form(c)

  def _other_caption(self, index: int, rng: np.random.Generator) -> str:
    """A caption of another example of the split (never this one)."""
    other = int(rng.integers(self.num_examples - 1))
    other_captions = self.data_source[other + (other >= index)]["captions"]
    return _text(other_captions[int(rng.integers(len(other_captions)))])

  def _vqa(self, record: dict[str, Any], rng: np.random.Generator, ex: dict[str, Any],
           step: int | None = None) -> str:
    """The text of a VQA row (a question), filling `vqa_scores` [A], `vqa_question_type` (shapes world)
    and `vqa_answer_type` (VQA v2, index into `ANSWER_TYPES`) in `ex`; -1 where the data has none.

    A shapes-world scene asks one of its questions, uniformly; in the rows of training step `step`
    with `config.data.question_type_weights`, with probability proportional to its type's weight in
    the phase `step` is in (a scene whose questions all weigh 0 asks one of them uniformly).
    Evaluation rows (`step` None) keep the uniform draw."""
    scores = np.zeros((len(self.answer_vocab),), np.float32)
    if "question" in record:  # VQA v2: one question per record, soft scores per answer.
      for answer, score in zip(record["answers"], record["answer_scores"], strict=True):
        if _text(answer) in self._answer_index:
          scores[self._answer_index[_text(answer)]] = score
      ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(-1)
      answer_type = _text(record.get("answer_type", ""))
      ex["vqa_answer_type"] = np.int32(ANSWER_TYPES.index(answer_type) if answer_type in ANSWER_TYPES else -1)
      return _text(record["question"])
    q = self._question_index(record["question_types"], rng, step)
    scores[int(record["answers"][q])] = 1.0
    ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(record["question_types"][q])
    ex["vqa_answer_type"] = np.int32(-1)
    return _text(record["questions"][q])

  def _question_index(self, types: Any, rng: np.random.Generator, step: int | None) -> int:
    weights = None if step is None else self._type_weights[bisect.bisect_right(self._phase_starts, step) - 1]
    p = None if weights is None else weights[np.asarray(types, int)]
    if p is None or p.sum() == 0:
      return int(rng.integers(len(types)))  # the draw every run made before weights existed.
    return int(rng.choice(len(p), p=p / p.sum()))

  def _text_inputs(self, text: str, positive: bool, rng: np.random.Generator) -> dict[str, Any]:
    """`text_ids` and `text_mask` [Lt], with MLM corruption and its targets when `mlm` is on."""
    d = self.config.data
    lt = d.max_text_len
    ids = self.tokenizer.encode(text, max_len=lt)
    text_ids = np.full((lt,), self.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    text_mask = np.arange(lt) < len(ids)
    if "mlm" not in self.objectives:
      return {"text_ids": text_ids, "text_mask": text_mask}
    maskable = text_mask & ~np.isin(text_ids, self._special_ids)
    word_starts = self.tokenizer.word_starts(text_ids) if d.mlm_whole_word else None
    # Every row is corrupted alike, so that a [MASK] never tells the ITM label (masking only matching
    # pairs let a model accept any caption with a [MASK] in it, whatever the image); a false caption
    # would teach the MLM head the wrong words, so only a matching pair's masked words are targets.
    inputs, targets, weights = masking.mask_tokens(
        text_ids, maskable, rng, probability=d.mlm_probability, mask_id=self.tokenizer.mask_id,
        random_ids=self._random_ids, word_starts=word_starts)
    weights = weights * np.float32(positive)
    return {"text_ids": inputs, "text_mask": text_mask, "mlm_targets": targets, "mlm_weights": weights}

  def _mask_regions(self, regions: dict[str, np.ndarray], record: dict[str, Any], positive: bool,
                    rng: np.random.Generator) -> dict[str, Any]:
    """Masked region modelling: zeroes a `mrm_probability` share of the real regions (in place, on every
    row) and returns their targets: `mrm_weights` [R] (1 where masked on a matching pair; 0 on a false
    one), `mrm_targets` [R, F] (the original features) and `mrm_labels` [R] (object labels)."""
    r = len(regions["mask"])
    labels = np.zeros((r,), np.int32)
    n = int(regions["mask"].sum())
    labels[:n] = np.asarray(record["labels"])[:n]
    chosen = regions["mask"] & (rng.random(r) < self.config.data.mrm_probability)
    targets = regions["features"].copy()
    regions["features"][chosen] = 0.0  # on every row, as MLM's masks: a zeroed region tells no label.
    return {"mrm_weights": (chosen & positive).astype(np.float32), "mrm_targets": targets,
            "mrm_labels": labels}
