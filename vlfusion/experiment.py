"""Where training and evaluation meet: a training run with its periodic evaluation, and the evaluation
of a run's checkpoints (eval.py).

`vlfusion.training` does not import `vlfusion.evaluation`, and evaluation imports nothing of training:
evaluators are built from a `Predictor` (a model's forward pass and mesh) and their data. This module
makes one from a training `Setup`, passes the evaluators to the loop as its callback, and restores the
parameters of checkpoints for them.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
from absl import logging

from vlfusion import configuration
from vlfusion.evaluation import evaluators, results
from vlfusion.evaluation.predictor import Predictor
from vlfusion.rundir import Workdir
from vlfusion.training import checkpointing, trainer
from vlfusion.training.setup import Setup
from vlfusion.training.train_state import TrainState


def predictor(setup: Setup) -> Predictor:
  """The run's model at evaluation time, on the run's mesh."""
  return Predictor.of_model(setup.model, setup.mesh, setup.rules)


def periodic_evaluation(setup: Setup, config: ml_collections.ConfigDict) -> trainer.EvaluateFn:
  """The run's evaluators (`config.evals`, or the default one), evaluating and writing each result."""
  return evaluators.Evaluators(predictor(setup), config).run_and_write


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: Any, allow_config_change: bool = False,
                       devices: list[jax.Device] | None = None) -> TrainState:
  """`trainer.train`, evaluating every `config.eval.every_steps` with the run's evaluators."""
  return trainer.train(config, workdir, allow_config_change=allow_config_change, devices=devices,
                       evaluation=periodic_evaluation)


def restore_params(workdir: Any, setup: Setup, step: int | None = None) -> tuple[Any, int]:
  """(params, step) of the run's checkpoint at `step` (the latest complete one by default); only the
  parameters are read (`checkpointing.restore_params`)."""
  return checkpointing.restore_params(workdir, setup.abstract_state, setup.config.train, step)


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
             setup: Setup | None = None, evals: evaluators.Evaluators | None = None) -> dict:
  """Restores the parameters at `step` (the latest by default), evaluates them, writes the JSON.

  Pass `setup` and `evals` to reuse them (and their compiled functions) across checkpoints.
  """
  setup = setup or Setup(config)
  params, step = restore_params(workdir, setup, step)
  result = (evals or evaluators.Evaluators(predictor(setup), config)).result(params, step)
  evaluators.write_result(workdir, result)
  return result


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config the run saved in `workdir/config.json`, completed with today's defaults for
  fields added since (`configuration.complete`), locked."""
  run = Workdir(workdir)
  config = run.read_config()
  if config is None:
    raise FileNotFoundError(f"{run.config_path} does not exist: pass --config, or a --workdir that a "
                            "training run has written")
  config.lock()
  return config


def evaluated(workdir: str, step: int, config: ml_collections.ConfigDict) -> bool:
  """Whether `step` has a result of `config`'s evaluators (`results.produced_by`), where they write it.

  A result of another evaluator config (other tasks, data or model) does not count: that step is
  evaluated again, its result written beside the other's.
  """
  digest = configuration.evaluator_digest(config)
  held = results.read(Workdir(workdir).eval_result_path(step, digest))
  return held is not None and results.produced_by(held, config)


class CheckpointEvaluator:
  """Evaluates checkpoints of one workdir with one compiled model and one set of evaluators."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.setup = Setup(config)
    self.evaluators = evaluators.Evaluators(predictor(self.setup), config)

  def evaluate(self, step: int | None = None) -> dict[str, Any]:
    return evaluate(self.config, self.workdir, step, self.setup, self.evaluators)

  def evaluate_all(self) -> list[dict[str, Any]]:
    """Every complete checkpoint in step order, skipping those with a result of this evaluator config."""
    results = []
    for step in Workdir(self.workdir).complete_steps():
      if evaluated(self.workdir, step, self.config):
        logging.info("Step %d is already evaluated by this evaluator config; skipping it.", step)
        continue
      try:
        results.append(self.evaluate(step))
      except Exception as e:  # noqa: BLE001 - a vanished step fails in whichever reader noticed first.
        if step in Workdir(self.workdir).complete_steps():
          raise
        # Training beside this job keeps its last train.keep_checkpoints: a listed step can go.
        logging.warning("Step %d was removed (rotated out by the training run) before it could be "
                        "evaluated; skipping it (%s).", step, e)
    return results

  def watch(self, poll_seconds: float = 30.0, timeout_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Evaluates each new checkpoint as the run writes it, until the run's final step
    (config.train.num_steps) is evaluated; `timeout_seconds` > 0 stops waiting after that long."""
    results, final, start = [], int(self.config.train.num_steps), time.monotonic()
    run = Workdir(self.workdir)
    while True:
      results.extend(self.evaluate_all())
      if evaluated(self.workdir, final, self.config):
        return results
      if timeout_seconds and time.monotonic() - start > timeout_seconds:
        raise TimeoutError(f"--watch: no checkpoint of the final step {final} in {self.workdir} after "
                           f"{timeout_seconds:.0f}s; evaluated so far: {run.complete_steps()}")
      time.sleep(poll_seconds)


def wait_for_config(workdir: str, poll_seconds: float, timeout_seconds: float) -> None:
  """Waits until the run has written `workdir/config.json` (eval --watch started before training)."""
  start = time.monotonic()
  while not Workdir(workdir).has_config():
    if timeout_seconds and time.monotonic() - start > timeout_seconds:
      raise TimeoutError(f"--watch: {workdir}/config.json did not appear within {timeout_seconds:.0f}s")
    time.sleep(poll_seconds)
