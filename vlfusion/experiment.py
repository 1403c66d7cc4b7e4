"""A training run with its periodic evaluation: the one place the training loop and the evaluators meet.

`vlfusion.training` does not import `vlfusion.evaluation` (evaluation reads checkpoints that training
writes, so it sits above it); the loop takes evaluation as a callback, and this module passes it.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from vlfusion.evaluation import evaluator
from vlfusion.training import trainer
from vlfusion.training.setup import Setup
from vlfusion.training.train_state import TrainState


def periodic_evaluation(setup: Setup, config: ml_collections.ConfigDict) -> trainer.EvaluateFn:
  """The run's evaluators (`config.evals`, or the default one), evaluating and writing each result."""
  return evaluator.Evaluators(setup, config).run_and_write


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: Any, allow_config_change: bool = False,
                       devices: list[jax.Device] | None = None) -> TrainState:
  """`trainer.train`, evaluating every `config.eval.every_steps` with the run's evaluators."""
  return trainer.train(config, workdir, allow_config_change=allow_config_change, devices=devices,
                       evaluation=periodic_evaluation)
