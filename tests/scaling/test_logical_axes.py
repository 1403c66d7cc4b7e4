"""Every parameter gets its sharding from logical axis names: none is silently replicated by a missing or
unknown name, and the sharded initialisation equals the single-device one."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.scaling.common import initial_state, max_abs_diff
from tests.scaling.small_configs import FAMILIES, small_config
from vlfusion.training import trainer
from vlfusion.training.optimizer import param_path

SHARDED_NAMES = {"embed": 2, "mlp": 2, "heads": 2, "vocab": 2}  # fsdp=2, tensor=2


def _boxed_params(setup):
  boxed = jax.eval_shape(setup.init_fn, jax.random.PRNGKey(0)).params
  return jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_big_kernels_are_sharded_by_their_logical_names(family):
  config = FAMILIES[family].get_config("tiny")  # width 64, 4 heads: every named axis divides by 2.
  config.unlock()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  setup = trainer.Setup(config)
  rule_names = {name for name, _ in setup.rules}
  shardings = dict(jax.tree_util.tree_flatten_with_path(setup.state_shardings.params)[0])
  checked = 0
  for path, leaf in _boxed_params(setup):
    name = param_path(path)
    assert isinstance(leaf, nn.LogicallyPartitioned), f"{name} carries no logical axis names"
    assert len(leaf.names) == len(leaf.value.shape), f"{name}: names {leaf.names} vs {leaf.value.shape}"
    unknown = [n for n in leaf.names if n is not None and n not in rule_names]
    assert not unknown, f"{name}: logical names {unknown} are not in config.mesh.rules"
    shape = leaf.value.shape
    sharding = shardings[path]
    expected = int(np.prod([SHARDED_NAMES.get(n, 1) for n in leaf.names]))
    # The shard holds 1/expected of the parameter: each named axis is split as its rule says.
    assert np.prod(sharding.shard_shape(shape)) * expected == np.prod(shape), (
        f"{name} {shape} names {leaf.names}: shard {sharding.shard_shape(shape)}")
    if len(shape) >= 2 and np.prod(shape) >= 4096:
      assert expected >= 2, f"{name} {shape} is a big kernel but replicated: names {leaf.names}"
      checked += 1
  assert checked >= 10
  # The optimizer's moments are laid out like the parameters they follow.
  adam = setup.state_shardings.opt_state[1][0]
  assert jax.tree.leaves(adam.mu) == jax.tree.leaves(setup.state_shardings.params)


def test_sharded_initialisation_equals_single_device():
  config = small_config("co_attention", **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  sharded = jax.device_get(initial_state(trainer.Setup(config)))
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
  single = jax.device_get(initial_state(trainer.Setup(config, devices=jax.devices()[:1])))
  assert max_abs_diff(sharded.params, single.params) == 0.0
