"""Opening the dataset of a config: the tfds builder (prepared on first use, checked against the
`manual_dir` it was prepared from), its random-access data sources, the tokenizer and the VQA answer
vocabulary."""

from __future__ import annotations

import logging
from typing import Any

import ml_collections
from etils import epath

from vlfusion.data import questions
from vlfusion.data.tokenizer import WordPieceTokenizer
from vlfusion.errors import ConfigError

LOCAL_DATASETS = ("coco_captions", "vqa_v2", "image_text_jsonl", "image_text_shards", "nlvr2", "snli_ve")
GENERATED_DATASETS = ("shapes_world", "shapes_world_ve")
DATASETS = (*GENERATED_DATASETS, *LOCAL_DATASETS)


def _sync(name: str, process_count: int) -> None:
  if process_count > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"prepared {name}")


def open_dataset(config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int,
                 prepare: bool = True):
  """(data_source, builder) for `config.data.name`, preparing the dataset on first use (unless
  `prepare` is False: a worker process opens what its main process prepared and checked)."""
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
    if family == "snli_ve":
      from vlfusion.data import snli_ve

      make = lambda: snli_ve.make_builder(name, config.data.data_dir)
    if family == "image_text_shards":
      from vlfusion.data import shards

      make = lambda: shards.make_builder(name, config.data.data_dir, config.data.shards,
                                         config.data.shards_validation_share)
    write = lambda b: local_datasets.prepare(b, manual_dir(config))
  else:
    import tensorflow_datasets as tfds

    from vlfusion.data import shapes_world, visual_entailment  # noqa: F401  (register the builders)

    make = lambda: tfds.builder(name, data_dir=config.data.data_dir)
    if family == "shapes_world":  # a versioned name opens this code's builder (`make_builder`).
      make = lambda: shapes_world.make_builder(name, config.data.data_dir)
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
  if family in LOCAL_DATASETS and config.data.manual_dir:
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


def images_source(builder: Any, split: str) -> Any:
  """The data source of `split`'s images when its records point at them (VQA v2 stores each image once,
  in `<split>_images`, and its question records hold an `image_index`), else None."""
  if "image_index" not in builder.info.features:
    return None
  return builder.as_data_source(split=f"{split}_images")


def manual_dir(config: ml_collections.ConfigDict) -> str:
  """`config.data.manual_dir`, the folder a local dataset is prepared from; an error when empty."""
  path = config.data.manual_dir
  if not path:
    raise ConfigError(f"config.data.manual_dir is empty: {config.data.name} is read from files on disk; "
                      "pass --config.data.manual_dir=DIR (docs/data.md lists the files it holds)")
  return path


def make_tokenizer(config: ml_collections.ConfigDict) -> WordPieceTokenizer:
  """The WordPiece tokenizer of `config.data.vocab_path`, or the shapes world's own vocab when empty."""
  d = config.data
  vocab_path = d.vocab_path
  if d.name.split("/")[0] in LOCAL_DATASETS and not vocab_path:
    raise ConfigError(f"config.data.vocab_path is empty: {d.name} needs a BERT vocab.txt (e.g. the "
                      "uncased 30522-token one); pass --config.data.vocab_path=/path/to/vocab.txt")
  if vocab_path and not epath.Path(vocab_path).is_file():
    raise ConfigError(f"config.data.vocab_path={vocab_path!r} is not a file")
  return WordPieceTokenizer(vocab_path) if vocab_path else WordPieceTokenizer()


def answer_vocab(config: ml_collections.ConfigDict, builder: Any) -> list[str]:
  """The closed answer vocabulary the `vqa_scores` columns index."""
  metadata = builder.info.metadata or {}
  if "answer_counts" in metadata:  # VQA v2: answers given often enough in train.
    least = config.data.vqa_min_answer_count
    return [a for a, n in metadata["answer_counts"].items() if n >= least]
  return list(questions.ANSWERS)
