"""Runs train.py as a real process, for the kill and preemption tests."""

import json
import os
import subprocess
import sys
import time

from tests.conftest import FAST_XLA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env():
  e = dict(os.environ)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=1 {FAST_XLA}"
  e["PYTHONUNBUFFERED"] = "1"
  return e


def train_command(config, workdir, data_dir, *extra):
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--config={ROOT}/{config}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *extra]


def logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.endswith("\n")]


def start_and_wait_for_steps(cmd, workdir, more_steps, timeout=300):
  """Starts `cmd` and returns the process once `more_steps` new steps were logged."""
  before = len(logged_steps(workdir))
  # Output goes to a file, not a pipe nobody reads while waiting (a full pipe would block the run).
  os.makedirs(os.path.dirname(os.path.abspath(workdir)), exist_ok=True)
  log = open(os.path.abspath(workdir) + f".{time.time_ns()}.log", "w+")
  proc = subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT, text=True)
  proc.log = log
  deadline = time.time() + timeout
  while len(logged_steps(workdir)) < before + more_steps:
    if proc.poll() is not None:
      raise AssertionError(f"train.py exited early ({proc.returncode}):\n{output(proc)[-3000:]}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError("train.py logged no steps in time")
    time.sleep(0.05)
  return proc


def output(proc):
  """Everything a process started by `start_and_wait_for_steps` has printed so far."""
  proc.log.flush()
  proc.log.seek(0)
  return proc.log.read()
