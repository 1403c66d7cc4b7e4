"""orbax checkpoints of the train state, the input pipeline's position and the resolved config.

Saves are asynchronous and atomic: orbax writes into a temporary directory and renames it when the
save is complete, marking it with `commit_success.txt`. A directory a crash left behind (a temporary
one, or a step without its marker or items) is never restored: `restore` logs it as skipped and falls
back to the latest complete checkpoint (DESIGN.md section 7).
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vlfusion.training.workdir import workdir_path

ITEMS = ("state", "data", "config")
COMMIT_MARKER = "commit_success.txt"


class CheckpointMismatchError(ValueError):
  """A checkpoint whose parameters do not fit the model the config builds."""


def checkpoint_dir(workdir: Any) -> epath.Path:
  """`workdir/checkpoints`; a local workdir is made absolute, a `gs://...` one is left as it is."""
  return workdir_path(workdir) / "checkpoints"


def incomplete_checkpoints(directory: Any) -> dict[str, str]:
  """Entries of `directory` that a crash left incomplete, each with the reason."""
  found = {}
  directory = epath.Path(directory)
  if not directory.is_dir():
    return found
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    name = path.name
    if not path.is_dir():
      continue
    if ".orbax-checkpoint-tmp" in name:
      found[name] = "temporary directory of a save that never finished"
    elif name.isdigit():
      if not (path / COMMIT_MARKER).exists():
        found[name] = f"no {COMMIT_MARKER}: the save did not complete"
      else:
        missing = [i for i in ("state", "data") if not (path / i).is_dir()]
        if missing:
          found[name] = f"missing items {missing}"
  return found


def make_manager(workdir: Any, train_config: Any, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` keeping the last `train.keep_checkpoints`.

  When `train.best_metric` names an eval metric, the best `train.keep_best_checkpoints` by that metric
  are kept as well: the highest with `train.best_mode="max"`, the lowest with `"min"`.
  """
  directory = checkpoint_dir(workdir)
  for name, reason in incomplete_checkpoints(directory).items():
    logging.warning("Checkpoint %s/%s is incomplete (%s); it will not be restored.",
                    directory, name, reason)
  policies: list[Any] = [ocp.checkpoint_managers.LatestN(train_config.keep_checkpoints)]
  best_metric = train_config.get("best_metric", "")
  best_mode = train_config.get("best_mode", "max")
  metric_fn = (lambda metrics: metrics[best_metric]) if best_metric else None
  if best_metric:
    # BestN sorts by the metric (descending with `reverse`) and keeps the last n of that order.
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=metric_fn,
        reverse=best_mode == "min",
        n=train_config.get("keep_best_checkpoints", 1),
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
  """Starts an asynchronous save of the state, the pipeline position and the config at `step`."""
  try:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
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


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
            ) -> tuple[Any, dict, int] | None:
  """Restores (state, data_state, step) into the shardings of `abstract_state`.

  With `step=None`, tries complete checkpoints from the latest down, skipping (and logging) any that
  cannot be read; returns None when there is none. An explicit `step` must exist and be readable.
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
      logging.warning("Skipping checkpoint %s/%d: its metadata cannot be read (%r).",
                      directory, candidate, e)
      continue
    check_compatible(have, abstract_state, f"{directory}/{candidate}")
    try:
      restored = manager.restore(
          candidate,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
          ),
      )
    except (OSError, ValueError) as e:
      if step is not None:
        raise
      logging.warning("Skipping checkpoint %s/%d: it could not be read (%s).",
                      directory, candidate, e)
      continue
    logging.info("Restored checkpoint %s/%d.", directory, candidate)
    return restored["state"], dict(restored["data"] or {}), candidate
  return None


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The config saved with the checkpoint at `step`, or None if it has none."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
                ["config"])
  except (OSError, ValueError, KeyError):
    return None
