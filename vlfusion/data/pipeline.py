"""The input pipeline's entry: the batches of a split, from one dataset or a weighted mixture of several.

A batch is a pure function of the step (see `batch_source` for one dataset, `mixture` for several), so the
pipeline's whole position is the step; the checkpoint records it with what it was computed over, and
`restore_check` warns when a resumed run reads different data.
"""

from __future__ import annotations

import logging
from typing import Any

import ml_collections

from vlfusion.data import batch_source, datasets, mixture, rows

# Names callers import from here; each is defined beside the code it describes.
LOCAL_DATASETS, DATASETS = datasets.LOCAL_DATASETS, datasets.DATASETS
ANSWER_TYPES, HOST_KEYS = rows.ANSWER_TYPES, rows.HOST_KEYS
IMAGE_KEYS, SHUFFLED_IMAGES = rows.IMAGE_KEYS, rows.SHUFFLED_IMAGES
BatchSource, collate = batch_source.BatchSource, batch_source.collate


def make_batch_source(config: ml_collections.ConfigDict, split: str, *, process_index: int = 0,
                      process_count: int = 1, prepare: bool = True) -> BatchSource:
  """The batches of `split`: of `config.data.name`, or for the training split of a non-empty
  `config.data.mixture` a `mixture.MixtureSource`. `prepare=False` only opens prepared data (workers)."""
  if config.data.mixture and split == config.data.train_split:
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

