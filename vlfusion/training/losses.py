"""Pretraining objectives: each returns (loss, metrics) from model outputs and the batch."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mlm(outputs: dict[str, jax.Array], batch: dict[str, Any]) -> tuple[jax.Array, dict]:
  """Cross-entropy at the masked positions (`mlm_weights` > 0) against `mlm_targets`."""
  logits = outputs["mlm_logits"]
  weights = batch["mlm_weights"].astype(jnp.float32)
  weights = weights * batch["example_mask"][:, None].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
  correct = (jnp.argmax(logits, -1) == batch["mlm_targets"]).astype(jnp.float32)
  loss = _weighted_mean(losses, weights)
  return loss, {"mlm_loss": loss, "mlm_accuracy": _weighted_mean(correct, weights)}


def itm(outputs: dict[str, jax.Array], batch: dict[str, Any]) -> tuple[jax.Array, dict]:
  """Two-way cross-entropy of `itm_logits` against `itm_labels` (1 = match)."""
  logits = outputs["itm_logits"]
  weights = batch["example_mask"].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["itm_labels"])
  correct = (jnp.argmax(logits, -1) == batch["itm_labels"]).astype(jnp.float32)
  loss = _weighted_mean(losses, weights)
  return loss, {"itm_loss": loss, "itm_accuracy": _weighted_mean(correct, weights)}


OBJECTIVES = {"mlm": mlm, "itm": itm}


def total_loss(
    outputs: dict[str, jax.Array], batch: dict[str, Any], weights: dict[str, float]
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum of weight_k * loss_k over the objectives with a weight above 0, and every metric."""
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for name, weight in weights.items():
    if weight <= 0:
      continue
    if name not in OBJECTIVES:
      raise ValueError(f"config.objectives.{name}={weight}: no loss is implemented for {name!r}")
    loss, m = OBJECTIVES[name](outputs, batch)
    total = total + weight * loss
    metrics.update(m)
  metrics["loss"] = total
  return total, metrics
