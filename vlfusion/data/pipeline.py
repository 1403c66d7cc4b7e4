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

from vlfusion.configuration import ConfigError
from vlfusion.data import masking, scenes
from vlfusion.data.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

DATASETS = ("shapes_world",)
_EVAL_STREAM = 1_000_003  # keeps eval examples' random choices apart from any training step's.


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode())


def _load(config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int):
  """(data_source, builder) for `config.data.name`, preparing the dataset on first use."""
  import tensorflow_datasets as tfds

  name = config.data.name
  family = name.split("/")[0]
  if family not in DATASETS:
    raise ConfigError(f"config.data.name={name!r}: unknown dataset; choose from {list(DATASETS)}")
  from vlfusion.data import shapes_world  # noqa: F401  (registers the builder)

  try:
    builder = tfds.builder(name, data_dir=config.data.data_dir)
  except Exception as e:  # tfds raises several types for an unknown config name.
    raise ConfigError(f"config.data.name={name!r}: {e}") from e
  if process_index == 0 and not builder.is_prepared():
    logging.info("Preparing %s in %s (first use).", name, builder.data_dir)
    builder.download_and_prepare(file_format="array_record")
  if process_count > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"prepared {name}")
    builder = tfds.builder(name, data_dir=config.data.data_dir)
  if split not in builder.info.splits:
    raise ConfigError(f"split {split!r} (config.data.train_split / eval_split) is not one of "
                      f"{list(builder.info.splits)} of {name}")
  return builder.as_data_source(split=split), builder


def _check_compatible(config: ml_collections.ConfigDict, builder: Any, tokenizer: WordPieceTokenizer):
  """Errors that name the config field, before anything is compiled."""
  m, name = config.model, config.data.name
  if tokenizer.vocab_size > m.text.vocab_size:
    raise ConfigError(
        f"config.model.text.vocab_size={m.text.vocab_size} is smaller than the vocab of {name} "
        f"({tokenizer.vocab_size} tokens in {tokenizer.vocab_path})")
  bc = builder.builder_config
  if m.image.input == "regions":
    if m.image.feature_dim != scenes.FEATURE_DIM:
      raise ConfigError(f"config.model.image.feature_dim={m.image.feature_dim} but {name} has region "
                        f"features of dimension {scenes.FEATURE_DIM}")
    if m.image.num_regions < bc.max_objects:
      raise ConfigError(f"config.model.image.num_regions={m.image.num_regions} but scenes of {name} "
                        f"have up to {bc.max_objects} objects")
    if m.image.box_dim != 4:
      raise ConfigError(f"config.model.image.box_dim={m.image.box_dim}: {name} has 4-number boxes")
  elif m.image.image_size != bc.image_size:
    raise ConfigError(f"config.model.image.image_size={m.image.image_size} but the images of {name} "
                      f"are {bc.image_size}x{bc.image_size}")


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class BatchSource:
  """This process's rows of each global batch of one split (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, split: str, process_index: int,
               process_count: int):
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
    self.tokenizer = WordPieceTokenizer()
    self.data_source, builder = _load(config, split, process_index, process_count)
    _check_compatible(config, builder, self.tokenizer)
    self.num_examples = len(self.data_source)
    if self.num_examples < self.global_batch_size:
      raise ConfigError(f"config.data.global_batch_size={self.global_batch_size} is larger than the "
                        f"{self.num_examples} examples of {d.name} split {split!r}")
    self._random_ids = np.array(
        [i for t, i in self.tokenizer.vocab.items() if t not in SPECIAL_TOKENS], np.int32)
    self._special_ids = np.array([self.tokenizer.vocab[t] for t in SPECIAL_TOKENS], np.int32)

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
    seed, split = self.config.data.seed, _split_key(self.split)
    examples = [self.example(int(indices[r]), np.random.default_rng([seed, split, int(step), r]))
                for r in rows]
    return collate(examples)

  def eval_batches(self, batch_size: int):
    """The whole split in index order, in global batches of `batch_size` (this process's rows).

    The last batch is padded with copies of example 0 whose `example_mask` is False. The random choices
    of example i depend only on (seed, split, i), so every evaluation sees the same examples.
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
        ex = self.example(index, np.random.default_rng([seed, split, _EVAL_STREAM, index]))
        ex["example_mask"] = np.bool_(real)
        examples.append(ex)
      yield collate(examples)

  def example(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """One model input: image or regions, a caption or ITM negative, and its MLM corruption."""
    record = self.data_source[index]
    d, m = self.config.data, self.config.model
    captions = [_text(c) for c in record["captions"]]
    c = int(rng.integers(len(captions)))
    negative_kind = 0
    text = captions[c]
    if rng.random() < d.itm_negative_rate:
      if rng.random() < 0.5:
        text, negative_kind = _text(record["random_negative"]), scenes.NEGATIVE_KINDS.index("random")
      else:
        text = _text(record["hard_negatives"][c])
        negative_kind = int(record["hard_negative_kinds"][c])
    lt = d.max_text_len
    ids = self.tokenizer.encode(text, max_len=lt)
    text_ids = np.full((lt,), self.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    text_mask = np.arange(lt) < len(ids)
    maskable = text_mask & ~np.isin(text_ids, self._special_ids)
    if negative_kind:  # a false caption teaches the MLM head the wrong words: no MLM loss on it.
      maskable[:] = False
    inputs, targets, weights = masking.mask_tokens(
        text_ids, maskable, rng, probability=d.mlm_probability, mask_id=self.tokenizer.mask_id,
        random_ids=self._random_ids)
    ex: dict[str, Any] = {
        "text_ids": inputs, "text_mask": text_mask, "mlm_targets": targets, "mlm_weights": weights,
        "itm_labels": np.int32(negative_kind == 0), "itm_negative_kind": np.int32(negative_kind),
        "example_mask": np.bool_(True),
    }
    if m.image.input == "regions":
      r = m.image.num_regions
      n = len(record["boxes"])
      features = np.zeros((r, m.image.feature_dim), np.float32)
      boxes = np.zeros((r, 4), np.float32)
      features[:n] = record["region_features"]
      boxes[:n] = record["boxes"]
      ex["regions"] = {"features": features, "boxes": boxes, "mask": np.arange(r) < n}
    else:
      ex["image"] = np.asarray(record["image"], np.float32) / 255.0
    return ex


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
  """Stacks a list of example dicts (nested for `regions`) into a batch."""
  first = examples[0]
  return {k: collate([e[k] for e in examples]) if isinstance(v, dict) else np.stack([e[k] for e in examples])
          for k, v in first.items()}


def make_batch_source(config: ml_collections.ConfigDict, split: str, *, process_index: int = 0,
                      process_count: int = 1) -> BatchSource:
  return BatchSource(config, split, process_index, process_count)


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
