"""SIGTERM saves a checkpoint at the current step and exits 0; a restart continues from it."""

import os
import signal
import subprocess

import pytest

from tests.reliability import cli

pytestmark = pytest.mark.slow


def test_sigterm_saves_and_restart_continues(data_dir, tmp_path):
  config = "configs/pretrain/co_attention.py:tiny"
  workdir = str(tmp_path / "run")
  proc = cli.start_and_wait_for_steps(
      cli.train_command(config, workdir, data_dir, "--config.train.num_steps=100000",
                        "--config.train.log_every_steps=1",
                        "--config.train.checkpoint_every_steps=100000"),
      workdir, more_steps=3)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  assert proc.returncode == 0, cli.output(proc)[-3000:]
  saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and saved[0] >= 3, saved
  assert saved[0] == cli.logged_steps(workdir)[-1]  # saved at the step it had reached.

  restart = subprocess.run(
      cli.train_command(config, workdir, data_dir, f"--config.train.num_steps={saved[0] + 2}",
                        "--config.train.log_every_steps=1"),
      env=cli.env(), capture_output=True, text=True, timeout=600)
  assert restart.returncode == 0, restart.stderr[-3000:]
  assert f"Resumed from step {saved[0]}" in restart.stderr
  assert cli.logged_steps(workdir)[-2:] == [saved[0] + 1, saved[0] + 2]
