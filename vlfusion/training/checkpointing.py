"""orbax checkpoints of the train state, the input pipeline's position and the resolved config.

Saves are asynchronous and atomic: orbax writes into a temporary directory and renames it when the
save is complete, marking it with `commit_success.txt`. A directory a crash left behind (a temporary
one, or a step without its marker or items) is never restored: `restore` logs it as skipped and falls
back to the latest complete checkpoint (DESIGN.md section 7).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vlfusion.rundir import COMMIT_MARKER, Workdir, incomplete_checkpoints  # noqa: F401 - re-exported.

ITEMS = ("state", "data", "config")


class CheckpointMismatchError(ValueError):
  """A checkpoint whose parameters do not fit the model the config builds."""


class CheckpointDamagedError(OSError):
  """A checkpoint whose restored values differ from the checksums saved with it."""


# The data item's key for the checksums of the saved state (absent in checkpoints of older versions).
CHECKSUMS = "state_checksums"


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """A position-weighted sum of the bits of `x` (uint32, wrapping): any changed byte changes it."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = jnp.dtype(x.dtype).itemsize
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif size in (1, 2, 4):
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  else:  # 8 bytes: two uint32 words each.
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  flat = bits.reshape(-1)
  weight = jnp.arange(flat.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
  return jnp.sum(flat * weight, dtype=jnp.uint32)


_checksums = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def state_checksums(tree: Any) -> dict[str, int]:
  """{leaf path: checksum} of `tree` (the train state's params and opt_state), computed on the devices."""
  values = jax.device_get(_checksums(tree))
  return {jax.tree_util.keystr(p): int(v) for p, v in jax.tree_util.tree_flatten_with_path(values)[0]}


def checksummed(state: Any) -> dict[str, Any]:
  """The part of a train state whose checksums a checkpoint carries: its params and optimizer state."""
  return {"params": state.params, "opt_state": state.opt_state}


def verify_checksums(tree: Any, saved: dict[str, int] | None, where: str) -> None:
  """Raises `CheckpointDamagedError` naming the leaves of `tree` whose checksums differ from `saved`
  (leaves `saved` lacks are not checked); a checkpoint saved without checksums is not checked."""
  if not saved:
    return
  bad = [k for k, v in state_checksums(tree).items() if k in saved and saved[k] != v]
  if bad:
    raise CheckpointDamagedError(
        f"checkpoint {where} is damaged: {len(bad)} of its arrays differ from the checksums saved with "
        f"it ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})")


def move_aside(directory: Any, name: str, reason: str) -> epath.Path | None:
  """Renames the step `directory/name` to `<name>.torn-<UTC time>` (process 0), so that the run resumes
  from the step before it and can save this step again; the files stay for inspection. Returns the new
  path (None on other processes)."""
  if jax.process_index() != 0:
    return None
  source = epath.Path(directory) / name
  target = source.with_name(f"{name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
  source.rename(target)
  logging.warning("Moved checkpoint %s aside to %s (%s); the run resumes from the step before it.",
                  source, target.name, reason)
  return target


def make_manager(workdir: Any, train_config: Any, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` keeping the last `train.keep_checkpoints`.

  When `train.best_metric` names an eval metric, the best `train.keep_best_checkpoints` by that metric
  are kept as well: the highest with `train.best_mode="max"`, the lowest with `"min"`. Unless
  `read_only`, a step a crash left incomplete is moved aside (`move_aside`): left in place, it would
  block the save of its step number for ever.
  """
  directory = Workdir(workdir).checkpoints_dir
  for name, reason in incomplete_checkpoints(directory).items():
    if not read_only and name.isdigit():
      move_aside(directory, name, reason)
      continue
    logging.warning("Checkpoint %s/%s is incomplete (%s); it will not be restored.",
                    directory, name, reason)
  policies: list[Any] = [ocp.checkpoint_managers.LatestN(train_config.keep_checkpoints)]
  best_metric = train_config.best_metric
  best_mode = train_config.best_mode
  metric_fn = (lambda metrics: metrics[best_metric]) if best_metric else None
  if best_metric:
    # BestN sorts by the metric (descending with `reverse`) and keeps the last n of that order.
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=metric_fn,
        reverse=best_mode == "min",
        n=train_config.keep_best_checkpoints,
        keep_checkpoints_without_metrics=False,
    ))
  options = ocp.CheckpointManagerOptions(
      # orbax writes a checkpoint's metrics to disk (and reads them back after a restart) only with
      # `best_fn` set; without it a resumed run would see the old checkpoints as unranked and delete them.
      # The preservation policy, not `best_fn`, decides what is kept.
      best_fn=metric_fn,
      best_mode=best_mode,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      create=not read_only,
      read_only=read_only,
      enable_async_checkpointing=True,
  )
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
              "config": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         config_dict: dict, metrics: dict | None = None) -> None:
  """Starts an asynchronous save of the state, the pipeline position and the config at `step`; the
  data item also holds the checksums of the params and optimizer state, which restores verify."""
  checksums = state_checksums(checksummed(state))
  try:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({**data_state, CHECKSUMS: checksums}),
            config=ocp.args.JsonSave(config_dict),
        ),
        metrics=metrics,
        force=True,
    )
  except OSError as e:
    raise OSError(
        f"could not write the checkpoint of step {step} to {manager.directory}: {e}. "
        f"Checkpoints already saved ({manager.all_steps()}) are intact."
    ) from e


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def saved_param_shapes(manager: ocp.CheckpointManager, step: int) -> dict[str, tuple[int, ...]]:
  """{parameter path: shape} of the checkpoint at `step`, read from its metadata alone."""
  saved = manager.item_metadata(step)["state"]
  tree = saved.tree if hasattr(saved, "tree") else saved
  return _flat_shapes(tree["params"])


def check_compatible(have: dict[str, tuple[int, ...]], abstract_state: Any, where: str) -> None:
  """Raises `CheckpointMismatchError` naming the parameters that differ from the model's."""
  want = _flat_shapes(abstract_state.params)
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shape = sorted(k for k in set(have) & set(want) if have[k] != want[k])
  if not (missing or unexpected or shape):
    return

  def listing(names, fmt=str):
    more = f" (and {len(names) - 10} more)" if len(names) > 10 else ""
    return ", ".join(fmt(n) for n in names[:10]) + more

  parts = []
  if missing:
    parts.append(f"{len(missing)} parameters the model needs are not in the checkpoint: "
                 + listing(missing))
  if unexpected:
    parts.append(f"{len(unexpected)} checkpoint parameters are not in the model: "
                 + listing(unexpected))
  if shape:
    parts.append(f"{len(shape)} parameters differ in shape: "
                 + listing(shape, lambda k: f"{k} checkpoint {have[k]} vs model {want[k]}"))
  raise CheckpointMismatchError(
      f"the checkpoint {where} was written by another architecture than the config describes; "
      + "; ".join(parts)
  )


def _skeleton(tree: Any) -> Any:
  """The structure of a state tree as orbax saves it: shapes at the leaves, namedtuples as dicts of
  their fields (None when they have none), tuples as lists; comparable between a checkpoint's metadata
  and an abstract state."""
  if hasattr(tree, "shape"):
    return tuple(tree.shape)
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return {f: _skeleton(getattr(tree, f)) for f in tree._fields} if tree._fields else None
  if hasattr(tree, "keys"):
    return {str(k): _skeleton(tree[k]) for k in tree.keys()}
  if isinstance(tree, (list, tuple)):
    return [_skeleton(x) for x in tree] if tree else None
  return tree


def _differences(saved: Any, wanted: Any, path: str = "") -> list[str]:
  if isinstance(saved, dict) and isinstance(wanted, dict):
    out = [f"{path}/{k}: in the checkpoint only" for k in sorted(set(saved) - set(wanted))]
    out += [f"{path}/{k}: not in the checkpoint" for k in sorted(set(wanted) - set(saved))]
    for k in sorted(set(saved) & set(wanted)):
      out += _differences(saved[k], wanted[k], f"{path}/{k}")
    return out
  if isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
    return [d for i, (a, b) in enumerate(zip(saved, wanted, strict=True))
            for d in _differences(a, b, f"{path}/{i}")]
  if saved == wanted:
    return []
  describe = lambda x: f"{len(x)} entries" if isinstance(x, list) else "nothing" if x is None else repr(x)
  return [f"{path or '/'}: checkpoint {describe(saved)}, config {describe(wanted)}"]


def state_differences(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> list[str]:
  """Where the saved state's structure (optimizer state included) differs from `abstract_state`'s."""
  saved = manager.item_metadata(step)["state"]
  saved = saved.tree if hasattr(saved, "tree") else saved
  wanted = {"params": abstract_state.params, "opt_state": abstract_state.opt_state,
            "step": abstract_state.step, "rng": abstract_state.rng}
  return _differences(_skeleton({k: saved.get(k) for k in wanted}), _skeleton(wanted))


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None,
            move_aside: bool = False) -> tuple[Any, dict, int] | None:
  """Restores (state, data_state, step) into the shardings of `abstract_state`.

  With `step=None`, tries complete checkpoints from the latest down, skipping (and logging) any that
  cannot be read — with `move_aside` (the trainer), moving them aside so that their step can be saved
  again; returns None when there is none. A checkpoint that cannot be restored because the config
  builds another state (a changed optimizer: clipping, lr multipliers, accumulation) is never skipped:
  `CheckpointMismatchError` names the differences and nothing is changed. An explicit `step` must exist
  and be readable.
  """
  directory = str(manager.directory)
  incomplete = incomplete_checkpoints(directory)
  available = sorted((s for s in manager.all_steps() if str(s) not in incomplete), reverse=True)
  if step is not None:
    if step not in available:
      reason = incomplete.get(str(step), "no such checkpoint")
      raise FileNotFoundError(
          f"cannot restore step {step} from {directory} ({reason}); complete checkpoints: "
          f"{sorted(available)}"
      )
    candidates = [step]
  else:
    candidates = available
  for candidate in candidates:
    try:
      have = saved_param_shapes(manager, candidate)
    except Exception as e:  # noqa: BLE001 - any unreadable metadata means a torn checkpoint.
      if step is not None:
        raise OSError(f"checkpoint {directory}/{candidate} cannot be read: {e!r}") from e
      _skip(manager, directory, candidate, f"its metadata cannot be read ({e!r})", move_aside)
      continue
    check_compatible(have, abstract_state, f"{directory}/{candidate}")
    try:
      restored = manager.restore(
          candidate,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
          ),
      )
    except Exception as e:  # noqa: BLE001 - narrowed by `_is_read_error` below.
      if not _is_read_error(e):
        raise
      differences = state_differences(manager, candidate, abstract_state)
      if differences:
        raise CheckpointMismatchError(
            f"the checkpoint {directory}/{candidate} holds a train state of another structure than "
            f"this config builds (a changed optimizer setting, e.g. optimizer.grad_clip_norm, "
            f"lr_multipliers or grad_accum_steps): " + "; ".join(differences[:10])
            + (f" (and {len(differences) - 10} more)" if len(differences) > 10 else "")
            + ". Nothing was changed: resume with the settings the run was saved with, or start a "
            "new workdir (with config.init.checkpoint to begin from its parameters).") from e
      if step is not None:
        raise
      _skip(manager, directory, candidate, f"it could not be read ({e})", move_aside)
      continue
    data = dict(restored["data"] or {})
    restored_state = restored["state"]
    try:
      verify_checksums(checksummed(restored_state), data.pop(CHECKSUMS, None), f"{directory}/{candidate}")
    except CheckpointDamagedError as e:
      if step is not None:
        raise
      _skip(manager, directory, candidate, str(e), move_aside)
      continue
    logging.info("Restored checkpoint %s/%d.", directory, candidate)
    return restored_state, data, candidate
  return None


def _is_read_error(error: BaseException) -> bool:
  """Whether `error` is, or was caused by, an OSError or ValueError: what a damaged file raises. orbax wraps
  a tensorstore read error (e.g. the byte range of a truncated data file) in a bare `Exception`; anything
  else (a bug) must not make a good checkpoint look damaged."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, (OSError, ValueError)):
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


def _skip(manager: ocp.CheckpointManager, directory: str, step: int, reason: str, move: bool) -> None:
  if move:
    move_aside(directory, str(step), reason)
    manager.reload()
  else:
    logging.warning("Skipping checkpoint %s/%d: %s.", directory, step, reason)


def saved_checksums(manager: ocp.CheckpointManager, step: int) -> dict[str, int] | None:
  """The checksums saved with the checkpoint at `step` (None for a checkpoint without them)."""
  try:
    data = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  except (OSError, ValueError, KeyError):
    return None
  return (data or {}).get(CHECKSUMS)


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The config saved with the checkpoint at `step`, or None if it has none."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
                ["config"])
  except (OSError, ValueError, KeyError):
    return None


def restore_params(workdir: Any, abstract_state: Any, train_config: Any, step: int | None = None
                   ) -> tuple[Any, int]:
  """(params, step) of the checkpoint at `step` (the latest complete one by default), laid out as
  `abstract_state.params` (shapes, dtypes, shardings) and checked against it and its saved checksums.

  Only the parameters are read: the optimizer moments (two thirds of an Adam state) stay on disk.
  """
  directory = Workdir(workdir).checkpoints_dir
  manager = make_manager(workdir, train_config, read_only=True)
  try:
    incomplete = incomplete_checkpoints(directory)
    available = sorted(s for s in manager.all_steps() if str(s) not in incomplete)
    if not available:
      raise FileNotFoundError(f"no complete checkpoint under {directory}")
    if step is None:
      step = available[-1]
    elif step not in available:
      raise FileNotFoundError(f"cannot evaluate step {step}: {directory} has no complete checkpoint "
                              f"of it ({incomplete.get(str(step), 'no such checkpoint')}); complete "
                              f"checkpoints: {available}")
    where = f"{directory}/{step}"
    try:
      have = saved_param_shapes(manager, step)
    except FileNotFoundError:
      raise
    except Exception as e:  # noqa: BLE001 - unreadable metadata: name the checkpoint, not the parser.
      raise OSError(f"checkpoint {where} cannot be read: its state metadata "
                    f"({where}/state/_METADATA) is damaged or missing ({e!r})") from e
    check_compatible(have, abstract_state, where)
    checksums = saved_checksums(manager, step)
  finally:
    manager.close()
  # A partial restore of the saved train state: only its `params` subtree is read from disk.
  target = {"params": abstract_state.params}
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    try:
      restored = checkpointer.restore(
          directory / str(step) / "state",
          args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                      restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    except (OSError, ValueError) as e:
      raise OSError(f"checkpoint {where} cannot be read: {e}") from e
  verify_checksums({"params": restored["params"]}, checksums, where)
  logging.info("Restored the parameters of %s.", where)
  return restored["params"], int(step)
