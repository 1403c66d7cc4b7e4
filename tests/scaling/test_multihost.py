"""train.py over 2 processes x 2 CPU devices (jax.distributed, gloo) trains like 1 process x 4 devices, and
checkpoints move between the two layouts in both directions.

This process trains 6 steps over 4 of its devices through the trainer API, checkpointing step 1. A
2-process train.py run (2 CPU devices each, mesh data=2 x fsdp=2 across them) resumes that checkpoint,
is killed with SIGKILL (both processes) after logging step 4, and is launched again: the second launch
resumes its own checkpoint and finishes. The losses equal the 1-process ones, each step is logged once,
and the step-6 checkpoint, written by 2 processes and restored here in one, holds the 1-process
parameters. No from-scratch 2-process run, to stay within the test-time budget: the sharded
initialisation is tested on 8 devices in test_logical_axes.py. Constant learning rate; dropout on
(0.1). The 2-process run builds its batches in worker processes with prefetch, the 1-process run
synchronously.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np

from tests.scaling.common import FAST_COMPILE, initial_state, max_abs_diff
from tests.scaling.small_configs import small_config
from vlfusion import configuration, partitioning
from vlfusion.data import pipeline
from vlfusion.training import checkpointing, trainer
from vlfusion.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Fast XLA:CPU compiles (see common.FAST_COMPILE); the programs are the same.
FAST = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
ARGS = ("--config.mesh.fsdp=2", "--config.optimizer.schedule=constant",
        "--config.train.peak_flops_per_device=1e11",
        "--config.train.log_every_steps=1", "--config.train.checkpoint_every_steps=2")
LOSS_ATOL = 2e-5
NUM_STEPS = 6
KILL_AFTER = 4  # checkpoints every 2 steps: the kill lands after step 2's save began.


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, data_dir, num_steps, num_processes, devices_per_process):
  """Starts train.py as `num_processes` processes; returns the Popen objects."""
  port = _free_port()
  procs = []
  for i in range(num_processes):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process} {FAST}")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"),
           f"--config={ROOT}/tests/scaling/small_configs.py:co_attention", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={num_steps}", *ARGS,
           # each process builds its rows in 2 worker processes, 2 batches ahead.
           "--config.data.num_workers=2", "--config.data.prefetch_batches=2"]
    if num_processes > 1:
      cmd += [f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
              f"--process_id={i}"]
    log = open(f"{workdir}.{i}.log", "w")
    procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
  return procs


def _wait(procs, workdir):
  for i, p in enumerate(procs):
    code = p.wait(timeout=600)
    with open(f"{workdir}.{i}.log") as f:
      log = f.read()
    assert code == 0, f"process {i} of {workdir} exited {code}:\n{log[-4000:]}"
  return [open(f"{workdir}.{i}.log").read() for i in range(len(procs))]


def _kill_after_step(procs, workdir, step, timeout=300):
  """SIGKILL every process once process 0 has logged `step`; returns the steps logged by then."""
  deadline = time.time() + timeout
  while step not in [r["step"] for r in _records(workdir)]:
    for i, p in enumerate(procs):
      assert p.poll() is None, f"process {i} exited ({p.returncode}) before step {step} was logged"
    assert time.time() < deadline, f"step {step} was not logged in {timeout} s"
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    p.wait()


def _records(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def _losses(workdir):
  records = _records(workdir)
  steps = [r["step"] for r in records]
  assert len(steps) == len(set(steps)), f"a step was logged twice (by two processes?): {steps}"
  return {r["step"]: r["loss"] for r in records}


def _restore(workdir, step, config):
  setup = trainer.Setup(config, devices=jax.devices()[:4])
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  state, _, restored_step = checkpointing.restore(manager, setup.abstract_state, step)
  manager.close()
  assert restored_step == step
  return jax.device_get(state.params)


def _train_in_process(config, workdir, num_steps, save_at):
  """1 process x 4 devices through the trainer API (FAST_COMPILE); saves a train.py-style checkpoint."""
  setup = trainer.Setup(config, devices=jax.devices()[:4])
  workdir_lib.prepare(workdir, config)
  source = pipeline.make_batch_source(config, config.data.train_split)
  state = initial_state(setup)
  step_fn = setup.jit_train_step()
  manager = checkpointing.make_manager(workdir, config.train)
  config_dict = json.loads(configuration.to_json(config))
  losses = {}
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    for step in range(num_steps):
      batch = partitioning.to_global_batch(source.get_batch(step), setup.mesh)
      if step == 0:
        step_fn = step_fn.lower(state, batch).compile(compiler_options=FAST_COMPILE)
      state, metrics = step_fn(state, batch)
      losses[step + 1] = float(metrics["loss"])
      if step + 1 == save_at:
        checkpointing.save(manager, step + 1, state, source.state(step + 1), config_dict)
  manager.wait_until_finished()
  manager.close()
  return losses, jax.device_get(state.params)


def test_two_processes_train_and_checkpoint_like_one(data_dir, tmp_path):
  config = small_config("co_attention", **{
      "data.data_dir": data_dir, "mesh.fsdp": 2, "optimizer.schedule": "constant",
      "train.num_steps": NUM_STEPS})
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  losses_one, params_one = _train_in_process(config, one, NUM_STEPS, save_at=1)
  shutil.copytree(one, two)
  _kill_after_step(_launch(two, data_dir, NUM_STEPS, 2, 2), two, KILL_AFTER)
  logs = _wait(_launch(two, data_dir, NUM_STEPS, 2, 2), two)
  assert "process 0 of 2, 2 local / 4 global devices" in logs[0]
  resumed = re.search(r"Resumed from step (\d+)", logs[0])
  assert resumed and 1 < int(resumed.group(1)) <= KILL_AFTER, (
      "the second launch did not resume the killed run's own checkpoint")
  assert "Compiled the train step" in logs[0] and "Compiled the train step" not in logs[1], (
      "only process 0 logs at INFO")

  # What the run reports, once per launch, from process 0: compile time and FLOPs first, then
  # throughput and MFU.
  records = _records(two)
  compiled = [r for r in records if "compile_seconds" in r]
  assert records[0] is compiled[0] and len(compiled) == 2
  assert all(r["compile_seconds"] > 0 and r["flops_per_step"] > 0 for r in compiled)
  for key in ("examples_per_sec", "steps_per_sec", "eta_seconds", "mfu", "learning_rate", "grad_norm",
              "mlm_loss", "itm_loss"):
    assert key in records[-1], key
  assert len(glob.glob(os.path.join(two, "tensorboard", "events.out.tfevents.*"))) == 2  # one per launch

  # The 2-process run restored the 1-process checkpoint of step 1, was killed, resumed, and trained like
  # the 1-process run; each step logged exactly once (the killed launch's steps after its checkpoint
  # were logged again and their first records dropped).
  losses_two = _losses(two)
  steps = list(range(2, NUM_STEPS + 1))
  assert sorted(losses_two) == steps, "the 2-process run did not resume the 1-process checkpoint"
  np.testing.assert_allclose([losses_two[s] for s in steps], [losses_one[s] for s in steps],
                             rtol=0, atol=LOSS_ATOL)
  # Batches and parameters change from step to step, so equal losses are not a coincidence.
  assert max(losses_one[s] for s in steps) - min(losses_one[s] for s in steps) > 1e-3

  # Its checkpoints (written by 2 processes), restored by this 1-process run into a 4-device mesh.
  diff = max_abs_diff(_restore(two, NUM_STEPS, config), params_one)
  print(f"2 vs 1 process: max |loss diff| "
        f"{max(abs(losses_two[s] - losses_one[s]) for s in steps):.2e}; max |param diff| at step "
        f"{NUM_STEPS}: {diff:.2e}")
  assert diff < 2e-6
