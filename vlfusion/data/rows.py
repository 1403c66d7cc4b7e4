"""One row of a batch: a caption (with its ITM negative), or the text of a task that brings its own (a VQA
question, a statement about two images, a hypothesis; `Task.own_text`), with the fields of the tasks
trained (MLM corruption, masked regions: `Task.text_targets`, `Task.media_targets`); and the row's image
or regions (decoded, resized or padded, augmented). Every random choice comes from the generator given,
so a row is a pure function of (example, generator, train)."""

from __future__ import annotations

import hashlib
from typing import Any

import ml_collections
import numpy as np

from vlfusion import tasks
from vlfusion.data import images, local_files, scenes
from vlfusion.data.compatibility import active_objectives
from vlfusion.data.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer
from vlfusion.tasks.vqa import ANSWER_TYPES  # noqa: F401 - callers import it from here.


# Host-side strings `example(keep_text=True)` adds to a row (the text, and each task's
# `Task.host_fields`); never sent to devices.
def host_keys() -> tuple[str, ...]:
  """The host-side keys a `keep_text` row may hold, of every registered task."""
  return ("text", *(k for t in tasks.REGISTRY.values() for k in t.host_fields))


HOST_KEYS = host_keys()  # those of the tasks registered at import.
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
    self.random_ids = np.array([i for t, i in tokenizer.vocab.items() if t not in SPECIAL_TOKENS], np.int32)
    self.special_ids = np.array([tokenizer.vocab[t] for t in SPECIAL_TOKENS], np.int32)
    mix = np.asarray(config.data.itm_negative_mix, np.float64)
    self._negative_mix = mix / mix.sum()
    # The tasks trained, in registry order; the one whose rows hold their own text, if any (data
    # compatibility allows one, trained apart from the caption objectives).
    self.tasks = [t for n, t in tasks.REGISTRY.items() if n in self.objectives]
    own = [t for t in self.tasks if t.own_text is not None]
    self.text_task = own[0] if own else None
    self._task_state = {t.name: t.row_state(config, answer_vocab) for t in self.tasks if t.row_state}

  def task_state(self, name: str) -> Any:
    """What task `name` keeps for its rows (`Task.row_state`)."""
    return self._task_state[name]

  def example(self, index: int, rng: np.random.Generator, keep_text: bool = False,
              train: bool = False, step: int = 0) -> dict[str, Any]:
    """One model input: image or regions, a text, and the targets of the enabled objectives.

    The text is a caption or ITM negative (with its MLM corruption), or the text of the task trained
    that brings its own (`Task.own_text`: a question and its `vqa_scores`, a statement about this scene
    and its pair's with `pair_labels`, ...). `train` turns on image augmentation
    (`config.data.randaugment_num_ops`) and, with the training `step`, the question-type weights;
    `keep_text` adds the strings of `HOST_KEYS` (the row's text; a VQA v2 row's question type).
    """
    record = self.data_source[index]
    ex: dict[str, Any] = {"example_mask": np.bool_(True)}
    if self.text_task is not None:
      text, positive = self.text_task.own_text(self, record, rng, ex, step if train else None), False
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
      if self.text_task is not None:
        ex.update({k: value(record) for k, value in self.text_task.host_fields.items()})
    for task in self.tasks:
      if task.media_targets is not None:
        ex.update(task.media_targets(self, ex, media, positive, rng))
    return ex

  def _second_image(self, record: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the row's second image (`Task.second_image` of the task whose text it holds)."""
    second = self.text_task.second_image if self.text_task is not None else None
    return second(self, record) if second else None

  def image_inputs(self, index: int) -> dict[str, Any]:
    """The keys of `IMAGE_KEYS` that an evaluation row of example `index` holds (no augmentation, no
    masked regions): what another row is given when it is shown this example's image."""
    record = self.data_source[index]
    out = self.media(self.media_record(record), None, False)
    partner = self._second_image(record)
    if partner is not None:
      out.update({f"pair_{k}": v for k, v in self.media(partner, None, False).items()})
    return out

  def image_identity(self, index: int) -> str:
    """What names example `index`'s image: the data's image id where it has one, else a digest of the
    pixels or region features (the shapes world, NLVR2); a pair row's names both of its images. Rows of
    equal identity show the same image."""
    record = self.data_source[index]
    identity = _media_identity(self.media_record(record))
    partner = self._second_image(record)
    if partner is not None:
      identity += "|" + _media_identity(partner)
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
    return images.model_pixels(image, size, mode)

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

  def _text_inputs(self, text: str, positive: bool, rng: np.random.Generator) -> dict[str, Any]:
    """`text_ids` and `text_mask` [Lt], with the trained tasks' corruption and targets
    (`Task.text_targets`: MLM)."""
    lt = self.config.data.max_text_len
    ids = self.tokenizer.encode(text, max_len=lt)
    text_ids = np.full((lt,), self.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    out = {"text_ids": text_ids, "text_mask": np.arange(lt) < len(ids)}
    for task in self.tasks:
      if task.text_targets is not None:
        out.update(task.text_targets(self, out["text_ids"], out["text_mask"], positive, rng))
    return out
