"""Whether a config and the dataset it reads fit together, checked before anything is compiled: each error
names the config field. Also the fields resolved from the data (`Task.resolve`: `model.vqa.num_answers=0`)."""

from __future__ import annotations

from typing import Any

import ml_collections

from vlfusion import tasks
from vlfusion.data.tokenizer import WordPieceTokenizer
from vlfusion.errors import ConfigError

# Objectives whose text is their own (a question, a statement, a hypothesis), not a caption.
OWN_TEXT = tasks.own_text_tasks()


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
  own = set(tasks.own_text_tasks())
  task = active & own
  captions = {n for n in active - own if not tasks.get(n).text_free}
  if task and (len(task) > 1 or captions):
    caption_tasks = [n for n in tasks.objectives() if n not in own and not tasks.get(n).text_free]
    raise ConfigError(f"config.objectives: {sorted(active)} cannot share batches; "
                      f"{' and '.join(sorted(own))} each put their own text (question, statement, "
                      f"hypothesis) in a row, so train them apart from {'/'.join(caption_tasks)} and "
                      "from each other")
  features = builder.info.features
  for objective in sorted(active):
    key = tasks.get(objective).data_feature
    if key and key not in features:
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
  """Head sizes that must equal the data's (`Task.check_heads` of each objective trained: the VQA
  answer vocabulary, the object labels)."""
  for name in sorted(active_objectives(config)):
    check = tasks.get(name).check_heads
    if check is not None:
      check(config, builder, answer_vocab)


def resolve_from_data(config: ml_collections.ConfigDict) -> None:
  """Sets the fields each task of `config.model.heads` resolves from the data (`Task.resolve`), before
  the model is built (`Setup`), so that `workdir/config.json` records the resolved values."""
  for name in config.model.heads:
    resolve = tasks.get(name).resolve
    if resolve is not None:
      resolve(config)


resolve_num_answers = resolve_from_data  # the name Setup calls.
