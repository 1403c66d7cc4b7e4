"""One optimizer update on a global batch: a module-level pure function that tests import."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vlfusion.training import losses
from vlfusion.training.train_state import TrainState


def _split_micro_batches(batch: dict[str, Any], k: int) -> dict[str, Any]:
  return jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), batch)


def train_step(
    state: TrainState,
    batch: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    objective_weights: dict[str, float],
    grad_accum_steps: int = 1,
    nan_injection: tuple[int, str] | None = None,
    masked_mlm: bool = False,
    mlm_probability: float = 0.15,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on a global batch; returns the new state and scalar metrics.

  With `masked_mlm` the MLM decoder runs over the masked positions only (`losses.masked_mlm_sums`,
  with rows reserved for `mlm_probability`): the same loss and gradients as decoding every position,
  without the [B,Lt,vocab] logits that are almost all multiplied by a weight of zero. Off by default:
  XLA's cost analysis counts its `lax.cond` differently with `scan_layers` or gradient accumulation,
  so the run's FLOPs and MFU would disagree between those settings (tests/scaling/test_reporting.py).

  A step whose loss or gradient is not finite leaves the parameters and optimizer state unchanged
  and reports `nonfinite=1`. `nan_injection=(step, objective)` multiplies
  that objective's logits by NaN at that step, to exercise this path for real.
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  batch_denominators = losses.denominators(batch, objective_weights)

  decode_masked = masked_mlm and objective_weights.get("mlm", 0) > 0

  def loss_fn(params, micro_batch, rng):
    outputs = model.apply({"params": params}, micro_batch, train=True, rngs={"dropout": rng},
                          decode_mlm=not decode_masked)
    if nan_injection is not None:
      at_step, objective = nan_injection
      key = f"{objective}_logits" if f"{objective}_logits" in outputs else f"{objective}_features"
      outputs = dict(outputs, **{key: outputs[key] * jnp.where(state.step == at_step, jnp.nan, 1.0)})
    decode, chunk = None, 0
    if decode_masked:
      decode = lambda x: model.apply({"params": params}, x, method="decode_mlm_features")
      chunk = losses.mlm_chunk_size(micro_batch["mlm_weights"].size, mlm_probability)
    return losses.total_loss(outputs, micro_batch, objective_weights, batch_denominators,
                             mlm_decode=decode, mlm_chunk=chunk)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    grads, metrics = grad_fn(state.params, batch, dropout_rng)
  else:
    # Each micro-batch loss is over the full batch's denominators, so the sums are exact.
    micro = _split_micro_batches(batch, grad_accum_steps)

    def accumulate(carry, xs):
      i, micro_batch = xs
      g, m = grad_fn(state.params, micro_batch, jax.random.fold_in(dropout_rng, i))
      return jax.tree.map(jnp.add, carry, (g, m)), None

    zeros = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), dropout_rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro))

  grad_norm = optax.tree.norm(grads)  # the same expression as clipping's norm: XLA computes it once.
  # Decided before the update, so that the choice between new and old values fuses into the update's
  # one pass over parameters and moments. A finite gradient norm means every squared gradient is
  # finite, and then AdamW's step from a finite state is finite too.
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(new_params, state.params),
      opt_state=keep(new_opt_state, state.opt_state),
  )
  metrics = dict(metrics, grad_norm=grad_norm, learning_rate=schedule(state.step),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  return new_state, metrics
