"""SIGTERM (preemption) turns into "save a checkpoint and stop", at a step every process agrees on.

Three cases:

- one process: a SIGTERM handler sets a flag, checked after every step (no communication);
- several processes with JAX's preemption service (on by default in `jax.distributed`): JAX's own
  notifier catches SIGTERM on the host that gets it, tells the others, and
  `multihost_utils.reached_preemption_sync_point(step)` becomes True on every process at the same
  step. Asking is a local check, made every step;
- several processes without that service (`jax_enable_preemption_service=False`): the flags are
  all-gathered every `train.preemption_check_every_steps` steps, not every step.
"""

from __future__ import annotations

import signal

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


def _sync_manager_available() -> bool:
  from jax._src import distributed  # the service's state has no public accessor.

  return (distributed.global_state.client is not None
          and distributed.global_state.preemption_sync_manager is not None)


class Preemption:
  """A context in which `agreed(step)` says whether every process stops (and saves) after `step`."""

  def __init__(self, check_every_steps: int = 1):
    self.check_every_steps = max(int(check_every_steps), 1)
    self.requested = False
    self._previous = None
    self.mode = "local"
    if jax.process_count() > 1:
      self.mode = "sync_point" if _sync_manager_available() else "allgather"

  def __enter__(self):
    if self.mode == "sync_point":
      return self  # JAX's notifier owns SIGTERM; a Python handler would replace it.
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self, step: int) -> bool:
    """True on every process at the same step once any process was asked to stop."""
    if self.mode == "local":
      return self.requested
    if self.mode == "sync_point":
      return multihost_utils.reached_preemption_sync_point(step)
    if step % self.check_every_steps:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array([self.requested]))))
