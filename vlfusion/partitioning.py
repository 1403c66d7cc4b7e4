"""Device mesh from `config.mesh`, and shardings from logical axis names (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec

from vlfusion.configuration import resolve_mesh_shape
from vlfusion.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: Any, devices: list[jax.Device] | None = None,
              granule_of: Callable[[Any], int] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (all devices by default) with Auto axis types.

  Auto axes, because linen's `with_logical_constraint` fails on the Explicit axes `jax.make_mesh`
  uses by default. With `mesh.dcn_{data,fsdp,tensor}` > 1 the mesh is hybrid: that many groups of
  devices joined by the slow data-centre network (TPU slices; processes elsewhere) split the axis, and
  the rest of it runs inside a group (`mesh_utils.create_hybrid_device_mesh`). `granule_of(device)`
  names a device's group (default: its `slice_index`, else its `process_index`).
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_mesh_shape(mesh_config, len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  dcn = dcn_shape(mesh_config, sizes)
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if all(n == 1 for n in dcn):
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  ici = tuple(total // n for total, n in zip(shape, dcn, strict=True))
  granule_of = granule_of or _slice_or_process
  granules = sorted({granule_of(d) for d in devices})
  if len(granules) != int(np.prod(dcn)):
    raise ConfigError(
        f"config.mesh.dcn_* = {dict(zip(MESH_AXES, dcn, strict=True))} asks for {int(np.prod(dcn))} slices "
        f"joined over DCN, but the {len(devices)} devices form {len(granules)}")
  tagged = [_Granule(d, granule_of(d)) for d in devices]
  grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, tagged, allow_split_physical_axes=True)
  grid = np.vectorize(lambda t: t.device, otypes=[object])(grid)
  return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def _slice_or_process(device: Any) -> int:
  slice_index = getattr(device, "slice_index", None)
  return device.process_index if slice_index is None else slice_index


class _Granule:
  """A device seen through `slice_index` = its group, for `create_hybrid_device_mesh`."""

  def __init__(self, device: Any, granule: int):
    self.device, self.slice_index = device, granule

  def __getattr__(self, name: str) -> Any:
    return getattr(self.device, name)


def dcn_shape(mesh_config: Any, sizes: dict[str, int]) -> tuple[int, ...]:
  """(dcn_data, dcn_fsdp, dcn_tensor): how many slices split each axis (1 = none); each divides its axis."""
  out = []
  for axis in MESH_AXES:
    n = int(mesh_config.get(f"dcn_{axis}", 1) or 1)
    if n < 1 or sizes[axis] % n:
      raise ConfigError(f"config.mesh.dcn_{axis}={n} must be >= 1 and divide the {axis} axis "
                        f"(config.mesh.{axis} resolves to {sizes[axis]})")
    out.append(n)
  return tuple(out)


def logical_rules(mesh_config: Any) -> tuple[tuple[str, Any], ...]:
  """`config.mesh.rules` as the tuple of (logical, mesh axes) pairs flax expects."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in mesh_config.rules)


def state_shardings(abstract_boxed_state: Any, mesh: jax.sharding.Mesh, rules: Any) -> Any:
  """Shardings for a train state whose parameters carry logical names (from `jax.eval_shape`)."""
  specs = nn.get_partition_spec(abstract_boxed_state)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


# Where a logical axis's size comes from in the config, for the error of a dimension the mesh cannot split.
LOGICAL_AXIS_FIELDS = {
    "vocab": "config.model.text.vocab_size",
    "heads": "config.model.{text,image}.num_heads (or a cross-attention's heads)",
    "mlp": "config.model.{text,image}.mlp_dim",
    "embed": "config.model.{text,image}.hidden_size",
    "kv": "hidden_size / num_heads",
}


def check_divisible(abstract_boxed_state: Any, shardings: Any, mesh: jax.sharding.Mesh) -> None:
  """Raises ConfigError naming the parameter, its logical axis, the config field behind it and the mesh
  axes, when a dimension is not divisible by the devices that split it (instead of JAX's
  IndivisibleError while the state is created)."""
  boxed = jax.tree_util.tree_flatten_with_path(
      abstract_boxed_state, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  flat_shardings = jax.tree_util.tree_leaves(
      shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  for (path, leaf), sharding in zip(boxed, flat_shardings, strict=True):
    if not isinstance(sharding, NamedSharding):
      continue
    names = leaf.names if isinstance(leaf, nn.Partitioned) else (None,) * len(sharding.spec)
    shape = nn.unbox(leaf).shape
    for dim, axes in enumerate(sharding.spec):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else tuple(axes)
      parts = int(np.prod([mesh.shape[a] for a in axes]))
      if shape[dim] % parts:
        logical = names[dim] if dim < len(names) else None
        field = LOGICAL_AXIS_FIELDS.get(logical, "the model's sizes")
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        raise ConfigError(
            f"parameter {name} of shape {tuple(shape)}: dimension {dim} "
            f"({shape[dim]}, logical axis {logical!r}, from {field}) is not divisible by the "
            f"{parts} devices of mesh axes {axes} ("
            + ", ".join(f"config.mesh.{a}={mesh.shape[a]}" for a in axes)
            + f"); change that size, the mesh, or config.mesh.rules for {logical!r}")


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
