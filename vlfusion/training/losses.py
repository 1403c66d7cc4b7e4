"""Pretraining objectives as weighted sums over a batch divided by a batch-wide denominator.

Each objective is a pair: `denominator(batch)` (how many targets the whole batch has) and
`loss(outputs, batch, denominator) -> (loss, metrics)`. Computing the denominator once over the full
batch makes gradient accumulation exact: micro-batch losses over the shared denominator add up to the
full-batch loss, so their gradients add up to its gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vlfusion import tasks
from vlfusion.tasks import base, itc, itm, mlm, mrm, pairs, vqa

Metrics = dict[str, jax.Array]


# Each task's loss is declared in its file under vlfusion/tasks; these names stay importable from here.
Objective = base.Objective
mlm_chunk_size, masked_mlm_sums, mlm_loss = mlm.mlm_chunk_size, mlm.masked_mlm_sums, mlm.mlm_loss
itm_loss = itm.TASK.objective.loss
mrm_loss, itc_loss, vqa_loss = mrm.mrm_loss, itc.itc_loss, vqa.vqa_loss
pairs_loss = pairs.TASK.objective.loss


class _Objectives(Mapping):
  """{name: Objective} of every registered task with an objective, read from the registry when looked
  up (so a task registered at run time is trained like the others)."""

  def _all(self) -> dict[str, base.Objective]:
    return {n: t.objective for n, t in tasks.REGISTRY.items() if t.objective is not None}

  def __getitem__(self, name: str) -> base.Objective:
    return self._all()[name]

  def __iter__(self):
    return iter(self._all())

  def __len__(self) -> int:
    return len(self._all())


OBJECTIVES = _Objectives()


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
    mlm_decode: Callable[[jax.Array], jax.Array] | None = None,
    mlm_chunk: int = 0,
) -> tuple[jax.Array, Metrics]:
  """Σ weight_k · loss_k over the active objectives, and every metric (plus `loss`).

  `batch_denominators` defaults to this batch's own; pass the full batch's for a micro-batch.
  `mlm_decode`/`mlm_chunk` go to `mlm_loss` when the outputs carry `mlm_features`.
  """
  if batch_denominators is None:
    batch_denominators = denominators(batch, weights)
  total = jnp.zeros((), jnp.float32)
  metrics: Metrics = {}
  # Options go to every loss; each takes those it knows (the MLM loss: decode, chunk).
  options = dict(decode=mlm_decode, chunk=mlm_chunk) if mlm_decode else {}
  for name, weight in active(weights).items():
    loss, m = OBJECTIVES[name].loss(outputs, batch, batch_denominators[name], **options)
    total = total + weight * loss
    metrics.update(m)
  metrics["loss"] = total
  return total, metrics
