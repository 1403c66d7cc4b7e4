"""Masked region modelling (UNITER's MRFR and MRC): reconstruct masked regions from the rest.

Head: transform + LayerNorm, then feature regression and/or object-label classification
(`heads.MrmHead`, sized by `config.model.mrm`). Rows: caption rows over regions, a share of the real
regions zeroed on every row (`mrm_weights` [R], `mrm_targets` [R,F], `mrm_labels` [R]). Loss: the
regression's mean squared error plus the labels' cross-entropy. Not an evaluation task.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlfusion.errors import ConfigError
from vlfusion.models.heads import MrmHead
from vlfusion.tasks.base import HeadParts, Objective, Task, example_weights, safe


def head(c: Any, parts: HeadParts) -> MrmHead:
  return MrmHead(c.image.feature_dim, num_labels=c.mrm.num_labels, regression=c.mrm.regression,
                 layer_norm_eps=c.layer_norm_eps, dtype=parts.dtype, param_dtype=parts.param_dtype)


def weights(batch: dict[str, Any]) -> jax.Array:
  return batch["mrm_weights"].astype(jnp.float32) * example_weights(batch)[:, None]


def mrm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array, **_):
  """Masked region modelling at the masked regions (`mrm_weights` > 0), per masked region:
  feature regression, the mean squared error over the F features against `mrm_targets` (UNITER's MRFR;
  when the head predicts features), plus object-label cross-entropy against `mrm_labels` (when it
  classifies). The two terms add with weight 1 each."""
  w = weights(batch)
  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  if "mrm_features" in outputs:
    err = jnp.mean(jnp.square(outputs["mrm_features"] - batch["mrm_targets"].astype(jnp.float32)), -1)
    feature_loss = jnp.sum(err * w) / safe(denominator)
    loss = loss + feature_loss
    metrics["mrm_feature_loss"] = feature_loss
  if "mrm_logits" in outputs:
    logits, labels = outputs["mrm_logits"], batch["mrm_labels"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    label_loss = jnp.sum(ce * w) / safe(denominator)
    loss = loss + label_loss
    metrics["mrm_label_loss"] = label_loss
    metrics["mrm_label_accuracy"] = jnp.sum(correct * w) / safe(denominator)
  metrics["mrm_loss"] = loss
  return loss, metrics


def media_targets(rows: Any, ex: dict[str, Any], record: dict[str, Any], positive: bool,
                  rng: np.random.Generator) -> dict[str, Any]:
  """Zeroes a `mrm_probability` share of the real regions (in place, on every row) and returns their
  targets: `mrm_weights` [R] (1 where masked on a matching pair; 0 on a false one), `mrm_targets`
  [R, F] (the original features) and `mrm_labels` [R] (object labels). Rows of images add nothing."""
  if "regions" not in ex:
    return {}
  regions = ex["regions"]
  r = len(regions["mask"])
  labels = np.zeros((r,), np.int32)
  n = int(regions["mask"].sum())
  labels[:n] = np.asarray(record["labels"])[:n]
  chosen = regions["mask"] & (rng.random(r) < rows.config.data.mrm_probability)
  targets = regions["features"].copy()
  regions["features"][chosen] = 0.0  # on every row, as MLM's masks: a zeroed region tells no label.
  return {"mrm_weights": (chosen & positive).astype(np.float32), "mrm_targets": targets,
          "mrm_labels": labels}


def check_heads(config: Any, builder: Any, answer_vocab: list[str]) -> None:
  """The label classifier covers the data's object labels."""
  m, name = config.model, config.data.name
  num_labels = (builder.info.metadata or {}).get("num_labels")
  if m.mrm.num_labels > 0:
    if num_labels is None:
      raise ConfigError(f"config.model.mrm.num_labels={m.mrm.num_labels} but {name} has no object "
                        "labels; set it to 0 (feature regression only)")
    if m.mrm.num_labels < num_labels:
      raise ConfigError(f"config.model.mrm.num_labels={m.mrm.num_labels} but {name} has "
                        f"{num_labels} object labels")


TASK = Task(
    name="mrm",
    head=head,
    forward=lambda model, h, batch, fused: h(fused.encoded.image),
    objective=Objective(lambda b: jnp.sum(weights(b)), mrm_loss),
    text_free=True,
    media_targets=media_targets,
    check_heads=check_heads,
)
