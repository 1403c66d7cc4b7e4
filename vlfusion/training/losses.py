"""Pretraining objectives as weighted sums over a batch divided by a batch-wide denominator.

Each objective is a pair: `denominator(batch)` (how many targets the whole batch has) and
`loss(outputs, batch, denominator) -> (loss, metrics)`. Computing the denominator once over the full
batch makes gradient accumulation exact: micro-batch losses over the shared denominator add up to the
full-batch loss, so their gradients add up to its gradient.
"""

from __future__ import annotations

import dataclasses
import math
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


def mlm_chunk_size(num_positions: int, probability: float) -> int:
  """Rows the masked-position decoder reserves: the expected number of masked positions among
  `num_positions` plus three standard deviations, a multiple of 8 (enough for all but ~0.1% of batches)."""
  mean = num_positions * probability
  rows = math.ceil(mean + 3 * math.sqrt(mean * (1 - probability)))
  return max(1, min(num_positions, -(-max(rows, 8) // 8) * 8))


def masked_mlm_sums(
    features: jax.Array, targets: jax.Array, weights: jax.Array,
    decode: Callable[[jax.Array], jax.Array], chunk: int,
) -> tuple[jax.Array, jax.Array]:
  """(Σ weight·cross-entropy, Σ weight·correct) over the positions of non-zero weight, decoding only
  those rows.

  features [B,Lt,D] are the MLM head's decoder inputs, `decode` maps rows [K,D] to logits [K,V]. The
  positions of non-zero weight are gathered to the front; when they fit in `chunk` rows only those are
  decoded, otherwise (rarely, with `chunk` from `mlm_chunk_size`) all B·Lt rows are. One `lax.cond`
  picks, so the sums and their gradients equal the full decoder's for any number of masked positions.
  (One cond, not one per chunk: each branch's gradient of the tied word table is a [V,D] array.)
  """
  n, d = targets.size, features.shape[-1]
  w = weights.reshape(n)
  order = jnp.argsort(w == 0, stable=True)  # positions to predict first, in their order.
  x, t, w = features.reshape(n, d)[order], targets.reshape(n)[order], w[order]

  def decode_rows(x, t, w):
    logits = decode(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, t)
    correct = (jnp.argmax(logits, -1) == t).astype(jnp.float32)
    return jnp.sum(ce * w), jnp.sum(correct * w)

  if chunk >= n:
    return decode_rows(x, t, w)
  return jax.lax.cond(jnp.sum(w != 0) <= chunk,
                      lambda x, t, w: decode_rows(x[:chunk], t[:chunk], w[:chunk]),
                      decode_rows, x, t, w)


def mlm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array,
             decode: Callable[[jax.Array], jax.Array] | None = None, chunk: int = 0):
  """Cross-entropy at the masked positions (`mlm_weights` > 0) against `mlm_targets`.

  From `mlm_logits` [B,Lt,V], or from `mlm_features` [B,Lt,D] and the head's `decode`, decoding only
  the masked positions (`masked_mlm_sums`; `chunk` 0 reserves rows for 15% masking).
  """
  weights = _mlm_weights(batch)
  if "mlm_logits" in outputs:
    logits = outputs["mlm_logits"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
    correct = (jnp.argmax(logits, -1) == batch["mlm_targets"]).astype(jnp.float32)
    loss_sum, correct_sum = jnp.sum(losses * weights), jnp.sum(correct * weights)
  else:
    chunk = chunk or mlm_chunk_size(weights.size, 0.15)
    loss_sum, correct_sum = masked_mlm_sums(outputs["mlm_features"], batch["mlm_targets"], weights,
                                            decode, chunk)
  loss = loss_sum / _safe(denominator)
  return loss, {"mlm_loss": loss, "mlm_accuracy": correct_sum / _safe(denominator)}


def itm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Two-way cross-entropy of `itm_logits` against `itm_labels` (1 = match)."""
  logits = outputs["itm_logits"]
  weights = _example_weights(batch)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["itm_labels"])
  correct = (jnp.argmax(logits, -1) == batch["itm_labels"]).astype(jnp.float32)
  loss = jnp.sum(losses * weights) / _safe(denominator)
  return loss, {"itm_loss": loss, "itm_accuracy": jnp.sum(correct * weights) / _safe(denominator)}


def _mrm_weights(batch: dict[str, Any]) -> jax.Array:
  return batch["mrm_weights"].astype(jnp.float32) * _example_weights(batch)[:, None]


def mrm_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Masked region modelling at the masked regions (`mrm_weights` > 0), per masked region:
  feature regression, the mean squared error over the F features against `mrm_targets` (UNITER's MRFR;
  when the head predicts features), plus object-label cross-entropy against `mrm_labels` (when it
  classifies). The two terms add with weight 1 each."""
  weights = _mrm_weights(batch)
  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  if "mrm_features" in outputs:
    err = jnp.mean(jnp.square(outputs["mrm_features"] - batch["mrm_targets"].astype(jnp.float32)), -1)
    feature_loss = jnp.sum(err * weights) / _safe(denominator)
    loss = loss + feature_loss
    metrics["mrm_feature_loss"] = feature_loss
  if "mrm_logits" in outputs:
    logits, labels = outputs["mrm_logits"], batch["mrm_labels"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    label_loss = jnp.sum(ce * weights) / _safe(denominator)
    loss = loss + label_loss
    metrics["mrm_label_loss"] = label_loss
    metrics["mrm_label_accuracy"] = jnp.sum(correct * weights) / _safe(denominator)
  metrics["mrm_loss"] = loss
  return loss, metrics


def _itc_rows(batch: dict[str, Any]) -> jax.Array:
  """Rows that take part in ITC: real examples whose caption matches their image."""
  return _example_weights(batch) * (batch["itm_labels"] == 1).astype(jnp.float32)


def itc_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Symmetric InfoNCE over in-batch negatives (ALBEF/CLIP): for each matching row i, cross-entropy of
  text i against every candidate image and of image i against every candidate text, averaged.

  Candidates and positives are the rows with `itm_labels == 1` and `example_mask` (an ITM negative's
  caption does not describe its image). `itc_logits` [B,B] are over the global batch: inside jax.jit
  the batch is one jax.Array sharded over the data axes, so the negatives already come from every
  data-parallel device. With gradient accumulation each micro-batch contrasts only its own rows, so
  unlike the other objectives ITC is not exactly the full-batch loss then (its denominator still is).
  """
  logits = outputs["itc_logits"]
  rows = _itc_rows(batch)
  valid = (rows[:, None] * rows[None, :]) > 0
  masked = jnp.where(valid, logits, -1e9)
  diag = jnp.diagonal(logits)
  t2i = jax.nn.logsumexp(masked, axis=1) - diag
  i2t = jax.nn.logsumexp(masked, axis=0) - diag
  losses = 0.5 * (t2i + i2t)
  loss = jnp.sum(jnp.where(rows > 0, losses, 0.0)) / _safe(denominator)
  correct = (jnp.argmax(masked, axis=1) == jnp.arange(logits.shape[0])).astype(jnp.float32)
  # Metrics of micro-batches are summed: the temperature is weighted by this micro-batch's share.
  share = jnp.sum(rows) / _safe(denominator)
  return loss, {"itc_loss": loss, "itc_t2i_accuracy": jnp.sum(correct * rows) / _safe(denominator),
                "itc_temperature": outputs["itc_temperature"] * share}


def vqa_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Binary cross-entropy of `vqa_logits` against the soft scores `vqa_scores`, summed over answers and
  averaged over questions: the mean over answers times their number, as UNITER and ViLT scale it.
  `vqa_score` is the soft score of the arg-max answer (the VQA accuracy)."""
  logits = outputs["vqa_logits"]
  scores = batch["vqa_scores"].astype(jnp.float32)
  weights = _example_weights(batch)
  bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, scores), axis=-1)
  loss = jnp.sum(bce * weights) / _safe(denominator)
  top = jnp.take_along_axis(scores, jnp.argmax(logits, -1)[:, None], axis=-1)[:, 0]
  return loss, {"vqa_loss": loss, "vqa_score": jnp.sum(top * weights) / _safe(denominator)}


def pairs_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array):
  """Two-way cross-entropy of `pairs_logits` (statement about two images) against `pair_labels`."""
  logits = outputs["pairs_logits"]
  weights = _example_weights(batch)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["pair_labels"])
  correct = (jnp.argmax(logits, -1) == batch["pair_labels"]).astype(jnp.float32)
  loss = jnp.sum(losses * weights) / _safe(denominator)
  return loss, {"pairs_loss": loss,
                "pairs_accuracy": jnp.sum(correct * weights) / _safe(denominator)}


OBJECTIVES = {
    "mlm": Objective(lambda b: jnp.sum(_mlm_weights(b)), mlm_loss),
    "itm": Objective(lambda b: jnp.sum(_example_weights(b)), itm_loss),
    "mrm": Objective(lambda b: jnp.sum(_mrm_weights(b)), mrm_loss),
    "itc": Objective(lambda b: jnp.sum(_itc_rows(b)), itc_loss),
    "vqa": Objective(lambda b: jnp.sum(_example_weights(b)), vqa_loss),
    "pairs": Objective(lambda b: jnp.sum(_example_weights(b)), pairs_loss),
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
  for name, weight in active(weights).items():
    extra = dict(decode=mlm_decode, chunk=mlm_chunk) if name == "mlm" and mlm_decode else {}
    loss, m = OBJECTIVES[name].loss(outputs, batch, batch_denominators[name], **extra)
    total = total + weight * loss
    metrics.update(m)
  metrics["loss"] = total
  return total, metrics
