"""The training loop on the synthetic data: the loss falls, checkpoints round-trip, runs resume."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from tests.scaling.small_configs import small_config
from vlfusion import experiment
from vlfusion.configuration import ConfigError
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
         "optimizer.warmup_steps": 5, "train.profile_steps": 2},
  )
  state = experiment.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_loss_falls(trained):
  _, workdir, _ = trained
  records = _metrics(workdir)
  assert [r["step"] for r in records] == list(range(5, 61, 5))
  losses = [r["loss"] for r in records]
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses
  assert {"mlm_loss", "itm_loss", "learning_rate", "steps_per_sec", "grad_norm"} <= set(records[0])


def test_profile_steps_write_a_trace_tensorboard_reads(trained):
  _, workdir, _ = trained
  traces = glob.glob(os.path.join(workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0, traces


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
  state = experiment.train_and_evaluate(config, workdir)
  steps = [r["step"] for r in _metrics(workdir)]
  assert steps[-3:] == [60, 65, 70]  # continued from 60; steps 1..60 were not trained again.
  assert steps.count(5) == 1
  assert int(state.step) == 70


def test_the_loop_evaluates_through_its_callback(data_dir, tmp_path):
  """Training calls the evaluation it is given every eval.every_steps and at the last step, and records
  its scalars with the step's; a config that asks for evaluation without one is refused before the
  workdir is touched."""
  config = small_config(
      "co_attention",
      **{"data.data_dir": data_dir, "train.num_steps": 5, "train.log_every_steps": 5,
         "train.checkpoint_every_steps": 100, "eval.every_steps": 2})
  calls = []

  def evaluation(setup, evaluated_config):
    assert evaluated_config is config and setup.config is config

    def evaluate(params, step, workdir):
      calls.append((step, workdir))
      return {}, {"eval/fake": float(step)}

    return evaluate

  workdir = str(tmp_path / "run")
  trainer.train(config, workdir, devices=jax.devices()[:1], evaluation=evaluation)
  assert calls == [(2, workdir), (4, workdir), (5, workdir)]
  recorded = {r["step"]: r["eval/fake"] for r in _metrics(workdir) if "eval/fake" in r}
  assert recorded == {2: 2.0, 4: 4.0, 5: 5.0}
  with pytest.raises(ConfigError, match=r"config.eval.every_steps=2 but this training was given no eval"):
    trainer.train(config, str(tmp_path / "refused"), devices=jax.devices()[:1])
  assert not os.path.exists(tmp_path / "refused")


def _eval_values(workdir, name):
  key = f"eval/default/{name}"  # the default evaluator's scalars.
  return {r["step"]: r[key] for r in _metrics(workdir) if key in r}


@pytest.mark.parametrize("mode", ["max", "min"])
def test_keep_best_keeps_the_best_checkpoint(data_dir, tmp_path, mode):
  """Evaluation every 2 steps ranks the checkpoints; the best one by `best_mode` survives beside the
  latest, across a resume, and every step is recorded once (evaluation scalars in the same record as
  training's)."""
  workdir = str(tmp_path / mode)
  config = small_config(
      "co_attention",
      **{"data.data_dir": data_dir, "train.num_steps": 6, "train.log_every_steps": 2,
         "train.checkpoint_every_steps": 100, "train.keep_checkpoints": 1, "train.keep_best_checkpoints": 1,
         "train.best_metric": "mlm_accuracy", "train.best_mode": mode, "eval.every_steps": 2,
         "eval.tasks": ("mlm",), "eval.batch_size": 128, "optimizer.learning_rate": 3e-3,
         "optimizer.warmup_steps": 1, "optimizer.schedule": "constant"})
  config.train.num_steps = 4
  experiment.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  config.train.num_steps = 6  # the resumed run must still know how steps 2 and 4 ranked.
  experiment.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  values = _eval_values(workdir, "mlm_accuracy")
  assert sorted(values) == [2, 4, 6] and len(set(values.values())) == 3, values
  best = (max if mode == "max" else min)(values, key=values.get)
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  kept = manager.all_steps()
  manager.close()
  assert sorted(kept) == sorted({best, 6}), (values, kept)
  assert [r["step"] for r in _metrics(workdir)] == [2, 4, 6]


def test_best_metric_must_be_a_reported_eval_metric(data_dir):
  config = tiny_config(co_attention, data_dir, **{"train.best_metric": "vqa_accuracy",
                                                  "eval.every_steps": 10})
  with pytest.raises(ConfigError, match=r"config.train.best_metric='vqa_accuracy'.*"
                     r"reports \['itm_accuracy', 'mlm_accuracy', 'default/itm_accuracy'"):
    trainer.Setup(config)
  config.train.best_metric = "itm_accuracy"
  config.eval.every_steps = 0
  with pytest.raises(ConfigError, match="config.eval.every_steps=0"):
    trainer.Setup(config)
