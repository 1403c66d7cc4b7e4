"""A weighted mixture of datasets for training (`config.data.mixture`), as LXMERT and UNITER pretrain on
several corpora at once.

`config.data.mixture` maps a label to a dict of `config.data` fields for one dataset plus its `weight`,
e.g. {"coco": {"name": "coco_captions/images", "manual_dir": ..., "data_dir": ..., "weight": 0.6},
"web": {"name": "image_text_jsonl/images", "manual_dir": ..., "data_dir": ..., "weight": 0.4}}. Each
component is a `BatchSource` over its own dataset with every other field (vocab, objectives, model) shared.

Row r of step s is a pure function of (seed, s, r), as in a single dataset: its dataset is drawn with the
weights from a generator keyed by (seed, s, r), and its example is position g mod n of the dataset's own
permutation of epoch g // n (keyed by seed, dataset and epoch), where g = s * global_batch_size + r is the
row's global number and n the dataset's size. Resuming needs only the step; the row's own random choices
(negatives, masking, augmentation) come from the same generator as in a single dataset.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import ml_collections
import numpy as np

from vlfusion.configuration import ConfigError, data_seed
from vlfusion.data.batch_source import BatchSource, collate

_MIXTURE_STREAM = 2_000_003  # keeps the dataset draw apart from any row's own random choices.


Components = dict[str, tuple[float, ml_collections.ConfigDict]]


def component_configs(config: ml_collections.ConfigDict) -> Components:
  """{label: (weight, the config of that dataset alone)}, labels sorted."""
  out = {}
  for label in sorted(config.data.mixture):
    fields = dict(config.data.mixture[label])
    if "name" not in fields:
      raise ConfigError(f"config.data.mixture.{label} names no dataset (its 'name' field)")
    weight = float(fields.pop("weight", 1.0))
    if not weight > 0:
      raise ConfigError(f"config.data.mixture.{label}.weight={weight} must be > 0")
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.mixture = {}
    for key, value in fields.items():
      if key not in c.data:
        raise ConfigError(f"config.data.mixture.{label}.{key}: config.data has no field {key!r}")
      c.data[key] = value
    out[label] = (weight, c)
  return out


class MixtureSource:
  """This process's rows of each global training batch of a weighted mixture (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int,
               prepare: bool = True):
    self.config = config
    self.split = split
    self.process_index = process_index
    self.process_count = process_count
    self.labels, weights, self.sources = [], [], []
    for label, (weight, c) in component_configs(config).items():
      self.labels.append(label)
      weights.append(weight)
      self.sources.append(BatchSource(c, c.data.train_split, process_index, process_count, prepare))
    self.weights = np.asarray(weights, np.float64) / sum(weights)
    first = self.sources[0]
    self.global_batch_size, self.local_batch_size = first.global_batch_size, first.local_batch_size
    self.num_examples = sum(s.num_examples for s in self.sources)
    self.tokenizer = first.tokenizer
    self.answer_vocab = first.answer_vocab

  def components(self, step: int) -> np.ndarray:
    """The dataset (index into `labels`) of each row of the global batch of `step`."""
    seed = data_seed(self.config)
    return np.array([int(np.random.default_rng([seed, _MIXTURE_STREAM, int(step), r]).choice(
        len(self.weights), p=self.weights)) for r in range(self.global_batch_size)])

  @functools.lru_cache(maxsize=8)  # noqa: B019 - a few permutations per source, for its lifetime.
  def _order(self, k: int, epoch: int) -> np.ndarray:
    key = zlib.crc32(self.labels[k].encode())
    return np.random.default_rng([data_seed(self.config), key, epoch]).permutation(
        self.sources[k].num_examples)

  def get_batch(self, step: int) -> dict[str, Any]:
    components = self.components(step)
    local = self.global_batch_size // self.process_count
    examples = []
    for r in range(self.process_index * local, (self.process_index + 1) * local):
      k, source = int(components[r]), self.sources[int(components[r])]
      g = int(step) * self.global_batch_size + r
      epoch, position = divmod(g, source.num_examples)
      index = int(self._order(k, epoch)[position])
      examples.append(source.example(index, source.row_rng(step, r), train=True, step=step))
    try:
      return collate(examples)
    except (KeyError, ValueError) as e:
      raise ConfigError(f"config.data.mixture: the datasets {self.labels} give rows of different "
                        f"shapes or keys ({e}); they must share image input and objectives") from e

  def state(self, step: int) -> dict[str, Any]:
    """The position after `step` steps, with what it was computed over."""
    mixture = ",".join(f"{label}={s.config.data.name}:{w:.6g}"
                       for label, s, w in zip(self.labels, self.sources, self.weights, strict=True))
    return {"step": int(step), "dataset": f"mixture({mixture})", "split": self.split,
            "seed": data_seed(self.config),
            "global_batch_size": int(self.global_batch_size), "num_examples": int(self.num_examples)}

  def eval_batches(self, batch_size: int):
    raise ConfigError("config.data.mixture is for training; evaluation reads config.data.name")
