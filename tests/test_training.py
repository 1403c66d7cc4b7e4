"""The training loop on the synthetic data: the loss falls, checkpoints round-trip, runs resume."""

import json
import os

import jax
import numpy as np
import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion.training import checkpointing, trainer


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("train"))
  config = tiny_config(
      co_attention, data_dir,
      **{"train.num_steps": 60, "train.log_every_steps": 5, "train.checkpoint_every_steps": 30,
         "optimizer.warmup_steps": 5},
  )
  state = trainer.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_loss_falls(trained):
  _, workdir, _ = trained
  records = _metrics(workdir)
  assert [r["step"] for r in records] == list(range(5, 61, 5))
  losses = [r["loss"] for r in records]
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses
  assert {"mlm_loss", "itm_loss", "learning_rate", "steps_per_sec", "grad_norm"} <= set(records[0])


def test_checkpoint_round_trip_restores_identical_parameters(trained):
  config, workdir, state = trained
  setup = trainer.Setup(config)
  manager = checkpointing.make_manager(workdir, config.train)
  assert manager.all_steps() == [30, 60]
  restored, data_state, step = checkpointing.restore(manager, setup.abstract_state)
  manager.close()
  assert step == 60 and int(restored.step) == 60
  assert data_state["step"] == 60
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state.params, restored.params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state.opt_state, restored.opt_state)


def test_run_resumes_from_latest_checkpoint(trained):
  config, workdir, _ = trained
  config.train.num_steps = 70
  state = trainer.train_and_evaluate(config, workdir)
  steps = [r["step"] for r in _metrics(workdir)]
  assert steps[-3:] == [60, 65, 70]  # continued from 60; steps 1..60 were not trained again.
  assert steps.count(5) == 1
  assert int(state.step) == 70
