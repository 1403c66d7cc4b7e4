"""The train state, created already sharded from the shapes `jax.eval_shape` reports."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlfusion import partitioning


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes: step, parameters, optimizer state and the base RNG key.

  The dropout key of step s is fold_in(rng, s), so a resumed run draws the same keys.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def example_batch(config: Any, batch_size: int = 1) -> dict[str, np.ndarray]:
  """A zero batch with the shapes `config` implies, for initialisation and shape inference."""
  m = config.model
  lt = config.data.max_text_len
  batch: dict[str, Any] = {
      "text_ids": np.zeros((batch_size, lt), np.int32),
      "text_mask": np.ones((batch_size, lt), bool),
  }
  if m.image.input == "regions":
    r = m.image.num_regions
    batch["regions"] = {
        "features": np.zeros((batch_size, r, m.image.feature_dim), np.float32),
        "boxes": np.zeros((batch_size, r, m.image.box_dim), np.float32),
        "mask": np.ones((batch_size, r), bool),
    }
  else:
    s = m.image.image_size
    batch["image"] = np.zeros((batch_size, s, s, 3), np.float32)
  return batch


def make_init_fn(model: nn.Module, optimizer: optax.GradientTransformation, config: Any):
  """Returns init(rng) -> TrainState with parameters still boxed with their logical names."""
  batch = example_batch(config)

  def init(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    params = model.init({"params": params_rng, "dropout": dropout_rng}, batch, train=False)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
        rng=state_rng,
    )

  return init


def abstract_state(init_fn, mesh: jax.sharding.Mesh, rules: Any) -> tuple[Any, Any]:
  """(shape/dtype/sharding tree of the unboxed state, shardings tree), without materialising it."""
  boxed = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  with nn.logical_axis_rules(rules):
    shardings = partitioning.state_shardings(boxed, mesh, rules)
  partitioning.check_divisible(boxed, shardings, mesh)
  unboxed = nn.unbox(boxed)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, shardings
  )
  return abstract, shardings


def create_sharded_state(init_fn, shardings: Any, seed: int) -> TrainState:
  """Initialises the state directly into its shardings: no device ever holds all of it."""
  return jax.jit(lambda rng: nn.unbox(init_fn(rng)), out_shardings=shardings)(
      jax.random.PRNGKey(seed)
  )
