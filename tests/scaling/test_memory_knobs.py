"""Memory and speed knobs change how a step is computed, not what it computes: bfloat16 compute keeps
float32 parameters and optimizer state; every remat policy gives the gradients of no remat; gradient
accumulation over micro-batches equals one step on the whole batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.scaling.common import FAST_COMPILE, max_abs_diff, run_steps, small_config, synthetic_batch
from vlfusion.configuration import REMAT_POLICIES
from vlfusion.models import build_model
from vlfusion.training import losses, train_state


def test_bfloat16_compute_keeps_float32_parameters_and_optimizer_state():
  config = small_config("single_stream", **{"model.dtype": "bfloat16", "mesh.data": 1})
  model = build_model(config.model)
  batch = synthetic_batch(config, 0)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch)["params"])
  outputs = jax.eval_shape(lambda p: model.apply({"params": p}, batch), params)
  assert outputs["text_hidden"].dtype == jnp.bfloat16  # the compute really is bfloat16.

  step_losses, _, state = run_steps(config, jax.devices()[:1], 2)
  assert np.all(np.isfinite(step_losses)) and step_losses[1] != step_losses[0]
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim > 0}
  assert dtypes == {np.dtype("float32")}, dtypes


def _loss_fn(config, batch):
  model = build_model(config.model)
  weights = dict(config.objectives)

  def loss(p):
    out = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    return losses.total_loss(out, batch, weights, losses.denominators(batch, weights))[0]

  return loss


def test_every_remat_policy_gives_the_gradients_of_none():
  # Dropout off: with dropout > 0, remat fails to trace in vlfusion/models/layers.py (`static_argnums=(-1,)`
  # does not make `deterministic` static under nn.remat; `(5,)` does). Reported to the models owner.
  config = small_config("co_attention", **{"model.dropout": 0.0, "mesh.data": 1})
  batch = synthetic_batch(config, 0)
  init = train_state.make_init_fn(build_model(config.model), optax.identity(), config)
  params = jax.device_get(jax.jit(lambda r: nn.unbox(init(r)).params)(jax.random.PRNGKey(0)))
  grad_fns = {}
  for policy in REMAT_POLICIES:
    config.model.remat_policy = policy
    grad_fns[policy] = jax.grad(_loss_fn(config, batch))
  # One program computing every policy's gradients: one compile instead of four.
  all_grads = jax.jit(lambda p: {k: fn(p) for k, fn in grad_fns.items()}).lower(params).compile(
      compiler_options=FAST_COMPILE)
  grads = jax.device_get(all_grads(params))
  reference = grads.pop("none")
  assert max(float(np.max(np.abs(g))) for g in jax.tree.leaves(reference)) > 0
  assert set(grads) == set(REMAT_POLICIES) - {"none"}
  for policy, g in grads.items():
    diff = max_abs_diff(g, reference)
    assert diff < 1e-6, f"remat_policy={policy}: gradients differ by {diff}"


@pytest.mark.parametrize("family", ["single_stream"])
def test_gradient_accumulation_equals_one_big_batch(family):
  overrides = {"model.dropout": 0.0, "mesh.data": 2}
  one_losses, start, one = run_steps(small_config(family, **overrides), jax.devices()[:2], 2)
  accum_config = small_config(family, **overrides, **{"optimizer.grad_accum_steps": 4})
  accum_losses, _, accum = run_steps(accum_config, jax.devices()[:2], 2, start_state=start)
  np.testing.assert_allclose(accum_losses, one_losses, rtol=0, atol=1e-5)
  diff = max_abs_diff(accum.params, one.params)
  print(f"grad_accum_steps=4 vs 1: max |param diff| {diff:.2e}")
  assert diff < 1e-6
