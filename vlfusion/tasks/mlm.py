"""Masked language modelling (BERT): predict the masked words of a matching caption.

Head: transform + LayerNorm + a decoder tied to the word table (`heads.MlmHead`). Rows: caption rows,
every row corrupted alike (`mlm_targets` [Lt], `mlm_weights` [Lt], 1 at a matching pair's masked
words). Loss: cross-entropy at the masked positions. Evaluation: accuracy at the masked positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlfusion.data import masking
from vlfusion.models.heads import MlmHead
from vlfusion.tasks.base import (
  Fused,
  HeadParts,
  Objective,
  Task,
  example_weights,
  grouped_metrics,
  safe,
  sums,
)


def head(c: Any, parts: HeadParts) -> MlmHead:
  return MlmHead(c.text.vocab_size, c.text.hidden_size, decoder=parts.text_embeddings.attend,
                 layer_norm_eps=c.layer_norm_eps, dtype=parts.dtype, param_dtype=parts.param_dtype)


def forward(model: Any, mlm_head: MlmHead, batch: dict[str, Any], fused: Fused) -> dict[str, jax.Array]:
  """`mlm_logits` [B,Lt,V], or with `decode_mlm=False` the decoder's input `mlm_features` [B,Lt,Dt]."""
  if fused.decode_mlm or model.is_initializing():
    return {"mlm_logits": mlm_head(fused.encoded.text)}
  return {"mlm_features": mlm_head.features(fused.encoded.text)}


def weights(batch: dict[str, Any]) -> jax.Array:
  return batch["mlm_weights"].astype(jnp.float32) * example_weights(batch)[:, None]


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
             decode: Callable[[jax.Array], jax.Array] | None = None, chunk: int = 0, **_):
  """Cross-entropy at the masked positions (`mlm_weights` > 0) against `mlm_targets`.

  From `mlm_logits` [B,Lt,V], or from `mlm_features` [B,Lt,D] and the head's `decode`, decoding only
  the masked positions (`masked_mlm_sums`; `chunk` 0 reserves rows for 15% masking).
  """
  w = weights(batch)
  if "mlm_logits" in outputs:
    logits = outputs["mlm_logits"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
    correct = (jnp.argmax(logits, -1) == batch["mlm_targets"]).astype(jnp.float32)
    loss_sum, correct_sum = jnp.sum(losses * w), jnp.sum(correct * w)
  else:
    chunk = chunk or mlm_chunk_size(w.size, 0.15)
    loss_sum, correct_sum = masked_mlm_sums(outputs["mlm_features"], batch["mlm_targets"], w,
                                            decode, chunk)
  loss = loss_sum / safe(denominator)
  return loss, {"mlm_loss": loss, "mlm_accuracy": correct_sum / safe(denominator)}


def text_targets(rows: Any, text_ids: np.ndarray, text_mask: np.ndarray, positive: bool,
                 rng: np.random.Generator) -> dict[str, Any]:
  """The corrupted `text_ids` with `mlm_targets` and `mlm_weights` (`config.data.mlm_probability`)."""
  d = rows.config.data
  maskable = text_mask & ~np.isin(text_ids, rows.special_ids)
  word_starts = rows.tokenizer.word_starts(text_ids) if d.mlm_whole_word else None
  # Every row is corrupted alike, so that a [MASK] never tells the ITM label (masking only matching
  # pairs let a model accept any caption with a [MASK] in it, whatever the image); a false caption
  # would teach the MLM head the wrong words, so only a matching pair's masked words are targets.
  inputs, targets, w = masking.mask_tokens(
      text_ids, maskable, rng, probability=d.mlm_probability, mask_id=rows.tokenizer.mask_id,
      random_ids=rows.random_ids, word_starts=word_starts)
  w = w * np.float32(positive)
  return {"text_ids": inputs, "mlm_targets": targets, "mlm_weights": w}


def eval_counts(outputs, shuffled, batch, context=None):
  """Accuracy at the masked positions of matching pairs."""
  if "mlm_logits" not in outputs or "mlm_weights" not in batch:
    return None
  w = weights(batch)
  correct = (jnp.argmax(outputs["mlm_logits"], -1) == batch["mlm_targets"]).astype(jnp.float32)
  return {"": sums({"correct": correct}, w)}


TASK = Task(
    name="mlm",
    head=head,
    forward=forward,
    objective=Objective(lambda b: jnp.sum(weights(b)), mlm_loss),
    text_targets=text_targets,
    output="mlm_logits",
    eval_counts=eval_counts,
    metrics=lambda groups: grouped_metrics(groups, {}),
)
