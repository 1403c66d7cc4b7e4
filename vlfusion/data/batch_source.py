"""One dataset's batches: random access into a tfds ArrayRecord dataset, each batch a pure function of
the step.

The batch of step s is built from example indices drawn from a permutation keyed by (seed, split, epoch)
(the seed is `configuration.data_seed`: config.data.seed, or config.train.seed when that is unset),
and every random choice inside an example (which caption, whether it is an ITM negative, which tokens
are masked) comes from a generator keyed by (seed, split, step, row). The pipeline's whole position is
therefore the step: the checkpoint records it (with what it was computed over) and a resumed run sees
exactly the batches an uninterrupted run would. Each process builds only its own rows of the global
batch; the rows do not depend on how many processes there are.

This module is the sampling: which examples and generators make step s, this process's rows, evaluation
order, the saved position. Opening a dataset is `datasets`, checking it against the config is
`compatibility`, one row of each task is `rows`, a weighted mixture of several `BatchSource`s is
`mixture`, and `pipeline.make_batch_source` picks between them.
"""

from __future__ import annotations

import zlib
from typing import Any

import ml_collections
import numpy as np

from vlfusion.configuration import data_seed, eval_data_seed
from vlfusion.data import compatibility, datasets, rows
from vlfusion.errors import ConfigError

_EVAL_STREAM = 1_000_003  # keeps eval examples' random choices apart from any training step's.


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode())


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
    self.tokenizer = datasets.make_tokenizer(config)
    self.data_source, self.builder = datasets.open_dataset(config, split, process_index, process_count,
                                                           prepare)
    images_source = datasets.images_source(self.builder, split)
    compatibility.check_compatible(config, self.builder, self.tokenizer)
    self.objectives = compatibility.active_objectives(config)
    self.answer_vocab = datasets.answer_vocab(config, self.builder)
    compatibility.check_heads(config, self.builder, self.answer_vocab)
    self.num_examples = len(self.data_source)
    if self.num_examples < self.global_batch_size:
      raise ConfigError(f"config.data.global_batch_size={self.global_batch_size} is larger than the "
                        f"{self.num_examples} examples of {d.name} split {split!r}")
    self.rows = rows.RowBuilder(config, self.builder, self.data_source, images_source, self.tokenizer,
                                self.answer_vocab)

  def example(self, index: int, rng: np.random.Generator, keep_text: bool = False,
              train: bool = False, step: int = 0) -> dict[str, Any]:
    """One model input (see `rows.RowBuilder.example`)."""
    return self.rows.example(index, rng, keep_text=keep_text, train=train, step=step)

  # -- positions -------------------------------------------------------------------------------------

  def global_indices(self, step: int) -> np.ndarray:
    """Example indices of the whole global batch of `step` (each epoch a fresh permutation)."""
    per_epoch = self.num_examples // self.global_batch_size
    epoch, position = divmod(int(step), per_epoch)
    order = np.random.default_rng(
        [data_seed(self.config), _split_key(self.split), epoch]).permutation(self.num_examples)
    return order[position * self.global_batch_size:(position + 1) * self.global_batch_size]

  def _local_rows(self, size: int) -> slice:
    local = size // self.process_count
    return slice(self.process_index * local, (self.process_index + 1) * local)

  def state(self, step: int) -> dict[str, Any]:
    """The position after `step` steps, as saved in checkpoints, with what it was computed over."""
    d = self.config.data
    return {"step": int(step), "dataset": d.name, "split": self.split, "seed": data_seed(self.config),
            "global_batch_size": int(self.global_batch_size), "num_examples": int(self.num_examples)}

  # -- batches ---------------------------------------------------------------------------------------

  def get_batch(self, step: int) -> dict[str, Any]:
    """This process's rows of the training batch of `step`."""
    indices = self.global_indices(step)
    local = range(self.global_batch_size)[self._local_rows(self.global_batch_size)]
    examples = [self.example(int(indices[r]), self.row_rng(step, r), train=True, step=step)
                for r in local]
    return collate(examples)

  def row_rng(self, step: int, row: int) -> np.random.Generator:
    """The generator of every random choice in global row `row` of training step `step`."""
    return np.random.default_rng([data_seed(self.config), _split_key(self.split), int(step), row])

  def eval_example(self, index: int, keep_text: bool = False) -> dict[str, Any]:
    """Example `index` as every evaluation sees it: its random choices keyed by (seed, split, index), with
    the seed of `configuration.eval_data_seed` (the same for every train.seed)."""
    rng = np.random.default_rng([eval_data_seed(self.config), _split_key(self.split), _EVAL_STREAM, index])
    return self.example(index, rng, keep_text=keep_text)

  def image_identities(self) -> list[str]:
    """What names each example's image (`rows.RowBuilder.image_identity`), in index order: one read of
    every record of the split."""
    return [self.rows.image_identity(i) for i in range(self.num_examples)]

  def eval_batches(self, batch_size: int, keep_text: bool = False, image_donors: np.ndarray | None = None):
    """The whole split in index order, in global batches of `batch_size` (this process's rows).

    The last batch is padded with copies of example 0 whose `example_mask` is False. The random choices
    of example i depend only on (seed, split, i), so every evaluation sees the same examples. With
    `keep_text`, each batch also holds the strings of `rows.HOST_KEYS` (the row's text; a VQA v2 row's
    question type) for host-side metrics; pop them before the batch goes to the devices. With
    `image_donors` (an example index per example), row i also holds under `rows.SHUFFLED_IMAGES` the image
    keys of example `image_donors[i]` (`rows.RowBuilder.image_inputs`), read wherever it lies in the split.
    """
    if batch_size % self.process_count:
      raise ConfigError(f"config.eval.batch_size={batch_size} is not divisible by the number of "
                        f"processes ({self.process_count})")
    local = self._local_rows(batch_size)
    for start in range(0, self.num_examples, batch_size):
      indices = np.arange(start, start + batch_size)
      examples = []
      for i in indices[local]:
        real = i < self.num_examples
        index = int(i) if real else 0
        ex = self.eval_example(index, keep_text=keep_text)
        ex["example_mask"] = np.bool_(real)
        if image_donors is not None:
          ex[rows.SHUFFLED_IMAGES] = self.rows.image_inputs(int(image_donors[index]))
        examples.append(ex)
      yield collate(examples)


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
  """Stacks a list of example dicts (nested for `regions`) into a batch."""
  first = examples[0]
  return {k: collate([e[k] for e in examples]) if isinstance(v, dict) else np.stack([e[k] for e in examples])
          for k, v in first.items()}
