"""Data, FSDP, tensor and mixed parallelism on 8 simulated CPU devices train exactly like one device.

Each run starts from the single-device run's initial state placed into its own `Setup` shardings (that
the sharded initialisation itself equals the single-device one is tested in test_logical_axes.py, once:
it costs a compile), takes 3 steps with dropout ON
(rate 0.1; the keys are fold_in(rng, step), and JAX's partitionable threefry draws the same bits however
the arrays are sharded), and is compared with a mesh over a single device. Float32 tolerance: losses
within 2e-5 absolute, parameters within 2e-6 absolute after 3 AdamW steps (measured differences are
~2e-6 and ~1e-7: only the order of reductions differs).
"""

import jax
import numpy as np
import pytest

from tests.scaling.common import max_abs_diff, run_steps, small_config

NUM_STEPS = 3
LOSS_ATOL = 2e-5
PARAM_ATOL = 2e-6
MESHES = {
    "data8": dict(data=8, fsdp=1, tensor=1),
    "data2_fsdp4": dict(data=2, fsdp=4, tensor=1),
    "data2_tensor4": dict(data=2, fsdp=1, tensor=4),
    "mix2x2x2": dict(data=2, fsdp=2, tensor=2),
}
_REFERENCE = {}


def _config(family, mesh):
  return small_config(family, **{f"mesh.{k}": v for k, v in mesh.items()}, **{"model.dropout": 0.1})


def _reference(family):
  if family not in _REFERENCE:
    _REFERENCE[family] = run_steps(_config(family, dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1],
                                   NUM_STEPS)
  return _REFERENCE[family]


# Every mesh for co_attention (cross-attention between streams of their own widths is where sharding can
# go wrong); single_stream on the 2x2x2 mix, which shards over all three axes at once. Each case costs a
# compile (~10-20 s on busy CPUs), so this is the budget's choice, not the only one that would pass.
CASES = [("co_attention", m) for m in MESHES] + [("single_stream", "mix2x2x2")]


@pytest.mark.parametrize("family,mesh", CASES)
def test_mesh_trains_like_one_device(family, mesh):
  ref_losses, ref_start, ref_state = _reference(family)
  losses, _, state = run_steps(_config(family, MESHES[mesh]), jax.devices(), NUM_STEPS,
                               start_state=ref_start)
  assert np.all(np.abs(np.diff(ref_losses)) > 1e-4), "steps must change the loss for the test to bite"
  np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=LOSS_ATOL)
  diff = max_abs_diff(state.params, ref_state.params)
  print(f"{family} {mesh}: max |loss diff| {np.max(np.abs(losses - ref_losses)):.2e}, "
        f"max |param diff| {diff:.2e}")
  assert diff < PARAM_ATOL
  assert int(state.step) == NUM_STEPS
