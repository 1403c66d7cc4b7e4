"""Random batches for model tests, padded as far as asked."""

from __future__ import annotations

import numpy as np

from vlfusion import configuration


def patches_config(module, **overrides):
  """`module`'s tiny config over 32 px pixels cut into 8 px patches by the conv stem, with dotted
  overrides."""
  config = module.get_config("tiny")
  config.unlock()
  config.model.image.update(dict(input="patches", image_size=32, patch_size=8, stem="conv",
                                 embedding=""))
  return configuration.override(config, overrides)


def random_batch(config, batch_size=2, text_len=8, num_regions=4, valid_text=(5, 8),
                 valid_regions=(3, 4), seed=0):
  """A batch with `valid_text[i]` real tokens and `valid_regions[i]` real regions in row i.

  Padding positions hold random garbage, so a model that reads them gets caught.
  """
  rng = np.random.default_rng(seed)
  m = config.model
  ids = rng.integers(5, m.text.vocab_size, (batch_size, text_len)).astype(np.int32)
  text_mask = np.arange(text_len)[None, :] < np.asarray(valid_text)[:, None]
  batch = {"text_ids": ids, "text_mask": text_mask}
  if m.image.input == "regions":
    feats = rng.normal(size=(batch_size, num_regions, m.image.feature_dim)).astype(np.float32)
    boxes = rng.uniform(size=(batch_size, num_regions, 4)).astype(np.float32)
    mask = np.arange(num_regions)[None, :] < np.asarray(valid_regions)[:, None]
    batch["regions"] = {"features": feats, "boxes": boxes, "mask": mask}
  else:
    s = m.image.image_size
    batch["image"] = rng.normal(size=(batch_size, s, s, 3)).astype(np.float32)
  return batch


def pad_batch(batch, extra_text, extra_regions, seed=1):
  """Appends `extra_text` token and `extra_regions` region slots of masked-out garbage."""
  rng = np.random.default_rng(seed)
  out = dict(batch)
  b = batch["text_ids"].shape[0]
  out["text_ids"] = np.concatenate(
      [batch["text_ids"], rng.integers(5, 50, (b, extra_text)).astype(np.int32)], 1)
  out["text_mask"] = np.concatenate([batch["text_mask"], np.zeros((b, extra_text), bool)], 1)
  if "regions" in batch:
    r = batch["regions"]
    f = r["features"].shape[-1]
    out["regions"] = {
        "features": np.concatenate(
            [r["features"], rng.normal(size=(b, extra_regions, f)).astype(np.float32)], 1),
        "boxes": np.concatenate(
            [r["boxes"], rng.uniform(size=(b, extra_regions, 4)).astype(np.float32)], 1),
        "mask": np.concatenate([r["mask"], np.zeros((b, extra_regions), bool)], 1),
    }
  return out


def add_targets(config, batch, seed=2):
  """Adds the targets of every objective to a `random_batch`, as the data pipeline names them.

  Row 1 is an ITM negative (itm_labels 0); every other row matches its image.
  """
  rng = np.random.default_rng(seed)
  m = config.model
  b, lt = batch["text_ids"].shape
  out = dict(batch)
  out["example_mask"] = np.ones((b,), bool)
  out["mlm_targets"] = rng.integers(5, m.text.vocab_size, (b, lt)).astype(np.int32)
  out["mlm_weights"] = (batch["text_mask"] & (rng.random((b, lt)) < 0.5)).astype(np.float32)
  out["itm_labels"] = (np.arange(b) != 1).astype(np.int32)
  out["itm_negative_kind"] = (1 - out["itm_labels"]).astype(np.int32)
  if "regions" in batch:
    r, f = batch["regions"]["features"].shape[1:]
    out["mrm_weights"] = (batch["regions"]["mask"] & (rng.random((b, r)) < 0.5)).astype(np.float32)
    out["mrm_targets"] = rng.normal(size=(b, r, f)).astype(np.float32)
    out["mrm_labels"] = rng.integers(0, max(m.mrm.num_labels, 1), (b, r)).astype(np.int32)
    out["pair_regions"] = {k: np.roll(v, 1, axis=0) for k, v in batch["regions"].items()}
  else:
    out["pair_image"] = np.roll(batch["image"], 1, axis=0)
  if m.vqa.num_answers > 0:
    scores = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0], size=(b, m.vqa.num_answers), p=[.8, .05, .05, .05, .05])
    out["vqa_scores"] = scores.astype(np.float32)
  out["pair_labels"] = rng.integers(0, 2, (b,)).astype(np.int32)
  return out


def random_params(model, batch, seed=0, scale=0.3, bert_like=False):
  """Parameters of `model` filled from numpy, without running (and compiling) the random init.

  Shapes come from `jax.eval_shape` of init. By default every value is N(0, scale), LayerNorm scales
  included (so no layer is the identity), which is all that tests of structure and invariance need;
  `bert_like` gives BERT's init instead (weights N(0, 0.02), biases 0, LayerNorm scales 1), for training.
  """
  import flax.linen as nn
  import jax

  rng = np.random.default_rng(seed)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"])

  def fill(path, s):
    name = str(getattr(path[-1], "key", path[-1]))
    if bert_like and name == "scale":
      return np.ones(s.shape, s.dtype)
    if bert_like and name == "bias":
      return np.zeros(s.shape, s.dtype)
    return rng.normal(0.0, 0.02 if bert_like else scale, s.shape).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
