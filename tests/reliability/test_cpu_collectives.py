"""Collectives across several CPU devices in one process: the XLA:CPU deadlock, and the pool that avoids it
(vlfusion/cpu_threads.py, docs/reliability.md)."""

import os
import subprocess
import sys

import pytest

from benchmarks import collectives
from vlfusion import cpu_threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_collectives_deadlock_with_the_pool_xla_picks_on_two_cores():
  # The workaround is needed: this jaxlib deadlocks (and aborts) when 4 devices share 2 pool threads.
  # If a jaxlib fixes it, this fails, and vlfusion/cpu_threads.py can go.
  results = [collectives.run_once("jit", 4, 2, 1000, 4, str(ROOT))[::2] for _ in range(3)]
  assert any(not ok and "Termination timeout" in err for ok, err in results), results


@pytest.mark.slow
def test_collectives_finish_with_the_pool_vlfusion_sets():
  # The same program and dispatch, vlfusion imported first: 8 devices, 2000 steps, three fresh processes.
  for _ in range(3):
    ok, seconds, err = collectives.run_once("jit", 8, None, 2000, 10, str(ROOT))
    assert ok, err


def test_the_pool_is_raised_to_two_threads_per_requested_device():
  flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
  environ = {"XLA_FLAGS": flags, "NPROC": "2"}
  assert cpu_threads.requested_cpu_devices(environ) == 8
  assert cpu_threads.ensure_collective_threads(environ) == 16 and environ["PJRT_NPROC"] == "16"
  assert cpu_threads.ensure_collective_threads(environ) is None  # already enough.
  environ = {"XLA_FLAGS": flags, "PJRT_NPROC": "32"}
  assert cpu_threads.ensure_collective_threads(environ) is None and environ["PJRT_NPROC"] == "32"
  environ = {"JAX_NUM_CPU_DEVICES": "4", "PJRT_NPROC": "3"}
  assert cpu_threads.ensure_collective_threads(environ) == 8
  environ = {"XLA_FLAGS": "", "PJRT_NPROC": "1"}  # one device: no collectives, nothing to change.
  assert cpu_threads.ensure_collective_threads(environ) is None and environ["PJRT_NPROC"] == "1"
  environ = {"XLA_FLAGS": flags, "PJRT_NPROC": "2", cpu_threads.KEEP_POOL: "1"}
  assert cpu_threads.ensure_collective_threads(environ) is None and environ["PJRT_NPROC"] == "2"


def test_a_child_with_fewer_devices_gets_the_pool_back():
  """A pool raised for 8 devices is inherited by child processes (benchmarks and sweeps start train.py);
  a child asking for one device gets the pool it would have had, not 16 threads on 2 cores. A value the
  user set, or changed after vlfusion raised it, is kept."""
  parent = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "NPROC": "2"}
  assert cpu_threads.ensure_collective_threads(parent) == 16
  child = dict(parent, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  assert cpu_threads.ensure_collective_threads(child) is None
  assert "PJRT_NPROC" not in child and cpu_threads.pool_threads(child) == 2
  child = dict(parent, XLA_FLAGS="--xla_force_host_platform_device_count=2")  # needs 4: raised to 4.
  assert cpu_threads.ensure_collective_threads(child) == 4 and child["PJRT_NPROC"] == "4"
  child = dict(parent, XLA_FLAGS="", PJRT_NPROC="12")  # the user's own value since.
  assert cpu_threads.ensure_collective_threads(child) is None and child["PJRT_NPROC"] == "12"
  user = {"XLA_FLAGS": "", "PJRT_NPROC": "16"}  # set by the user, not raised: kept.
  assert cpu_threads.ensure_collective_threads(user) is None and user["PJRT_NPROC"] == "16"


def test_this_process_runs_with_the_raised_pool():
  import jax

  assert len(jax.devices()) == 8
  assert int(os.environ["PJRT_NPROC"]) >= 16 or cpu_threads.pool_threads() >= 16
  cpu_threads.check_collective_threads(jax.devices())  # no error.


def test_a_backend_started_before_vlfusion_with_too_small_a_pool_is_refused_by_name():
  code = ("import jax; jax.devices()\n"
          "from vlfusion import cpu_threads\n"
          "try:\n"
          "  cpu_threads.check_collective_threads(jax.devices())\n"
          "except RuntimeError as e:\n"
          "  print(e)\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PJRT_NPROC="2")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       check=True, timeout=300).stdout
  assert "4 CPU devices in one process with an XLA:CPU thread pool of 2" in out, out
  assert "PJRT_NPROC=8" in out, out
