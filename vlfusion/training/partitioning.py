"""Device mesh from `config.mesh`, and shardings from logical axis names (DESIGN.md section 3)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vlfusion.configuration import resolve_mesh_shape

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: Any, devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (all devices by default) with Auto axis types.

  Auto axes, because linen's `with_logical_constraint` fails on the Explicit axes `jax.make_mesh`
  uses by default.
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_mesh_shape(mesh_config, len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  return jax.make_mesh(
      shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def logical_rules(mesh_config: Any) -> tuple[tuple[str, Any], ...]:
  """`config.mesh.rules` as the tuple of (logical, mesh axes) pairs flax expects."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in mesh_config.rules)


def state_shardings(abstract_boxed_state: Any, mesh: jax.sharding.Mesh, rules: Any) -> Any:
  """Shardings for a train state whose parameters carry logical names (from `jax.eval_shape`)."""
  specs = nn.get_partition_spec(abstract_boxed_state)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (example) dimension over the data-parallel axes; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def to_global_batch(local_batch: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )
