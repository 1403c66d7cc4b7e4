"""kill -9 at random moments, restart each time: the final weights are bit-identical to a run that
was never interrupted, and metrics.jsonl holds each logged step exactly once."""

import os
import random
import signal
import subprocess
import time

import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from tests.reliability import cli
from vlfusion.evaluation.digests import params_digest
from vlfusion.training import checkpointing, trainer

pytestmark = pytest.mark.slow

NUM_STEPS = 30
KILLS = 3
ARGS = (f"--config.train.num_steps={NUM_STEPS}", "--config.train.log_every_steps=1",
        "--config.train.checkpoint_every_steps=3")
CONFIG = "configs/pretrain/co_attention.py:tiny"
# The interrupted run builds its batches in 2 worker processes, 3 batches ahead; the straight run in its
# own thread: equal digests also show that workers and prefetch change no batch.
WORKERS = ("--config.data.num_workers=2", "--config.data.prefetch_batches=3")


def _final_digest(data_dir, workdir):
  config = tiny_config(co_attention, data_dir, **{"train.num_steps": NUM_STEPS})
  setup = trainer.Setup(config)
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  state, _, step = checkpointing.restore(manager, setup.abstract_state)
  manager.close()
  assert step == NUM_STEPS
  return params_digest(state.params)


def test_kill_9_at_random_points_resumes_exactly(data_dir, tmp_path):
  rng = random.Random(1234)
  straight = str(tmp_path / "straight")
  done = subprocess.run(cli.train_command(CONFIG, straight, data_dir, *ARGS), env=cli.env(),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]

  killed = str(tmp_path / "killed")
  kills = 0
  while kills < KILLS:
    proc = cli.start_and_wait_for_steps(cli.train_command(CONFIG, killed, data_dir, *ARGS, *WORKERS),
                                        killed, more_steps=1)
    time.sleep(rng.uniform(0.0, 1.5))  # lands anywhere: mid-step, mid-save, between saves.
    if proc.poll() is not None:
      break  # finished before the kill landed; nothing left to interrupt.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
  finish = subprocess.run(cli.train_command(CONFIG, killed, data_dir, *ARGS, *WORKERS), env=cli.env(),
                          capture_output=True, text=True, timeout=600)
  assert finish.returncode == 0, finish.stderr[-3000:]
  assert kills == KILLS, f"only {kills} kills landed before the run finished"
  assert os.path.isdir(os.path.join(killed, "checkpoints", str(NUM_STEPS)))
  assert _final_digest(data_dir, killed) == _final_digest(data_dir, straight)
  # Steps logged after the last checkpoint before a kill ran again; their old records were dropped.
  assert cli.logged_steps(killed) == list(range(1, NUM_STEPS + 1))
  assert cli.logged_steps(straight) == list(range(1, NUM_STEPS + 1))
