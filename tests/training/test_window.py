"""The logging window: metrics averaged over the window's finite steps on the device, non-finite steps
counted with their range and culprits, and the run of bad steps carried from one window to the next."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlfusion.training import window

NAMES = ("grad_norm", "itm_loss", "learning_rate", "loss", "mlm_loss", "nonfinite")


def _metrics(loss, mlm_loss, itm_loss=0.5, grad_norm=1.0, nonfinite=0.0):
  values = dict(loss=loss, mlm_loss=mlm_loss, itm_loss=itm_loss, grad_norm=grad_norm, nonfinite=nonfinite,
                learning_rate=1e-3)
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def test_window_averages_each_metric_over_its_finite_steps():
  add = jax.jit(window.add)
  w = window.empty(NAMES)
  for step, (loss, grad_norm) in enumerate([(4.0, 1.0), (2.0, 3.0), (6.0, 5.0)], start=1):
    w = add(w, _metrics(loss, loss - 0.5, grad_norm=grad_norm), step)
  summary = window.read(w)
  # The means, not the last batch's 6.0 / 5.5 / 5.0.
  assert summary.averages["loss"] == pytest.approx(4.0)
  assert summary.averages["mlm_loss"] == pytest.approx(3.5)
  assert summary.averages["grad_norm"] == pytest.approx(3.0)
  assert summary.nonfinite_steps == 0 and summary.first_bad is None
  assert "learning_rate" not in summary.averages


def test_nonfinite_steps_are_counted_not_averaged_and_runs_carry_over():
  add = jax.jit(window.add)
  w = window.empty(NAMES)
  w = add(w, _metrics(2.0, 1.5), 1)
  w = add(w, _metrics(np.nan, np.nan, nonfinite=1.0), 2)
  w = add(w, _metrics(4.0, 3.5), 3)
  w = add(w, _metrics(np.inf, 1.0, itm_loss=np.inf, nonfinite=1.0), 4)
  w = add(w, _metrics(1.0, 1.0, grad_norm=np.nan, nonfinite=1.0), 5)
  s = window.read(w)
  assert s.averages["loss"] == pytest.approx(3.0)  # steps 1 and 3 only.
  assert s.nonfinite_steps == 3 and (s.first_bad, s.last_bad) == (2, 5)
  assert s.step_range() == "steps 2-5"
  assert s.culprits == ["itm", "mlm"]
  assert s.longest_run == 2 and s.run == 2
  # The next window starts with the run of 2 bad steps that ended this one.
  w = window.empty(NAMES, w["run"])
  w = add(w, _metrics(1.0, 1.0, grad_norm=np.nan, nonfinite=1.0), 6)
  s = window.read(w)
  assert s.longest_run == 3 and s.step_range() == "step 6"
  assert s.culprits == ["gradient or parameters"] and np.isnan(s.averages["loss"])
