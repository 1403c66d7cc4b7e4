"""What training and evaluation share: the validated config, mesh, model, optimizer and state layout."""

from __future__ import annotations

import copy
import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from vlfusion import configuration, cpu_threads, partitioning, tasks
from vlfusion.data import compatibility
from vlfusion.models import build_model
from vlfusion.training import initialization, losses, reporting, train_state
from vlfusion.training.optimizer import check_lr_multipliers, make_optimizer
from vlfusion.training.train_state import TrainState
from vlfusion.training.train_step import train_step


class Setup:
  """What training and evaluation share: validated config, mesh, model, optimizer, state layout."""

  def __init__(self, config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None):
    """`devices` (all of them by default) are the mesh's; a subset lets one process build several."""
    self.devices = list(devices if devices is not None else jax.devices())
    configuration.validate(config, num_devices=len(self.devices))
    cpu_threads.check_collective_threads(self.devices)  # a clear error, not an abort 40 s into training.
    compatibility.resolve_num_answers(config)  # model.vqa.num_answers=0: the data's answer vocabulary.
    check_best_metric(config)
    unknown = [n for n, w in config.objectives.items() if w > 0 and n not in losses.OBJECTIVES]
    if unknown:
      raise configuration.ConfigError(
          f"config.objectives {unknown} have weight > 0 but no loss is implemented for them; "
          f"implemented: {sorted(losses.OBJECTIVES)}"
      )
    self.config = config
    self.mesh = partitioning.make_mesh(config.mesh, self.devices)
    self.rules = partitioning.logical_rules(config.mesh)
    self.model = build_model(config.model)
    self.optimizer, self.schedule = make_optimizer(config.optimizer, config.train.num_steps)
    self.init_fn = train_state.make_init_fn(self.model, self.optimizer, config)
    with jax.set_mesh(self.mesh):
      self.abstract_state, self.state_shardings = train_state.abstract_state(
          self.init_fn, self.mesh, self.rules)
    check_lr_multipliers(config.optimizer, self.abstract_state.params)

  def check_init(self) -> initialization.Source | None:
    """The source `config.init` names, read and matched against this model's parameter shapes (a
    `ConfigError` if it is missing or another model: `initialization.match`); None without one. Cheap
    enough to run before anything is written: no parameter is initialised."""
    if not initialization.requested(self.config):
      return None
    source = initialization.load(self.config)
    initialization.match(source, self.abstract_state.params, self.config)
    return source

  def initial_state(self, workdir: str | None = None, source: initialization.Source | None = None
                    ) -> TrainState:
    """A freshly initialised, sharded state; parameters named by `config.init` or streams named by
    `model.{text,image}.init_from` are loaded from their checkpoints (what was loaded and what was not
    is logged, and for `config.init` written to `workdir/init_report.json`). `source` is `config.init`'s
    when `check_init` has read it already."""
    if source is None and initialization.requested(self.config):
      source = initialization.load(self.config)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      state = train_state.create_sharded_state(
          self.init_fn, self.state_shardings, self.config.train.seed)
    if source is not None:
      state = state.replace(params=initialization.restore(source, state.params, self.config, workdir)[0])
    m = self.config.model
    if m.text.init_from or m.image.init_from:
      from vlfusion.convert import init_from  # safetensors readers; no torch needed.

      params, report = init_from.apply(self.config, state.params)
      logging.info("Initialised from checkpoints:\n%s", report.summary())
      state = state.replace(params=params)
    return state

  def step_function(self, grad_accum_steps: int | None = None):
    """`train_step` with this run's model, optimizer and objectives bound (not yet jitted)."""
    t = self.config.train
    return functools.partial(
        train_step, model=self.model, optimizer=self.optimizer, schedule=self.schedule,
        objective_weights=dict(self.config.objectives),
        grad_accum_steps=(self.config.optimizer.grad_accum_steps if grad_accum_steps is None
                          else grad_accum_steps),
        nan_injection=(None if t.inject_nan_at_step < 0 else
                       (t.inject_nan_at_step, t.inject_nan_objective)),
        mlm_probability=float(self.config.data.mlm_probability),
    )

  def jit_train_step(self, grad_accum_steps: int | None = None):
    """`train_step` jit-compiled over the mesh with explicit shardings and a donated state."""
    return jax.jit(
        self.step_function(grad_accum_steps),
        in_shardings=(self.state_shardings, partitioning.batch_sharding(self.mesh)),
        out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
        donate_argnums=(0,),
    )

  def flops_per_device_step(self, compiled: Any, batch: dict[str, Any]) -> float | None:
    """FLOPs one device executes per train step, from XLA's cost analysis of the compiled step.

    XLA counts a loop body once, so with gradient accumulation (a scan over micro-batches) or scanned
    layer stacks (`model.scan_layers`) the count comes from the unpartitioned HLO of the same step with
    neither (the same computation unrolled), divided by the devices. None when the backend has no cost
    analysis: reporting must never stop a run.
    """
    try:
      if self.config.optimizer.grad_accum_steps == 1 and not self.config.model.scan_layers:
        return reporting.cost_flops(compiled.cost_analysis())
      unrolled = self
      if self.config.model.scan_layers:
        config = copy.deepcopy(self.config)
        config.model.scan_layers = False
        unrolled = Setup(config, self.devices)
      with jax.set_mesh(unrolled.mesh), nn.logical_axis_rules(unrolled.rules):
        lowered = unrolled.jit_train_step(grad_accum_steps=1).lower(unrolled.abstract_state, batch)
      flops = reporting.cost_flops(lowered.cost_analysis())
    except Exception as e:  # noqa: BLE001 - e.g. a backend without cost analysis.
      logging.warning("No FLOPs count for the train step (%r); MFU will not be reported.", e)
      return None
    return None if flops is None else flops / len(self.devices)


def eval_metric_names(config: ml_collections.ConfigDict) -> list[str]:
  """The accuracies evaluation during training reports (`tasks.eval_metric_names`, whose names the
  evaluator reports under)."""
  return tasks.eval_metric_names(config)


def check_best_metric(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless `train.best_metric` is empty or a metric evaluation will report."""
  t = config.train
  if not t.best_metric:
    return
  if t.best_mode not in ("max", "min"):
    raise configuration.ConfigError(
        f"config.train.best_mode={t.best_mode!r} must be 'max' or 'min'")
  if config.eval.every_steps <= 0:
    raise configuration.ConfigError(
        f"config.train.best_metric={t.best_metric!r} ranks checkpoints by evaluation during training, "
        f"but config.eval.every_steps={config.eval.every_steps}; set it > 0")
  names = eval_metric_names(config)
  if t.best_metric not in names:
    raise configuration.ConfigError(
        f"config.train.best_metric={t.best_metric!r} is not a metric evaluation reports; with "
        f"config.eval.tasks={tuple(config.eval.tasks)} and config.model.heads="
        f"{tuple(config.model.heads)} it reports {names}")
