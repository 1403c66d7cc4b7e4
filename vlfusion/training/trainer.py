"""The pretraining loop: a module-level pure `train_step`, and `train_and_evaluate` around it."""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from vlfusion import configuration
from vlfusion.data import pipeline
from vlfusion.models import build_model
from vlfusion.training import checkpointing, losses, partitioning, train_state
from vlfusion.training.optimizer import make_optimizer
from vlfusion.training.reporting import MetricsReporter
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
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on a global batch; returns the new state and scalar metrics.

  A step whose loss or gradient is not finite leaves the parameters and optimizer state unchanged
  and reports `nonfinite=1`.
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  batch_denominators = losses.denominators(batch, objective_weights)

  def loss_fn(params, micro_batch, rng):
    outputs = model.apply({"params": params}, micro_batch, train=True, rngs={"dropout": rng})
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

  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
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

  def __init__(self, config: ml_collections.ConfigDict):
    configuration.validate(config, num_devices=jax.device_count())
    unknown = [n for n, w in config.objectives.items() if w > 0 and n not in losses.OBJECTIVES]
    if unknown:
      raise configuration.ConfigError(
          f"config.objectives {unknown} have weight > 0 but no loss is implemented for them; "
          f"implemented: {sorted(losses.OBJECTIVES)}"
      )
    self.config = config
    self.mesh = partitioning.make_mesh(config.mesh)
    self.rules = partitioning.logical_rules(config.mesh)
    self.model = build_model(config.model)
    self.optimizer, self.schedule = make_optimizer(config.optimizer, config.train.num_steps)
    self.init_fn = train_state.make_init_fn(self.model, self.optimizer, config)
    with jax.set_mesh(self.mesh):
      self.abstract_state, self.state_shardings = train_state.abstract_state(
          self.init_fn, self.mesh, self.rules)

  def initial_state(self) -> TrainState:
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return train_state.create_sharded_state(
          self.init_fn, self.state_shardings, self.config.train.seed)

  def jit_train_step(self):
    """`train_step` jit-compiled over the mesh with explicit shardings and a donated state."""
    fn = functools.partial(
        train_step, model=self.model, optimizer=self.optimizer, schedule=self.schedule,
        objective_weights=dict(self.config.objectives),
        grad_accum_steps=self.config.optimizer.grad_accum_steps,
    )
    return jax.jit(
        fn,
        in_shardings=(self.state_shardings, partitioning.batch_sharding(self.mesh)),
        out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
        donate_argnums=(0,),
    )


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


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(configuration.to_json(config))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains for `config.train.num_steps`, resuming from the latest checkpoint in `workdir`."""
  setup = Setup(config)  # validates before anything is built or compiled.
  os.makedirs(workdir, exist_ok=True)
  write_config(config, workdir)
  source = pipeline.make_batch_source(
      config, config.data.train_split, process_index=jax.process_index(),
      process_count=jax.process_count())
  manager = checkpointing.make_manager(workdir, config.train)
  restored = checkpointing.restore(manager, setup.abstract_state)
  if restored is None:
    state = setup.initial_state()
    start = 0
    logging.info("No checkpoint in %s: starting from step 0.", workdir)
  else:
    state, data_state, start = restored
    pipeline.restore_check(source, data_state)
    logging.info("Resumed from step %d.", start)

  step_fn = setup.jit_train_step()
  reporter = MetricsReporter(workdir)
  t = config.train
  last_time, last_step = time.time(), start
  examples_per_step = config.data.global_batch_size
  with _Preemption() as preemption, jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    step = start
    while step < t.num_steps:
      batch = partitioning.to_global_batch(source.get_batch(step), setup.mesh)
      if step == start:
        compile_start = time.time()
        compiled = step_fn.lower(state, batch).compile()
        logging.info("Compiled the train step in %.1fs.", time.time() - compile_start)
        last_time = time.time()
      state, metrics = compiled(state, batch)
      step += 1
      if step % t.log_every_steps == 0 or step == t.num_steps:
        metrics = jax.device_get(metrics)
        now = time.time()
        steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
        metrics.update(steps_per_sec=steps_per_sec,
                       examples_per_sec=steps_per_sec * examples_per_step)
        last_time, last_step = now, step
        reporter.write(step, metrics)
        logging.info("step %d: %s", step, " ".join(f"{k}={float(v):.4g}" for k, v in
                                                    sorted(metrics.items())))
        if metrics.get("nonfinite", 0) > 0:
          logging.warning("step %d: non-finite loss or gradient; the update was skipped.", step)
      if step % t.checkpoint_every_steps == 0 or step == t.num_steps or preemption.requested:
        checkpointing.save(manager, step, state, source.state(step), force=True)
      if preemption.requested:
        logging.warning("Stopped at step %d after SIGTERM; the checkpoint is saved.", step)
        break
  manager.wait_until_finished()
  manager.close()
  reporter.close()
  return state

