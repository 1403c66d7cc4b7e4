"""The pretraining loop, `train`, in named steps: restore or initialise, compile and measure, then per
step: fetch the batch, update, and at logging/evaluation/checkpoint steps read the window of metrics
(non-finite policy), evaluate and save.

Evaluation comes in as a callback (`MakeEvaluation`): training knows when to evaluate and where the
result goes in its record, not how (`vlfusion.experiment.train_and_evaluate` passes the evaluators).

Only logging, evaluation and checkpoint steps wait for the device: between them the host queues steps
as fast as it can fetch batches, and each step's scalars are summed on the device (`window`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from vlfusion import configuration, partitioning
from vlfusion.data import pipeline, prefetch
from vlfusion.errors import ConfigError
from vlfusion.rundir import Workdir
from vlfusion.training import checkpointing, reporting, window
from vlfusion.training import workdir as workdir_lib
from vlfusion.training.optimizer import explain_schedule_change
from vlfusion.training.preemption import Preemption
from vlfusion.training.setup import Setup, check_best_metric, eval_metric_names  # noqa: F401 - re-exported.
from vlfusion.training.train_state import TrainState
from vlfusion.training.train_step import train_step  # noqa: F401 - re-exported.

# (params, step, workdir) -> (the accuracies `train.best_metric` may name, every scalar for TensorBoard and
# metrics.jsonl); it also writes the step's result into the workdir.
EvaluateFn = Callable[[Any, int, str], tuple[dict[str, float], dict[str, float]]]
# Builds the run's `EvaluateFn` from its setup and config, once the workdir has accepted the config.
MakeEvaluation = Callable[[Setup, ml_collections.ConfigDict], EvaluateFn]


class NonFiniteError(FloatingPointError):
  """Training stopped on non-finite losses or gradients, per `config.train.nonfinite_policy`."""


def train_batches(source: Any, start: int, setup: Setup) -> prefetch.TrainBatches:
  """The batches of steps `start`.. as global arrays over the mesh, built ahead by
  `config.data.num_workers` workers: the one place the loop gets its input."""
  return prefetch.train_batches(source, start, setup.config.train.num_steps, setup.config.data,
                                put=lambda b: partitioning.to_global_batch(b, setup.mesh))


def restore_or_initialize(setup: Setup, manager: Any, source: Any, workdir: Any,
                          init_source: Any = None) -> tuple[TrainState, int]:
  """(state, step) from the latest complete checkpoint in `manager`, else a fresh state at step 0
  (started from `init_source`, `config.init`'s source already read, when given)."""
  restored = checkpointing.restore(manager, setup.abstract_state, move_aside=True)
  if restored is None:
    logging.info("No checkpoint in %s: starting from step 0.", workdir)
    return setup.initial_state(workdir, init_source), 0
  state, data_state, start = restored
  pipeline.restore_check(source, data_state)
  logging.info("Resumed from step %d.", start)
  return state, start


def compile_and_measure(setup: Setup, state: TrainState, batch: dict[str, Any], start: int
                        ) -> tuple[Any, dict[str, float], reporting.Throughput]:
  """Compiles the train step for `batch`'s shapes; returns (compiled step, scalars to report once,
  the throughput meter started after compilation)."""
  t = setup.config.train
  compile_start = time.perf_counter()
  step_fn = setup.jit_train_step().lower(state, batch).compile()
  once = {"compile_seconds": time.perf_counter() - compile_start}
  flops = setup.flops_per_device_step(step_fn, batch)
  peak = reporting.peak_flops_per_device(t.peak_flops_per_device,
                                         setup.devices[0].device_kind)
  if flops:
    once["flops_per_step"] = flops * len(setup.devices)
  logging.info(
      "Compiled the train step in %.1fs; %s FLOPs per step (XLA), %s per device; peak %s FLOP/s per "
      "device (%s).", once["compile_seconds"],
      f"{flops * len(setup.devices):.4g}" if flops else "unknown",
      f"{flops:.4g}" if flops else "unknown", f"{peak:.4g}" if peak else "unknown",
      setup.devices[0].device_kind)
  throughput = reporting.Throughput(setup.config.data.global_batch_size, t.num_steps, flops, peak, start)
  return step_fn, once, throughput


class NonfiniteSinceSave:
  """Finite and non-finite steps since the last checkpoint, summed over the windows read in between."""

  def __init__(self):
    self.finite = self.nonfinite = 0

  def add(self, summary: window.Summary) -> None:
    self.finite += summary.finite_steps
    self.nonfinite += summary.nonfinite_steps

  def suspect(self, fraction: float, at_least: int) -> bool:
    """More than `fraction` of the steps since the last save were skipped, and at least `at_least`."""
    return (self.nonfinite >= max(at_least, 2)
            and self.nonfinite > fraction * (self.finite + self.nonfinite))

  def reset(self) -> None:
    self.finite = self.nonfinite = 0


def apply_nonfinite_policy(summary: window.Summary, step: int, train_config: Any, manager: Any,
                           report: bool = True, since_save: NonfiniteSinceSave | None = None) -> None:
  """Logs the window's non-finite steps (their updates were skipped inside the step) when `report`, and
  raises `NonFiniteError` when `train.nonfinite_policy` says to stop, after
  `train.max_consecutive_nonfinite` in a row, or when `since_save` (which this adds the window to) has
  more than `train.max_nonfinite_fraction` of its steps non-finite and at least
  `train.max_consecutive_nonfinite` of them."""
  t = train_config
  if since_save is not None:
    since_save.add(summary)
  if not summary.nonfinite_steps:
    return
  culprits = ", ".join(summary.culprits)
  if report:
    logging.warning(
        "%s: non-finite %s; %d update(s) skipped in the window ending at step %d (longest run: %d in a "
        "row).", summary.step_range(), culprits, summary.nonfinite_steps, step, summary.longest_run)
  fraction = t.max_nonfinite_fraction
  if since_save is not None and since_save.suspect(fraction, t.max_consecutive_nonfinite):
    raise NonFiniteError(
        f"stopping at step {step}: {since_save.nonfinite} of the {since_save.finite + since_save.nonfinite} "
        f"steps since the last checkpoint were non-finite ({culprits}; more than "
        f"config.train.max_nonfinite_fraction={fraction}): the state is suspect and is not saved; "
        f"checkpoints saved so far are intact: {manager.all_steps()}")
  if t.nonfinite_policy == "stop" or summary.longest_run >= t.max_consecutive_nonfinite:
    raise NonFiniteError(
        f"stopping at step {step}: non-finite {culprits} at {summary.step_range()} "
        f"({summary.nonfinite_steps} step(s), longest run {summary.longest_run}; "
        f"config.train.nonfinite_policy={t.nonfinite_policy!r}, "
        f"max_consecutive_nonfinite={t.max_consecutive_nonfinite}); checkpoints saved so far are "
        f"intact: {manager.all_steps()}"
    )


def evaluate(evaluate_fn: EvaluateFn, state: TrainState, step: int, workdir: Any
             ) -> tuple[dict[str, float], dict[str, float]]:
  """Evaluates the current parameters and writes `eval/step_<N>.json`; returns (the accuracies
  `train.best_metric` may name, every scalar for TensorBoard and metrics.jsonl)."""
  return evaluate_fn(state.params, step, workdir)


def train(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False,
          devices: list[jax.Device] | None = None, evaluation: MakeEvaluation | None = None) -> TrainState:
  """Trains for `config.train.num_steps`, resuming from the latest complete checkpoint in `workdir`.

  Resume is exact: the batches, dropout keys and optimizer state of a resumed run are those an
  uninterrupted run would have used. SIGTERM saves a checkpoint at the current step and returns.
  `devices` (default: all) are the devices the mesh spans. Every `config.eval.every_steps` the run
  evaluates with what `evaluation` builds; a config that asks for evaluation without one is refused.
  """
  setup = Setup(config, devices)  # validates before anything is built or compiled.
  if config.eval.every_steps > 0 and evaluation is None:
    raise ConfigError(f"config.eval.every_steps={config.eval.every_steps} but this training was given "
                      "no evaluation: train through vlfusion.experiment.train_and_evaluate, or set it to 0")
  # A new run's `config.init` is read and matched before the workdir is touched: a mistyped path or a
  # checkpoint of another model leaves nothing behind, and the corrected command starts there cleanly.
  init_source = None if Workdir(workdir).complete_steps() else setup.check_init()
  saved_config = workdir_lib.prepare(workdir, config, allow_config_change, write=False)
  source = pipeline.make_batch_source(
      config, config.data.train_split, process_index=jax.process_index(),
      process_count=jax.process_count())
  manager = checkpointing.make_manager(workdir, config.train)
  try:
    state, start = restore_or_initialize(setup, manager, source, workdir, init_source)
  except BaseException:
    manager.close()
    raise
  workdir_lib.write_config(workdir, config)  # only now: the saved state accepted this config.
  if saved_config is not None and start > 0:
    note = explain_schedule_change(config.optimizer, saved_config["train"]["num_steps"],
                                   config.train.num_steps, start)
    if note:
      logging.warning("%s", note)

  evaluate_fn = evaluation(setup, config) if config.eval.every_steps > 0 else None
  config_dict = json.loads(configuration.to_json(config))
  reporter = reporting.MetricsReporter(workdir, start)
  t = config.train
  batches = train_batches(source, start, setup)
  try:
    with (Preemption(t.preemption_check_every_steps) as preemption,
          jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules)):
      step = start
      step_fn = metrics_window = throughput = None
      profile = _Profile(t.profile_steps, Workdir(workdir).tensorboard_dir, start)
      once: dict[str, float] = {}  # reported with the first logged step only.
      since_save = NonfiniteSinceSave()
      while step < t.num_steps:
        batch = next(batches)
        if step_fn is None:
          step_fn, once, throughput = compile_and_measure(setup, state, batch, start)
        profile.before_step(step)
        state, metrics = step_fn(state, batch)
        step += 1
        profile.after_step(step, state)
        if metrics_window is None:
          metrics_window = _DeviceWindow(tuple(sorted(metrics)), setup.mesh)
        metrics_window.add(metrics, step)

        stop = preemption.agreed(step)
        log_now = step % t.log_every_steps == 0 or step == t.num_steps
        eval_now = evaluate_fn is not None and (step % config.eval.every_steps == 0
                                              or step == t.num_steps)
        save_now = (step % t.checkpoint_every_steps == 0 or step == t.num_steps or stop
                    or eval_now and bool(t.best_metric))
        if not (log_now or eval_now or save_now):
          continue  # no host read of this step's results: the host runs ahead.
        record: dict[str, float] = {}
        if log_now or save_now:  # a save waits for the state anyway; never save past a "stop".
          summary = metrics_window.read()
          apply_nonfinite_policy(summary, step, t, manager, report=log_now,  # logged once per window.
                                 since_save=since_save)
          if log_now:
            record.update(_training_scalars(setup, summary, step), **throughput.measure(step), **once)
            once = {}
            metrics_window.reset()
            logging.info("step %d/%d: %s", step, t.num_steps, " ".join(
                f"{k}={v:.4g}" for k, v in sorted(record.items())))
        eval_metrics = None
        if eval_now:
          eval_metrics, eval_record = evaluate(evaluate_fn, state, step, workdir)
          record.update(eval_record)
          throughput.reset(step)  # evaluation time is not training throughput.
        if record:  # one record per step: training scalars and evaluation together.
          reporter.write(step, record)
        if save_now:
          checkpointing.save(manager, step, state, source.state(step), config_dict, eval_metrics)
          since_save.reset()
        if stop:
          logging.warning("Stopped at step %d after SIGTERM; its checkpoint is saved.", step)
          break
      profile.stop(state)
  finally:
    batches.close()
    manager.wait_until_finished()
    manager.close()
    reporter.close()
  return state


class _Profile:
  """Traces `train.profile_steps` steps, from the second step of the run on (the first one waits for the
  compiled program to load), into the TensorBoard folder, where the profile plugin shows them."""

  def __init__(self, num_steps: int, log_dir: Any, start: int):
    self.first, self.last = start + 1, start + 1 + num_steps
    self.enabled = num_steps > 0
    self.log_dir = os.fspath(log_dir)
    self.active = False

  def before_step(self, step: int) -> None:
    if self.enabled and step == self.first:
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after_step(self, step: int, state: Any) -> None:
    if self.active and step >= self.last:
      self.stop(state)

  def stop(self, state: Any) -> None:
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      logging.info("Wrote a profile of steps %d-%d to %s.", self.first + 1, self.last, self.log_dir)


class _DeviceWindow:
  """The logging window held on the devices (replicated), with its jitted update and reset."""

  def __init__(self, names: tuple[str, ...], mesh: jax.sharding.Mesh):
    replicated = partitioning.replicated(mesh)
    self._add = jax.jit(window.add, out_shardings=replicated, donate_argnums=(0,))
    self._reset = jax.jit(lambda w: window.empty(names, w["run"]), out_shardings=replicated)
    self.value = jax.jit(lambda: window.empty(names), out_shardings=replicated)()

  def add(self, metrics: dict[str, jax.Array], step: int) -> None:
    self.value = self._add(self.value, metrics, step)

  def read(self) -> window.Summary:
    return window.read(self.value)

  def reset(self) -> None:
    """Empties the window, keeping the run of non-finite steps it ended with."""
    self.value = self._reset(self.value)


def _training_scalars(setup: Setup, summary: window.Summary, step: int) -> dict[str, float]:
  """The window's averages, its count of non-finite steps, and the learning rate of its last step."""
  return dict(summary.averages, nonfinite=float(summary.nonfinite_steps),
              learning_rate=float(setup.schedule(step - 1)))
