"""A hybrid mesh for several TPU slices over DCN, on 8 simulated devices split into 2 "slices" of 4: the
DCN part of an axis is its outer part, so only the data axis's all-reduce crosses slices."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tests.scaling.small_configs import small_config
from vlfusion import partitioning
from vlfusion.configuration import ConfigError


def _slice(device):
  return device.id // 4  # devices 0-3: slice 0; 4-7: slice 1.


def test_dcn_splits_the_outer_part_of_the_data_axis():
  config = small_config("co_attention", **{"mesh.data": 4, "mesh.fsdp": 2, "mesh.dcn_data": 2})
  mesh = partitioning.make_mesh(config.mesh, jax.devices()[:8], granule_of=_slice)
  assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.shape == (4, 2, 1)
  slices = np.vectorize(_slice)(mesh.devices)
  assert (slices[:2] == 0).all() and (slices[2:] == 1).all(), slices
  # Each fsdp group (which all-gathers weights in every layer) stays inside one slice.
  assert all(len(set(slices[i].ravel())) == 1 for i in range(4))
  # A batch over (data, fsdp): rows 0-7 live on slice 0, rows 8-15 on slice 1.
  batch = jax.device_put(np.arange(16.0), NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
  for shard in batch.addressable_shards:
    assert set(np.asarray(shard.data) // 8) == {_slice(shard.device)}


def test_dcn_sizes_must_match_the_slices():
  config = small_config("co_attention", **{"mesh.data": 4, "mesh.fsdp": 2, "mesh.dcn_data": 3})
  with pytest.raises(ConfigError, match="config.mesh.dcn_data=3 .* divide the data axis"):
    partitioning.make_mesh(config.mesh, jax.devices()[:8], granule_of=_slice)
  config.mesh.dcn_data = 2
  with pytest.raises(ConfigError, match="asks for 2 slices .* form 1"):
    partitioning.make_mesh(config.mesh, jax.devices()[:8])  # simulated CPU devices: one process.
