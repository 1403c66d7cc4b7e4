"""Pretraining objectives as weighted sums over a batch divided by a batch-wide denominator.

Each objective is a pair: `denominator(batch)` (how many targets the whole batch has) and
`loss(outputs, batch, denominator) -> (loss, metrics)`. Computing the denominator once over the full
batch makes gradient accumulation exact: micro-batch losses over the shared denominator add up to the
full-batch loss, so their gradients add up to its gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
  denominator: Callable[[dict[str, Any]], jax.Array]
  loss: Callable[[dict[str, jax.Array], dict[str, Any], jax.Array], tuple[jax.Array, Metrics]]


def _example_weights(batch: dict[str, Any]) -> jax.Array:
  return batch["example_mask"].astype(jnp.float32)


def _mlm_weights(batch: dict[str, Any]) -> jax.Array:
  return batch["mlm_weights"].astype(jnp.float32) * _example_weights(batch)[:, None]


def _safe(denominator: jax.Array) -> jax.Array:
  return jnp.maximum(denominator, 1.0)


def mlm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Cross-entropy at the masked positions (`mlm_weights` > 0) against `mlm_targets`."""
  logits = outputs["mlm_logits"]
  weights = _mlm_weights(batch)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
  correct = (jnp.argmax(logits, -1) == batch["mlm_targets"]).astype(jnp.float32)
  loss = jnp.sum(losses * weights) / _safe(denominator)
  return loss, {"mlm_loss": loss, "mlm_accuracy": jnp.sum(correct * weights) / _safe(denominator)}


def itm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Two-way cross-entropy of `itm_logits` against `itm_labels` (1 = match)."""
  logits = outputs["itm_logits"]
  weights = _example_weights(batch)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["itm_labels"])
  correct = (jnp.argmax(logits, -1) == batch["itm_labels"]).astype(jnp.float32)
  loss = jnp.sum(losses * weights) / _safe(denominator)
  return loss, {"itm_loss": loss, "itm_accuracy": jnp.sum(correct * weights) / _safe(denominator)}


OBJECTIVES = {
    "mlm": Objective(lambda b: jnp.sum(_mlm_weights(b)), mlm_loss),
    "itm": Objective(lambda b: jnp.sum(_example_weights(b)), itm_loss),
}


def active(weights: dict[str, float]) -> dict[str, float]:
  """The objectives with a weight above 0."""
  return {name: w for name, w in weights.items() if w > 0}


def denominators(batch: dict[str, Any], weights: dict[str, float]) -> dict[str, jax.Array]:
  """Each active objective's denominator over the whole batch."""
  return {name: OBJECTIVES[name].denominator(batch) for name in active(weights)}


def total_loss(
    outputs: dict[str, jax.Array],
    batch: dict[str, Any],
    weights: dict[str, float],
    batch_denominators: dict[str, jax.Array] | None = None,
) -> tuple[jax.Array, Metrics]:
  """Σ weight_k · loss_k over the active objectives, and every metric (plus `loss`).

  `batch_denominators` defaults to this batch's own; pass the full batch's for a micro-batch.
  """
  if batch_denominators is None:
    batch_denominators = denominators(batch, weights)
  total = jnp.zeros((), jnp.float32)
  metrics: Metrics = {}
  for name, weight in active(weights).items():
    loss, m = OBJECTIVES[name].loss(outputs, batch, batch_denominators[name])
    total = total + weight * loss
    metrics.update(m)
  metrics["loss"] = total
  return total, metrics
