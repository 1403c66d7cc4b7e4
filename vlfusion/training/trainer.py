"""The pretraining loop: a module-level pure `train_step`, and `train_and_evaluate` around it."""

from __future__ import annotations

import functools
import json
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from vlfusion import configuration
from vlfusion.data import pipeline, prefetch
from vlfusion.models import build_model
from vlfusion.training import checkpointing, initialization, losses, partitioning, reporting, train_state
from vlfusion.training import workdir as workdir_lib
from vlfusion.training.optimizer import check_lr_multipliers, make_optimizer
from vlfusion.training.train_state import TrainState


def _split_micro_batches(batch: dict[str, Any], k: int) -> dict[str, Any]:
  return jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), batch)


def train_step(
    state: TrainState,
    batch: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    objective_weights: dict[str, float],
    grad_accum_steps: int = 1,
    nan_injection: tuple[int, str] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on a global batch; returns the new state and scalar metrics.

  A step whose loss, gradient or updated parameters are not finite leaves the parameters and
  optimizer state unchanged and reports `nonfinite=1`. `nan_injection=(step, objective)` multiplies
  that objective's logits by NaN at that step, to exercise this path for real.
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  batch_denominators = losses.denominators(batch, objective_weights)

  def loss_fn(params, micro_batch, rng):
    outputs = model.apply({"params": params}, micro_batch, train=True, rngs={"dropout": rng})
    if nan_injection is not None:
      at_step, objective = nan_injection
      key = f"{objective}_logits"
      outputs = dict(outputs, **{key: outputs[key] * jnp.where(state.step == at_step, jnp.nan, 1.0)})
    return losses.total_loss(outputs, micro_batch, objective_weights, batch_denominators)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    grads, metrics = grad_fn(state.params, batch, dropout_rng)
  else:
    # Each micro-batch loss is over the full batch's denominators, so the sums are exact.
    micro = _split_micro_batches(batch, grad_accum_steps)

    def accumulate(carry, xs):
      i, micro_batch = xs
      g, m = grad_fn(state.params, micro_batch, jax.random.fold_in(dropout_rng, i))
      return jax.tree.map(jnp.add, carry, (g, m)), None

    zeros = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), dropout_rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro))

  grad_norm = optax.tree.norm(grads)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.tree.norm(new_params)))
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(new_params, state.params),
      opt_state=keep(new_opt_state, state.opt_state),
  )
  metrics = dict(metrics, grad_norm=grad_norm, learning_rate=schedule(state.step),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  return new_state, metrics


class Setup:
  """What training and evaluation share: validated config, mesh, model, optimizer, state layout."""

  def __init__(self, config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None):
    """`devices` (all of them by default) are the mesh's; a subset lets one process build several."""
    self.devices = list(devices if devices is not None else jax.devices())
    configuration.validate(config, num_devices=len(self.devices))
    unknown = [n for n, w in config.objectives.items() if w > 0 and n not in losses.OBJECTIVES]
    if unknown:
      raise configuration.ConfigError(
          f"config.objectives {unknown} have weight > 0 but no loss is implemented for them; "
          f"implemented: {sorted(losses.OBJECTIVES)}"
      )
    pipeline.resolve_num_answers(config)  # model.vqa.num_answers=0: the data's answer vocabulary.
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

  def initial_state(self, workdir: str | None = None) -> TrainState:
    """A freshly initialised, sharded state; parameters named by `config.init` or streams named by
    `model.{text,image}.init_from` are loaded from their checkpoints (what was loaded and what was not
    is logged, and for `config.init` written to `workdir/init_report.json`)."""
    source = initialization.load(self.config) if initialization.requested(self.config) else None
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      state = train_state.create_sharded_state(
          self.init_fn, self.state_shardings, self.config.train.seed)
    if source is not None:
      state = state.replace(params=initialization.restore(source, state.params, self.config, workdir)[0])
    m = self.config.model
    if m.text.get("init_from") or m.image.get("init_from"):
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

    XLA counts a loop body once, so with gradient accumulation (a scan over micro-batches) the count
    comes from the unpartitioned HLO of the same step without accumulation, divided by the devices.
    None when the backend has no cost analysis: reporting must never stop a run.
    """
    try:
      if self.config.optimizer.grad_accum_steps == 1:
        return reporting.cost_flops(compiled.cost_analysis())
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
        lowered = self.jit_train_step(grad_accum_steps=1).lower(self.abstract_state, batch)
      flops = reporting.cost_flops(lowered.cost_analysis())
    except Exception as e:  # noqa: BLE001 - e.g. a backend without cost analysis.
      logging.warning("No FLOPs count for the train step (%r); MFU will not be reported.", e)
      return None
    return None if flops is None else flops / len(self.devices)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks, so the run can save and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class NonFiniteError(FloatingPointError):
  """Training stopped on non-finite losses or gradients, per `config.train.nonfinite_policy`."""


def _nonfinite_culprits(metrics: dict[str, Any]) -> list[str]:
  """The objectives whose loss is not finite; `gradient or parameters` if every loss is finite."""
  bad = [k[: -len("_loss")] for k, v in sorted(metrics.items())
         if k.endswith("_loss") and not np.isfinite(v)]
  return bad or ["gradient or parameters"]


def _all_hosts_agree(flag: bool) -> bool:
  """True on every process if `flag` is True on any (e.g. SIGTERM reached only some hosts)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False,
                       devices: list[jax.Device] | None = None) -> TrainState:
  """Trains for `config.train.num_steps`, resuming from the latest complete checkpoint in `workdir`.

  Resume is exact: the batches, dropout keys and optimizer state of a resumed run are those an
  uninterrupted run would have used. SIGTERM saves a checkpoint at the current step and returns.
  `devices` (default: all) are the devices the mesh spans.
  """
  setup = Setup(config, devices)  # validates before anything is built or compiled.
  workdir_lib.prepare(workdir, config, allow_config_change)
  source = pipeline.make_batch_source(
      config, config.data.train_split, process_index=jax.process_index(),
      process_count=jax.process_count())
  manager = checkpointing.make_manager(workdir, config.train)
  restored = checkpointing.restore(manager, setup.abstract_state)
  if restored is None:
    state = setup.initial_state(workdir)
    start = 0
    logging.info("No checkpoint in %s: starting from step 0.", workdir)
  else:
    state, data_state, start = restored
    pipeline.restore_check(source, data_state)
    logging.info("Resumed from step %d.", start)

  evaluator = None
  if config.eval.every_steps > 0:
    from vlfusion.evaluation.evaluator import Evaluators  # evaluation imports this module.

    evaluator = Evaluators(setup, config)
  config_dict = json.loads(configuration.to_json(config))
  step_fn = setup.jit_train_step()
  reporter = reporting.MetricsReporter(workdir)
  t = config.train
  throughput = None
  once: dict[str, float] = {}  # reported with the first logged step only.
  consecutive_bad = 0
  batches = prefetch.train_batches(source, start, t.num_steps, config.data,
                                   put=lambda b: partitioning.to_global_batch(b, setup.mesh))
  try:
    with _Preemption() as preemption, jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
      step = start
      while step < t.num_steps:
        batch = next(batches)
        if step == start:
          compile_start = time.perf_counter()
          step_fn = step_fn.lower(state, batch).compile()
          once["compile_seconds"] = time.perf_counter() - compile_start
          flops = setup.flops_per_device_step(step_fn, batch)
          peak = reporting.peak_flops_per_device(t.get("peak_flops_per_device", 0.0),
                                                 setup.devices[0].device_kind)
          if flops:
            once["flops_per_step"] = flops * len(setup.devices)
          logging.info(
              "Compiled the train step in %.1fs; %s FLOPs per step (XLA), %s per device; peak %s "
              "FLOP/s per device (%s).", once["compile_seconds"],
              f"{flops * len(setup.devices):.4g}" if flops else "unknown",
              f"{flops:.4g}" if flops else "unknown", f"{peak:.4g}" if peak else "unknown",
              setup.devices[0].device_kind)
          throughput = reporting.Throughput(config.data.global_batch_size, t.num_steps, flops, peak,
                                            start)
        state, metrics = step_fn(state, batch)
        step += 1
        if float(metrics["nonfinite"]) > 0:
          consecutive_bad += 1
          values = jax.device_get(metrics)
          culprits = _nonfinite_culprits(values)
          logging.warning(
              "step %d: non-finite %s (loss=%s); the update was skipped (%d in a row).",
              step, ", ".join(culprits), values["loss"], consecutive_bad)
          if t.nonfinite_policy == "stop" or consecutive_bad >= t.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"stopping at step {step}: non-finite {', '.join(culprits)} for {consecutive_bad} "
                f"step(s) in a row (config.train.nonfinite_policy={t.nonfinite_policy!r}, "
                f"max_consecutive_nonfinite={t.max_consecutive_nonfinite}); checkpoints saved so "
                f"far are intact: {manager.all_steps()}"
            )
        else:
          consecutive_bad = 0
        if step % t.log_every_steps == 0 or step == t.num_steps:
          metrics = jax.device_get(metrics)
          metrics.update(throughput.measure(step), **once)
          once = {}
          reporter.write(step, metrics)
          logging.info("step %d/%d: %s", step, t.num_steps, " ".join(
              f"{k}={float(v):.4g}" for k, v in sorted(metrics.items())))
        eval_metrics = None
        if evaluator is not None and (step % config.eval.every_steps == 0 or step == t.num_steps):
          eval_metrics = evaluator.run_and_write(state.params, step, workdir, reporter)
          throughput.reset(step)  # evaluation time is not training throughput.
        stop = _all_hosts_agree(preemption.requested)
        if (step % t.checkpoint_every_steps == 0 or step == t.num_steps or stop
            or eval_metrics is not None and t.best_metric):
          checkpointing.save(manager, step, state, source.state(step), config_dict, eval_metrics)
        if stop:
          logging.warning("Stopped at step %d after SIGTERM; its checkpoint is saved.", step)
          break
  finally:
    batches.close()
    manager.wait_until_finished()
    manager.close()
    reporter.close()
  return state
