"""The input pipeline: random access into a tfds ArrayRecord dataset, batches as pure functions of the step.

The batch of step s is built from example indices drawn from a permutation keyed by (seed, split, epoch),
and every random choice inside an example (which caption, whether it is an ITM negative, which tokens
are masked) comes from a generator keyed by (seed, split, step, row). The pipeline's whole position is
therefore the step: the checkpoint records it (with what it was computed over) and a resumed run sees
exactly the batches an uninterrupted run would. Each process builds only its own rows of the global
batch; the rows do not depend on how many processes there are.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from vlfusion.configuration import ConfigError
from vlfusion.data import images, local_files, masking, questions, scenes
from vlfusion.data.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

LOCAL_DATASETS = ("coco_captions", "vqa_v2", "image_text_jsonl", "nlvr2")
DATASETS = ("shapes_world", *LOCAL_DATASETS)
_EVAL_STREAM = 1_000_003  # keeps eval examples' random choices apart from any training step's.
_OWN_TEXT = ("vqa", "pairs")  # objectives whose text is a question or a statement, not a caption.
# VQA v2 answer types, as `vqa_answer_type` indexes them (-1: none, e.g. the shapes world).
ANSWER_TYPES = ("yes/no", "number", "other")
# Host-side strings `eval_batches(keep_text=True)` adds to a batch; never sent to devices.
HOST_KEYS = ("text", "vqa_question_type_name")


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode())


def _sync(name: str, process_count: int) -> None:
  if process_count > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"prepared {name}")


def _load(config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int,
          prepare: bool = True):
  """(data_source, builder) for `config.data.name`, preparing the dataset on first use (unless
  `prepare` is False: a worker process opens what its main process prepared and checked)."""
  import tensorflow_datasets as tfds

  name = config.data.name
  family = name.split("/")[0]
  if family not in DATASETS:
    raise ConfigError(f"config.data.name={name!r}: unknown dataset; choose from {list(DATASETS)}")
  if family in LOCAL_DATASETS:
    from vlfusion.data import local_datasets

    make = lambda: local_datasets.make_builder(name, config.data.data_dir)
    if family == "nlvr2":
      from vlfusion.data import nlvr2

      make = lambda: nlvr2.make_builder(name, config.data.data_dir)
    write = lambda b: local_datasets.prepare(b, _manual_dir(config))
  else:
    from vlfusion.data import shapes_world  # noqa: F401  (registers the builder)

    make = lambda: tfds.builder(name, data_dir=config.data.data_dir)
    write = lambda b: b.download_and_prepare(file_format="array_record")
  try:
    builder = make()
  except Exception as e:  # tfds raises several types for an unknown config name.
    raise ConfigError(f"config.data.name={name!r}: {e}") from e
  if not prepare:
    return builder.as_data_source(split=split), builder
  if process_index == 0 and not builder.is_prepared():
    logging.info("Preparing %s in %s (first use).", name, builder.data_dir)
    write(builder)
  if process_count > 1:
    _sync(name, process_count)
    builder = make()
  if family in LOCAL_DATASETS and config.data.get("manual_dir", ""):
    from vlfusion.data import local_datasets

    changes = local_datasets.input_changes(builder, config.data.manual_dir)
    if changes:
      raise ConfigError(f"{'; '.join(changes)}. A prepared dataset is never read for other files: set "
                        f"config.data.data_dir to another folder, or delete {builder.data_dir} to prepare "
                        "it again from config.data.manual_dir")
  if split not in builder.info.splits:
    raise ConfigError(f"split {split!r} (config.data.train_split / eval_split) is not one of "
                      f"{list(builder.info.splits)} of {name}")
  return builder.as_data_source(split=split), builder


def _manual_dir(config: ml_collections.ConfigDict) -> str:
  manual_dir = config.data.get("manual_dir", "")
  if not manual_dir:
    raise ConfigError(f"config.data.manual_dir is empty: {config.data.name} is read from files on disk; "
                      "pass --config.data.manual_dir=DIR (docs/data.md lists the files it holds)")
  return manual_dir


def _tokenizer(config: ml_collections.ConfigDict) -> WordPieceTokenizer:
  d = config.data
  vocab_path = d.get("vocab_path", "")
  if d.name.split("/")[0] in LOCAL_DATASETS and not vocab_path:
    raise ConfigError(f"config.data.vocab_path is empty: {d.name} needs a BERT vocab.txt (e.g. the "
                      "uncased 30522-token one); pass --config.data.vocab_path=/path/to/vocab.txt")
  if vocab_path and not epath.Path(vocab_path).is_file():
    raise ConfigError(f"config.data.vocab_path={vocab_path!r} is not a file")
  return WordPieceTokenizer(vocab_path) if vocab_path else WordPieceTokenizer()


def _active(config: ml_collections.ConfigDict) -> set[str]:
  return {n for n, w in config.objectives.items() if w > 0}


def _check_compatible(config: ml_collections.ConfigDict, builder: Any, tokenizer: WordPieceTokenizer):
  """Errors that name the config field, before anything is compiled."""
  m, name = config.model, config.data.name
  if tokenizer.vocab_size > m.text.vocab_size:
    raise ConfigError(
        f"config.model.text.vocab_size={m.text.vocab_size} is smaller than the vocab of {name} "
        f"({tokenizer.vocab_size} tokens in {tokenizer.vocab_path})")
  active = _active(config)
  task = active & set(_OWN_TEXT)
  if task and (len(task) > 1 or active & {"mlm", "itm", "itc"}):
    raise ConfigError(f"config.objectives: {sorted(active)} cannot share batches; vqa and pairs each "
                      "put their own text (question, statement) in a row, so train them apart from "
                      "mlm/itm/itc and from each other")
  features = builder.info.features
  for objective, key in (("vqa", "answers"), ("pairs", "pair_statement")):
    if objective in active and key not in features:
      raise ConfigError(f"config.objectives.{objective}={config.objectives[objective]} but {name} has "
                        f"no {objective} data")
  bc = builder.builder_config
  if m.image.input == "regions":
    if "region_features" not in features:
      raise ConfigError(f"config.model.image.input='regions' but {name} has images, not region "
                        f"features (use its /regions config)")
    feature_dim = features["region_features"].shape[-1]
    if m.image.feature_dim != feature_dim:
      raise ConfigError(f"config.model.image.feature_dim={m.image.feature_dim} but {name} has region "
                        f"features of dimension {feature_dim}")
    if hasattr(bc, "max_objects") and m.image.num_regions < bc.max_objects:
      raise ConfigError(f"config.model.image.num_regions={m.image.num_regions} but scenes of {name} "
                        f"have up to {bc.max_objects} objects")
    if m.image.box_dim != 4:
      raise ConfigError(f"config.model.image.box_dim={m.image.box_dim}: {name} has 4-number boxes")
  elif "image_bytes" not in features and "image" not in features:
    raise ConfigError(f"config.model.image.input={m.image.input!r} but {name} has region features, "
                      f"not images (use its /images config)")
  elif "image" in features and m.image.image_size != bc.image_size:
    raise ConfigError(f"config.model.image.image_size={m.image.image_size} but the images of {name} "
                      f"are {bc.image_size}x{bc.image_size}")


def _check_heads(config: ml_collections.ConfigDict, builder: Any, answer_vocab: list[str]) -> None:
  """Head sizes that must equal the data's: the VQA answer vocabulary, the object labels."""
  m, name, active = config.model, config.data.name, _active(config)
  if "vqa" in active and m.vqa.num_answers != len(answer_vocab):
    raise ConfigError(f"config.model.vqa.num_answers={m.vqa.num_answers} but {name} has "
                      f"{len(answer_vocab)} answers in its vocabulary")
  num_labels = (builder.info.metadata or {}).get("num_labels")
  if "mrm" in active and m.mrm.num_labels > 0:
    if num_labels is None:
      raise ConfigError(f"config.model.mrm.num_labels={m.mrm.num_labels} but {name} has no object "
                        "labels; set it to 0 (feature regression only)")
    if m.mrm.num_labels < num_labels:
      raise ConfigError(f"config.model.mrm.num_labels={m.mrm.num_labels} but {name} has "
                        f"{num_labels} object labels")


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _answer_vocab(config: ml_collections.ConfigDict, builder: Any) -> list[str]:
  """The closed answer vocabulary the `vqa_scores` columns index."""
  metadata = builder.info.metadata or {}
  if "answer_counts" in metadata:  # VQA v2: answers given often enough in train.
    least = config.data.get("vqa_min_answer_count", 9)
    return [a for a, n in metadata["answer_counts"].items() if n >= least]
  return list(questions.ANSWERS)


class BatchSource:
  """This process's rows of each global batch of one split (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, split: str, process_index: int,
               process_count: int, prepare: bool = True):
    d = config.data
    if d.global_batch_size % process_count:
      raise ConfigError(f"config.data.global_batch_size={d.global_batch_size} is not divisible by "
                        f"the number of processes ({process_count})")
    self.config = config
    self.split = split
    self.process_index = process_index
    self.process_count = process_count
    self.global_batch_size = d.global_batch_size
    self.local_batch_size = d.global_batch_size // process_count
    self.tokenizer = _tokenizer(config)
    self.data_source, self.builder = _load(config, split, process_index, process_count, prepare)
    # VQA v2 stores each image once, in `<split>_images`; its question records point at them.
    self._images = (self.builder.as_data_source(split=f"{split}_images")
                    if "image_index" in self.builder.info.features else None)
    _check_compatible(config, self.builder, self.tokenizer)
    self.objectives = _active(config)
    self.answer_vocab = _answer_vocab(config, self.builder)
    self._answer_index = {a: i for i, a in enumerate(self.answer_vocab)}
    _check_heads(config, self.builder, self.answer_vocab)
    self.num_examples = len(self.data_source)
    if self.num_examples < self.global_batch_size:
      raise ConfigError(f"config.data.global_batch_size={self.global_batch_size} is larger than the "
                        f"{self.num_examples} examples of {d.name} split {split!r}")
    self._random_ids = np.array(
        [i for t, i in self.tokenizer.vocab.items() if t not in SPECIAL_TOKENS], np.int32)
    self._special_ids = np.array([self.tokenizer.vocab[t] for t in SPECIAL_TOKENS], np.int32)
    mix = np.asarray(d.get("itm_negative_mix", (0.5, 0.25, 0.25)), np.float64)
    self._negative_mix = mix / mix.sum()

  # -- positions -------------------------------------------------------------------------------------

  def global_indices(self, step: int) -> np.ndarray:
    """Example indices of the whole global batch of `step` (each epoch a fresh permutation)."""
    per_epoch = self.num_examples // self.global_batch_size
    epoch, position = divmod(int(step), per_epoch)
    order = np.random.default_rng(
        [self.config.data.seed, _split_key(self.split), epoch]).permutation(self.num_examples)
    return order[position * self.global_batch_size:(position + 1) * self.global_batch_size]

  def _local_rows(self, size: int) -> slice:
    local = size // self.process_count
    return slice(self.process_index * local, (self.process_index + 1) * local)

  def state(self, step: int) -> dict[str, Any]:
    """The position after `step` steps, as saved in checkpoints, with what it was computed over."""
    d = self.config.data
    return {"step": int(step), "dataset": d.name, "split": self.split, "seed": int(d.seed),
            "global_batch_size": int(self.global_batch_size), "num_examples": int(self.num_examples)}

  # -- batches ---------------------------------------------------------------------------------------

  def get_batch(self, step: int) -> dict[str, Any]:
    """This process's rows of the training batch of `step`."""
    indices = self.global_indices(step)
    rows = range(self.global_batch_size)[self._local_rows(self.global_batch_size)]
    examples = [self.example(int(indices[r]), self.row_rng(step, r), train=True) for r in rows]
    return collate(examples)

  def row_rng(self, step: int, row: int) -> np.random.Generator:
    """The generator of every random choice in global row `row` of training step `step`."""
    return np.random.default_rng([self.config.data.seed, _split_key(self.split), int(step), row])

  def eval_batches(self, batch_size: int, keep_text: bool = False):
    """The whole split in index order, in global batches of `batch_size` (this process's rows).

    The last batch is padded with copies of example 0 whose `example_mask` is False. The random choices
    of example i depend only on (seed, split, i), so every evaluation sees the same examples. With
    `keep_text`, each batch also holds the strings of `HOST_KEYS` (the row's text; a VQA v2 row's
    question type) for host-side metrics; pop them before the batch goes to the devices.
    """
    if batch_size % self.process_count:
      raise ConfigError(f"config.eval.batch_size={batch_size} is not divisible by the number of "
                        f"processes ({self.process_count})")
    seed, split = self.config.data.seed, _split_key(self.split)
    rows = self._local_rows(batch_size)
    for start in range(0, self.num_examples, batch_size):
      indices = np.arange(start, start + batch_size)
      examples = []
      for i in indices[rows]:
        real = i < self.num_examples
        index = int(i) if real else 0
        ex = self.example(index, np.random.default_rng([seed, split, _EVAL_STREAM, index]),
                          keep_text=keep_text)
        ex["example_mask"] = np.bool_(real)
        examples.append(ex)
      yield collate(examples)

  # -- one example -----------------------------------------------------------------------------------

  def example(self, index: int, rng: np.random.Generator, keep_text: bool = False,
              train: bool = False) -> dict[str, Any]:
    """One model input: image or regions, a text, and the targets of the enabled objectives.

    The text is a caption or ITM negative (with its MLM corruption), or with `vqa` a question and its
    `vqa_scores`, or with `pairs` a statement about this scene and its pair's (`pair_labels`). `train`
    turns on image augmentation (`config.data.randaugment_num_ops`).
    """
    record = self.data_source[index]
    ex: dict[str, Any] = {"example_mask": np.bool_(True)}
    if "vqa" in self.objectives:
      text, positive = self._vqa(record, rng, ex), False
    elif "pairs" in self.objectives:
      text, positive = _text(record["pair_statement"]), False
      ex["pair_labels"] = np.int32(record["pair_label"])
      partner = ({"image_bytes": record["pair_image_bytes"]} if "pair_image_bytes" in record  # NLVR2
                 else self.data_source[int(record["pair_index"])])
      pair = self._media(partner, rng, train)
      ex.update({f"pair_{k}": v for k, v in pair.items()})
    else:
      text, kind = self._caption(record, index, rng)
      positive = kind == 0
      ex["itm_labels"], ex["itm_negative_kind"] = np.int32(positive), np.int32(kind)
    ex.update(self._text_inputs(text, positive, rng))
    media = self._media_record(record)
    ex.update(self._media(media, rng, train))
    if keep_text:
      ex["text"] = text
      if "vqa" in self.objectives:
        ex["vqa_question_type_name"] = _text(record.get("question_type", ""))
    if "mrm" in self.objectives and "regions" in ex:
      ex.update(self._mask_regions(ex["regions"], media, positive, rng))
    return ex

  def _media_record(self, record: dict[str, Any]) -> dict[str, Any]:
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

  def _caption(self, record: dict[str, Any], index: int, rng: np.random.Generator) -> tuple[str, int]:
    """(text, negative kind): a true caption, or with `itm_negative_rate` a negative of a kind drawn
    from `itm_negative_mix`. A scene without a negative of the drawn kind gives another hard one, and
    data without hard negatives (real captions) gives a caption of another random example."""
    captions = [_text(c) for c in record["captions"]]
    c = int(rng.integers(len(captions)))
    if rng.random() >= self.config.data.itm_negative_rate:
      return captions[c], 0
    kind = scenes.NEGATIVE_KINDS[1 + int(rng.choice(3, p=self._negative_mix))]
    if kind != "random" and "hard_negatives" in record:
      kinds = np.asarray(record["hard_negative_kinds"])
      candidates = np.flatnonzero(kinds == scenes.NEGATIVE_KINDS.index(kind))
      if not len(candidates):
        candidates = np.arange(len(kinds))
      h = int(candidates[int(rng.integers(len(candidates)))])
      return _text(record["hard_negatives"][h]), int(kinds[h])
    if "random_negative" in record:
      return _text(record["random_negative"]), scenes.NEGATIVE_KINDS.index("random")
    # A caption of another example (never this one).
    other = int(rng.integers(self.num_examples - 1))
    other_captions = self.data_source[other + (other >= index)]["captions"]
    random_kind = scenes.NEGATIVE_KINDS.index("random")
    return _text(other_captions[int(rng.integers(len(other_captions)))]), random_kind

  def _vqa(self, record: dict[str, Any], rng: np.random.Generator, ex: dict[str, Any]) -> str:
    """The text of a VQA row (a question), filling `vqa_scores` [A], `vqa_question_type` (shapes world)
    and `vqa_answer_type` (VQA v2, index into `ANSWER_TYPES`) in `ex`; -1 where the data has none."""
    scores = np.zeros((len(self.answer_vocab),), np.float32)
    if "question" in record:  # VQA v2: one question per record, soft scores per answer.
      for answer, score in zip(record["answers"], record["answer_scores"], strict=True):
        if _text(answer) in self._answer_index:
          scores[self._answer_index[_text(answer)]] = score
      ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(-1)
      answer_type = _text(record.get("answer_type", ""))
      ex["vqa_answer_type"] = np.int32(ANSWER_TYPES.index(answer_type) if answer_type in ANSWER_TYPES else -1)
      return _text(record["question"])
    q = int(rng.integers(len(record["questions"])))
    scores[int(record["answers"][q])] = 1.0
    ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(record["question_types"][q])
    ex["vqa_answer_type"] = np.int32(-1)
    return _text(record["questions"][q])

  def _text_inputs(self, text: str, positive: bool, rng: np.random.Generator) -> dict[str, Any]:
    d = self.config.data
    lt = d.max_text_len
    ids = self.tokenizer.encode(text, max_len=lt)
    text_ids = np.full((lt,), self.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    text_mask = np.arange(lt) < len(ids)
    if "mlm" not in self.objectives:
      return {"text_ids": text_ids, "text_mask": text_mask}
    maskable = text_mask & ~np.isin(text_ids, self._special_ids)
    if not positive:  # a false caption teaches the MLM head the wrong words: no MLM loss on it.
      maskable[:] = False
    word_starts = self.tokenizer.word_starts(text_ids) if d.get("mlm_whole_word", False) else None
    inputs, targets, weights = masking.mask_tokens(
        text_ids, maskable, rng, probability=d.mlm_probability, mask_id=self.tokenizer.mask_id,
        random_ids=self._random_ids, word_starts=word_starts)
    return {"text_ids": inputs, "text_mask": text_mask, "mlm_targets": targets, "mlm_weights": weights}

  def _media(self, record: dict[str, Any], rng: np.random.Generator, train: bool) -> dict[str, Any]:
    """`regions` {features, boxes, mask} padded to num_regions, or `image` [H, W, 3] in [0, 1] (and
    `image_mask` [H, W] with `config.data.image_resize='pad'`; see `images`)."""
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
    num_ops = d.get("randaugment_num_ops", 0) if train else 0
    mode = d.get("image_resize", "square")
    data = record["image_bytes"] if "image_bytes" in record else np.asarray(record["image"])
    if isinstance(data, np.ndarray) and not num_ops and mode == "square":
      return {"image": data.astype(np.float32) / 255.0}  # the shapes world's own pixels, as stored.
    image = images.open_image(data, size)
    if num_ops:
      image = images.randaugment(image, rng, num_ops, d.get("randaugment_magnitude", 9))
    if mode == "pad":
      pixels, mask = images.resize_pad(image, size)
      return {"image": pixels.astype(np.float32) / 255.0, "image_mask": mask}
    return {"image": images.resize_square(image, size).astype(np.float32) / 255.0}

  def _mask_regions(self, regions: dict[str, np.ndarray], record: dict[str, Any], positive: bool,
                    rng: np.random.Generator) -> dict[str, Any]:
    """Masked region modelling: zeroes a `mrm_probability` share of the real regions of a matching
    pair (in place) and returns their targets: `mrm_weights` [R] (1 where masked), `mrm_targets`
    [R, F] (the original features) and `mrm_labels` [R] (object labels)."""
    r = len(regions["mask"])
    labels = np.zeros((r,), np.int32)
    n = int(regions["mask"].sum())
    labels[:n] = np.asarray(record["labels"])[:n]
    chosen = regions["mask"] & (rng.random(r) < self.config.data.mrm_probability) & positive
    targets = regions["features"].copy()
    regions["features"][chosen] = 0.0
    return {"mrm_weights": chosen.astype(np.float32), "mrm_targets": targets, "mrm_labels": labels}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
  """Stacks a list of example dicts (nested for `regions`) into a batch."""
  first = examples[0]
  return {k: collate([e[k] for e in examples]) if isinstance(v, dict) else np.stack([e[k] for e in examples])
          for k, v in first.items()}


def make_batch_source(config: ml_collections.ConfigDict, split: str, *, process_index: int = 0,
                      process_count: int = 1, prepare: bool = True) -> BatchSource:
  """The batches of `split`: of `config.data.name`, or for the training split of a non-empty
  `config.data.mixture` a `mixture.MixtureSource`. `prepare=False` only opens prepared data (workers)."""
  if config.data.get("mixture") and split == config.data.train_split:
    from vlfusion.data import mixture

    return mixture.MixtureSource(config, split, process_index, process_count, prepare)
  return BatchSource(config, split, process_index, process_count, prepare)


def restore_check(source: BatchSource, state: dict[str, Any] | None) -> None:
  """Warns when a checkpoint's data position was computed over different data than `source` reads."""
  if not state:
    return
  now = source.state(int(state.get("step", 0)))
  for key in ("dataset", "split", "seed", "global_batch_size", "num_examples"):
    if key in state and state[key] != now[key]:
      logging.warning("The checkpoint's data position was saved with %s=%r, this run has %r: the "
                      "batches after resume differ from those of an uninterrupted run.",
                      key, state[key], now[key])


def resolve_num_answers(config: ml_collections.ConfigDict) -> None:
  """Sets `config.model.vqa.num_answers` to the size of the data's answer vocabulary when it is 0.

  Runs before the model is built (`Setup`), so the VQA head fits the data and the resolved size is what
  `workdir/config.json` records. Does nothing without the 'vqa' head or with a size already set.
  """
  m = config.model
  if "vqa" not in m.heads or m.vqa.num_answers:
    return
  import jax

  _, builder = _load(config, config.data.train_split, jax.process_index(), jax.process_count())
  m.vqa.num_answers = len(_answer_vocab(config, builder))
  logging.info("config.model.vqa.num_answers=0: set to %d, the answer vocabulary of %s.",
               m.vqa.num_answers, config.data.name)
