"""orbax checkpoints of the train state and the input pipeline's position (DESIGN.md section 6)."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging


def make_manager(workdir: str, train_config: Any) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` keeping the last `keep_checkpoints`, saving asynchronously."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=train_config.keep_checkpoints,
      create=True,
      enable_async_checkpointing=True,
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=options,
      item_names=("state", "data"),
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         force: bool = False) -> bool:
  """Starts an asynchronous save of `state` and the pipeline position at `step`."""
  return manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
      force=force,
  )


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
            ) -> tuple[Any, dict, int] | None:
  """Restores (state, data_state, step) into the shardings of `abstract_state`; None if no checkpoint."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if step not in manager.all_steps():
    raise FileNotFoundError(
        f"no checkpoint at step {step} in {manager.directory}; available: {manager.all_steps()}"
    )
  logging.info("Restoring checkpoint at step %d from %s", step, manager.directory)
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
      ),
  )
  return restored["state"], dict(restored["data"] or {}), step
