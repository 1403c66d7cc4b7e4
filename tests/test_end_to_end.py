"""train.py and eval.py through their real command lines, including a kill and a restart."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FAST_XLA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=1 {FAST_XLA}"
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _cmd(script, config, workdir, data_dir, *extra):
  return [sys.executable, os.path.join(ROOT, script), f"--config={ROOT}/{config}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *extra]


@pytest.mark.parametrize("config", ["configs/pretrain/single_stream.py:tiny"])
def test_train_then_eval(config, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train = subprocess.run(
      _cmd("train.py", config, workdir, data_dir, "--config.train.num_steps=8",
           "--config.train.log_every_steps=4", "--config.train.checkpoint_every_steps=4"),
      env=_env(), capture_output=True, text=True, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["fusion"] == "single_stream"

  ev = subprocess.run(_cmd("eval.py", config, workdir, data_dir, "--step=4"), env=_env(),
                      capture_output=True, text=True, timeout=600)
  assert ev.returncode == 0, ev.stderr[-3000:]
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    result = json.load(f)
  assert result["step"] == 4
  metrics = result["default"]  # the one evaluator of a config without config.evals.
  assert 0.0 <= metrics["itm"]["accuracy"] <= 1.0 and metrics["itm"]["count"] > 0
  assert 0.0 <= metrics["mlm"]["accuracy"] <= 1.0 and metrics["mlm"]["count"] > 0
  assert len(result["params_digest"]) == 64 and len(result["config_digest"]) == 64
  # The latest step differs from step 4, so its weights and digest must differ too.
  ev8 = subprocess.run(_cmd("eval.py", config, workdir, data_dir), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert ev8.returncode == 0, ev8.stderr[-3000:]
  with open(os.path.join(workdir, "eval", "step_8.json")) as f:
    assert json.load(f)["params_digest"] != result["params_digest"]
