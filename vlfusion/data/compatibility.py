"""Whether a config and the dataset it reads fit together, checked before anything is compiled: each error
names the config field. Also the one config field resolved from the data (`model.vqa.num_answers=0`)."""

from __future__ import annotations

import logging
from typing import Any

import ml_collections

from vlfusion.data import datasets
from vlfusion.data.tokenizer import WordPieceTokenizer
from vlfusion.errors import ConfigError

OWN_TEXT = ("vqa", "pairs")  # objectives whose text is a question or a statement, not a caption.


def active_objectives(config: ml_collections.ConfigDict) -> set[str]:
  """The objectives with a weight > 0."""
  return {n for n, w in config.objectives.items() if w > 0}


def check_compatible(config: ml_collections.ConfigDict, builder: Any, tokenizer: WordPieceTokenizer):
  """Errors that name the config field, before anything is compiled."""
  m, name = config.model, config.data.name
  if tokenizer.vocab_size > m.text.vocab_size:
    raise ConfigError(
        f"config.model.text.vocab_size={m.text.vocab_size} is smaller than the vocab of {name} "
        f"({tokenizer.vocab_size} tokens in {tokenizer.vocab_path})")
  active = active_objectives(config)
  task = active & set(OWN_TEXT)
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
    most = getattr(bc, "max_regions", getattr(bc, "max_objects", None))  # an occluder is a region too.
    if most is not None and m.image.num_regions < most:
      raise ConfigError(f"config.model.image.num_regions={m.image.num_regions} but scenes of {name} "
                        f"have up to {most} regions")
    if m.image.box_dim != 4:
      raise ConfigError(f"config.model.image.box_dim={m.image.box_dim}: {name} has 4-number boxes")
  elif "image_bytes" not in features and "image" not in features:
    raise ConfigError(f"config.model.image.input={m.image.input!r} but {name} has region features, "
                      f"not images (use its /images config)")
  elif "image" in features and m.image.image_size != bc.image_size:
    raise ConfigError(f"config.model.image.image_size={m.image.image_size} but the images of {name} "
                      f"are {bc.image_size}x{bc.image_size}")


def check_heads(config: ml_collections.ConfigDict, builder: Any, answer_vocab: list[str]) -> None:
  """Head sizes that must equal the data's: the VQA answer vocabulary, the object labels."""
  m, name, active = config.model, config.data.name, active_objectives(config)
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


def resolve_num_answers(config: ml_collections.ConfigDict) -> None:
  """Sets `config.model.vqa.num_answers` to the size of the data's answer vocabulary when it is 0.

  Runs before the model is built (`Setup`), so the VQA head fits the data and the resolved size is what
  `workdir/config.json` records. Does nothing without the 'vqa' head or with a size already set.
  """
  m = config.model
  if "vqa" not in m.heads or m.vqa.num_answers:
    return
  import jax

  _, builder = datasets.open_dataset(config, config.data.train_split, jax.process_index(),
                                     jax.process_count())
  m.vqa.num_answers = len(datasets.answer_vocab(config, builder))
  logging.info("config.model.vqa.num_answers=0: set to %d, the answer vocabulary of %s.",
               m.vqa.num_answers, config.data.name)
