"""eval.py through its command line: --watch on a running job, --all, and the run's own config.json."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.pretrain import single_stream
from tests.conftest import FAST_XLA, tiny_config
from vlfusion import configuration, experiment
from vlfusion.data import pipeline
from vlfusion.training import checkpointing, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


def _eval(workdir, *flags):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}")
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "eval.py"), f"--workdir={workdir}", *flags],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read(workdir, step):
  with open(os.path.join(workdir, "eval", f"step_{step}.json")) as f:
    return json.load(f)


def test_watch_all_and_config_less_eval(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(single_stream, data_dir, **{
      "train.num_steps": 4, "train.checkpoint_every_steps": 2, "train.log_every_steps": 2,
      "data.global_batch_size": 8, "eval.batch_size": 128})
  pipeline.make_batch_source(config, "train")  # prepared once, not by both processes at the same time.
  # Started before the run exists: it waits for config.json, then evaluates each checkpoint.
  watch = _eval(workdir, "--watch", "--watch_poll_seconds=0.5", "--watch_timeout_seconds=540")
  experiment.train_and_evaluate(config, workdir)
  _, err = watch.communicate(timeout=600)
  assert watch.returncode == 0, err[-3000:]
  first = {step: _read(workdir, step) for step in (2, 4)}
  for step, result in first.items():
    assert result["step"] == step
    assert result["config_digest"] == configuration.digest(config)  # the run's own config.json.
    assert 0.0 <= result["default"]["itm"]["accuracy_shuffled_images"] <= 1.0
  assert first[2]["params_digest"] != first[4]["params_digest"]

  # Parameters only, equal to those of the full train state.
  setup = trainer.Setup(config)
  params, step = experiment.restore_params(workdir, setup, 2)
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  state, _, _ = checkpointing.restore(manager, setup.abstract_state, 2)
  manager.close()
  assert step == 2
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, state.params)

  # --all evaluates only what is missing, in order.
  os.remove(os.path.join(workdir, "eval", "step_2.json"))
  mtime = os.path.getmtime(os.path.join(workdir, "eval", "step_4.json"))
  run_all = _eval(workdir, "--all")
  out, err = run_all.communicate(timeout=600)
  assert run_all.returncode == 0, err[-3000:]
  assert _read(workdir, 2)["params_digest"] == first[2]["params_digest"]
  assert os.path.getmtime(os.path.join(workdir, "eval", "step_4.json")) == mtime
  assert '"step": 4' not in out


def test_another_eval_config_neither_overwrites_nor_is_skipped(data_dir, tmp_path):
  """Results are keyed by the evaluator that produced them: the run's own stay in eval/step_<N>.json,
  another config's go beside them, and --all re-evaluates a step evaluated under another config."""
  from vlfusion.evaluation import results

  workdir = str(tmp_path / "run")
  config = tiny_config(single_stream, data_dir, **{
      "train.num_steps": 2, "train.checkpoint_every_steps": 2, "train.log_every_steps": 2,
      "eval.every_steps": 2, "data.global_batch_size": 8, "eval.batch_size": 128})
  experiment.train_and_evaluate(config, workdir)  # training evaluates its final step itself.
  own = _read(workdir, 2)
  assert own["evaluator_digest"] == configuration.evaluator_digest(config)

  other = configuration.override(config.copy_and_resolve_references(), {"eval.tasks": ("itm",)})
  other_digest = configuration.evaluator_digest(other)
  assert other_digest != own["evaluator_digest"]
  done = experiment.CheckpointEvaluator(other, workdir).evaluate_all()  # not skipped: no result of its own.
  assert [r["step"] for r in done] == [2]
  assert _read(workdir, 2) == own  # the run's own result is untouched.
  path = os.path.join(workdir, results.relative_path(2, other_digest, own["evaluator_digest"]))
  with open(path) as f:
    theirs = json.load(f)
  assert theirs["evaluator_digest"] == other_digest and set(theirs["default"]) == {"dataset", "split", "itm"}
  assert theirs["params_digest"] == own["params_digest"]
  assert experiment.CheckpointEvaluator(other, workdir).evaluate_all() == []  # now it is evaluated.

  # A step whose own result came from another evaluator (an eval.py of old, or of other tasks) is evaluated
  # again by --all; the result it held is kept under its evaluator's folder.
  foreign = dict(own, evaluator_digest=other_digest, config_digest="elsewhere")
  with open(os.path.join(workdir, "eval", "step_2.json"), "w") as f:
    json.dump(foreign, f)
  os.remove(path)
  run_all = _eval(workdir, "--all")
  out, err = run_all.communicate(timeout=600)
  assert run_all.returncode == 0, err[-3000:]
  assert '"step": 2' in out
  assert _read(workdir, 2)["evaluator_digest"] == own["evaluator_digest"]
  with open(path) as f:
    assert json.load(f) == foreign
