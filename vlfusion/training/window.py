"""The logging window: per-step metrics summed on the device, read by the host only at logging steps.

Reading a metric on the host waits for the device; doing it every step would stop the host from queueing
the next steps while the current one runs. So each step's scalars are added into a small on-device tree
(asynchronously, like the step itself), and the host reads that tree once per logging window: the
average of every metric over the window's finite steps, how many steps were not finite, which
objectives were at fault, the range of those steps and the longest run of them in a row.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Scalars of the train step that are not averaged: the counter itself, and the learning rate (a
# function of the step, reported at the window's last step).
NOT_AVERAGED = ("nonfinite", "learning_rate")
_NO_STEP = np.iinfo(np.int32).max


def empty(metric_names: tuple[str, ...], run: jax.Array | int = 0) -> dict[str, Any]:
  """A window with no steps; `run` carries the non-finite steps in a row that ended the last one."""
  zeros = lambda: jnp.zeros((), jnp.float32)  # noqa: E731
  return {
      "sums": {k: zeros() for k in metric_names if k not in NOT_AVERAGED},
      "bad_losses": {k: zeros() for k in metric_names if k.endswith("_loss")},
      "finite_steps": zeros(),
      "nonfinite_steps": zeros(),
      "first_bad": jnp.asarray(_NO_STEP, jnp.int32),
      "last_bad": jnp.zeros((), jnp.int32),
      "run": jnp.asarray(run, jnp.int32),
      "longest_run": jnp.asarray(run, jnp.int32),
  }


def add(window: dict[str, Any], metrics: dict[str, jax.Array], step: jax.Array) -> dict[str, Any]:
  """`window` with the scalars of `step` (the step just taken, counted from 1) added; pure, jittable.

  A step whose update was skipped (`nonfinite` = 1) counts as non-finite and adds nothing to the sums,
  so one bad step does not turn the window's averages into NaN.
  """
  bad = metrics["nonfinite"] > 0
  good = jnp.logical_not(bad).astype(jnp.float32)
  step = jnp.asarray(step, jnp.int32)
  run = jnp.where(bad, window["run"] + 1, 0)
  return {
      "sums": {k: s + jnp.where(bad, 0.0, metrics[k].astype(jnp.float32))
               for k, s in window["sums"].items()},
      "bad_losses": {k: c + jnp.logical_not(jnp.isfinite(metrics[k])).astype(jnp.float32)
                     for k, c in window["bad_losses"].items()},
      "finite_steps": window["finite_steps"] + good,
      "nonfinite_steps": window["nonfinite_steps"] + 1.0 - good,
      "first_bad": jnp.where(bad, jnp.minimum(window["first_bad"], step), window["first_bad"]),
      "last_bad": jnp.where(bad, jnp.maximum(window["last_bad"], step), window["last_bad"]),
      "run": run,
      "longest_run": jnp.maximum(window["longest_run"], run),
  }


class Summary:
  """What the host learns from a window it read: averages and the non-finite steps.

  Attributes:
    averages: each metric averaged over the window's finite steps (NaN if there were none).
    nonfinite_steps: how many steps of the window had their update skipped.
    finite_steps: how many had a finite loss and gradient.
    first_bad, last_bad: the first and last of those steps (None if there were none).
    culprits: the objectives whose loss was not finite, or ["gradient or parameters"].
    longest_run: the most non-finite steps in a row, counting a run that began in earlier windows.
    run: the non-finite steps in a row at the window's end (carried into the next window).
  """

  def __init__(self, host_window: dict[str, Any]):
    w = host_window
    finite = float(w["finite_steps"])
    self.averages = {k: (float(v) / finite if finite else float("nan")) for k, v in w["sums"].items()}
    self.nonfinite_steps = int(w["nonfinite_steps"])
    self.finite_steps = int(finite)
    self.first_bad = int(w["first_bad"]) if self.nonfinite_steps else None
    self.last_bad = int(w["last_bad"]) if self.nonfinite_steps else None
    bad = [k[: -len("_loss")] for k, v in sorted(w["bad_losses"].items())
           if float(v) > 0 and k != "loss"]
    self.culprits = bad or ["gradient or parameters"]
    self.longest_run = int(w["longest_run"])
    self.run = int(w["run"])

  def step_range(self) -> str:
    """'step 4' or 'steps 4-9': where the window's non-finite steps were."""
    if self.first_bad == self.last_bad:
      return f"step {self.first_bad}"
    return f"steps {self.first_bad}-{self.last_bad}"


def read(window: dict[str, Any]) -> Summary:
  """Waits for the window's steps and summarises it on the host (the only read of the window)."""
  return Summary(jax.device_get(window))
