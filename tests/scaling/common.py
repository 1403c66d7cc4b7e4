"""Small configs and synthetic batches for the scaling tests: compile time dominates, so models are tiny."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from tests.scaling.small_configs import small_config  # noqa: F401 - re-exported for the tests.
from vlfusion import partitioning
from vlfusion.training import trainer


def synthetic_batch(config, step: int) -> dict:
  """A global batch with every input and target MLM and ITM need, keyed by `step`."""
  rng = np.random.default_rng(1000 + step)
  b, lt = config.data.global_batch_size, config.data.max_text_len
  m = config.model
  r = m.image.num_regions
  text_len = rng.integers(4, lt + 1, b)
  region_len = rng.integers(2, r + 1, b)
  return {
      "text_ids": rng.integers(5, m.text.vocab_size, (b, lt)).astype(np.int32),
      "text_mask": np.arange(lt)[None] < text_len[:, None],
      "regions": {
          "features": rng.normal(size=(b, r, m.image.feature_dim)).astype(np.float32),
          "boxes": rng.uniform(size=(b, r, 4)).astype(np.float32),
          "mask": np.arange(r)[None] < region_len[:, None],
      },
      "example_mask": np.ones((b,), bool),
      "itm_labels": rng.integers(0, 2, b).astype(np.int32),
      "mlm_targets": rng.integers(5, m.text.vocab_size, (b, lt)).astype(np.int32),
      "mlm_weights": (rng.uniform(size=(b, lt)) < 0.3).astype(np.float32),
  }


# XLA:CPU's LLVM optimisation dominates compile time and is irrelevant to what these tests check;
# turning it down makes a compile about 3x faster. The programs are the same HLO, sharded the same way.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def initial_state(setup):
  """`Setup.initial_state` (sharded init from the state shardings), compiled with FAST_COMPILE."""
  init = jax.jit(lambda rng: nn.unbox(setup.init_fn(rng)), out_shardings=setup.state_shardings)
  rng = jax.random.PRNGKey(setup.config.train.seed)
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    return init.lower(rng).compile(compiler_options=FAST_COMPILE)(rng)


def run_steps(config, devices, num_steps: int, batch_fn=None, start_state=None):
  """Trains `num_steps` over a mesh of `devices` with `Setup.jit_train_step`.

  Starts from `start_state` placed into this mesh's state shardings, or from a sharded init. Batches are
  `batch_fn(config, step)` (synthetic by default), fed through `to_global_batch`. Returns
  (losses, initial state on the host, final state on the host).
  """
  batch_fn = batch_fn or synthetic_batch
  setup = trainer.Setup(config, devices=devices)
  if start_state is None:
    state = initial_state(setup)
  else:
    state = jax.device_put(start_state, setup.state_shardings)
  first = jax.device_get(state)
  step_fn = setup.jit_train_step()
  losses = []
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    for step in range(num_steps):
      batch = partitioning.to_global_batch(batch_fn(config, step), setup.mesh)
      if step == 0:
        step_fn = step_fn.lower(state, batch).compile(compiler_options=FAST_COMPILE)
      state, metrics = step_fn(state, batch)
      losses.append(float(metrics["loss"]))
  return np.array(losses), first, jax.device_get(state)


def max_abs_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
