"""Which checkpoints eval.py evaluates: one step, every one in order, or each as a running job writes it."""

from __future__ import annotations

import time
from typing import Any

import ml_collections
from absl import logging

from vlfusion import configuration
from vlfusion.evaluation import evaluator, results
from vlfusion.rundir import Workdir
from vlfusion.training.checkpointing import complete_steps  # noqa: F401 - re-exported.
from vlfusion.training.setup import Setup


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
    self.evaluators = evaluator.Evaluators(self.setup, config)

  def evaluate(self, step: int | None = None) -> dict[str, Any]:
    return evaluator.evaluate(self.config, self.workdir, step, self.setup, self.evaluators)

  def evaluate_all(self) -> list[dict[str, Any]]:
    """Every complete checkpoint in step order, skipping those with a result of this evaluator config."""
    results = []
    for step in complete_steps(self.workdir):
      if evaluated(self.workdir, step, self.config):
        logging.info("Step %d is already evaluated by this evaluator config; skipping it.", step)
        continue
      try:
        results.append(self.evaluate(step))
      except Exception as e:  # noqa: BLE001 - a vanished step fails in whichever reader noticed first.
        if step in complete_steps(self.workdir):
          raise
        # Training beside this job keeps its last train.keep_checkpoints: a listed step can go.
        logging.warning("Step %d was removed (rotated out by the training run) before it could be "
                        "evaluated; skipping it (%s).", step, e)
    return results

  def watch(self, poll_seconds: float = 30.0, timeout_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Evaluates each new checkpoint as the run writes it, until the run's final step
    (config.train.num_steps) is evaluated; `timeout_seconds` > 0 stops waiting after that long."""
    results, final, start = [], int(self.config.train.num_steps), time.monotonic()
    while True:
      results.extend(self.evaluate_all())
      if evaluated(self.workdir, final, self.config):
        return results
      if timeout_seconds and time.monotonic() - start > timeout_seconds:
        raise TimeoutError(f"--watch: no checkpoint of the final step {final} in {self.workdir} after "
                           f"{timeout_seconds:.0f}s; evaluated so far: {complete_steps(self.workdir)}")
      time.sleep(poll_seconds)


def wait_for_config(workdir: str, poll_seconds: float, timeout_seconds: float) -> None:
  """Waits until the run has written `workdir/config.json` (eval --watch started before training)."""
  start = time.monotonic()
  while not Workdir(workdir).has_config():
    if timeout_seconds and time.monotonic() - start > timeout_seconds:
      raise TimeoutError(f"--watch: {workdir}/config.json did not appear within {timeout_seconds:.0f}s")
    time.sleep(poll_seconds)
