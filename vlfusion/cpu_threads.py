"""XLA:CPU's thread pool sized for collectives across several CPU devices in one process.

A JAX/XLA:CPU limitation (jaxlib 0.10): with several CPU devices in one process (for instance
`--xla_force_host_platform_device_count=8`), each device's share of a program runs on the CPU client's
Eigen thread pool, and a collective (all-reduce, all-gather, ...) holds one pool thread per device while it
waits for the others at the rendezvous. Dispatch is asynchronous, so a device that finished step k starts
step k+1 and blocks in its first collective while another device is still in step k. When the pool has
fewer than 2 threads per device, every thread can end up waiting at a rendezvous whose last participant
is queued behind them: a deadlock that XLA breaks after 40 s by aborting the process ("Termination
timeout for `all reduce ...` ... only 7 of them arrived"). A plain jitted loop with a `psum` shows it
(`benchmarks/collectives.py`, `tests/reliability/test_cpu_collectives.py`); the pool is sized by the
number of cores (`PJRT_NPROC`, else `NPROC`, else the cores this process may run on), so it happens on
small machines: 2 cores with 2 or more devices, 8 cores with 8 devices.

`ensure_collective_threads()` sets `PJRT_NPROC` to 2 threads per CPU device before the CPU client is
created, when fewer would be used (a child process, which inherits the raised value, gets the value
before it back when it asks for fewer devices); `vlfusion` calls it on import, so `train.py`, `eval.py`,
the tests and any script that imports vlfusion before JAX starts its backend are covered.
`check_collective_threads` refuses, with this explanation, a multi-device CPU mesh whose backend started
with too small a pool.
`VLFUSION_KEEP_PJRT_NPROC=1` leaves the pool as the environment gives it and turns the refusal into a
warning (benchmarks/collectives.py uses it to measure the deadlock).
"""

from __future__ import annotations

import logging
import os
import re

# Measured (docs/reliability.md): with 8 devices, pools of 8, 9, 12 and 14 threads deadlocked in every
# run and 16 in none; with 4 devices 2 deadlocked and 8 did not; with 16 devices 30 did and 32 did not.
THREADS_PER_DEVICE = 2
KEEP_POOL = "VLFUSION_KEEP_PJRT_NPROC"
# "<raised value>:<value before>" of a raise, so that a child process can tell it from the user's value.
RAISED = "VLFUSION_RAISED_PJRT_NPROC"

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def requested_cpu_devices(environ: dict[str, str] | None = None) -> int:
  """The number of CPU devices the CPU client will create, from `XLA_FLAGS` and `JAX_NUM_CPU_DEVICES`
  (and `jax_num_cpu_devices` when jax is already imported); 1 when nothing asks for more."""
  environ = os.environ if environ is None else environ
  counts = [1]
  counts += [int(n) for n in _DEVICE_COUNT_FLAG.findall(environ.get("XLA_FLAGS", ""))][-1:]
  if environ.get("JAX_NUM_CPU_DEVICES", "").strip().lstrip("-").isdigit():
    counts.append(int(environ["JAX_NUM_CPU_DEVICES"]))
  import sys

  if "jax" in sys.modules:  # a value set with jax.config.update before the backend starts.
    try:
      counts.append(int(sys.modules["jax"].config.jax_num_cpu_devices))
    except (AttributeError, TypeError, ValueError):
      pass
  return max(counts)


def pool_threads(environ: dict[str, str] | None = None) -> int:
  """The size of the pool the CPU client creates: `PJRT_NPROC`, else `NPROC`, else the usable cores."""
  environ = os.environ if environ is None else environ
  for name in ("PJRT_NPROC", "NPROC"):
    value = environ.get(name, "").strip()
    if value.isdigit():
      return int(value)
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux.
    return os.cpu_count() or 1


def needed_threads(num_devices: int) -> int:
  """Pool threads that keep collectives over `num_devices` CPU devices from deadlocking (1 device: any)."""
  return THREADS_PER_DEVICE * num_devices if num_devices > 1 else 1


def ensure_collective_threads(environ: dict[str, str] | None = None) -> int | None:
  """Raises `PJRT_NPROC` to `needed_threads` when the requested CPU devices need more than the pool would
  have; returns the new value, or None when nothing changed. Effective only before the CPU client exists."""
  environ = os.environ if environ is None else environ
  if environ.get(KEEP_POOL) == "1":
    return None
  needed = needed_threads(requested_cpu_devices(environ))
  _undo_inherited_raise(environ, needed)
  if pool_threads(environ) >= needed:
    return None
  environ[RAISED] = f"{needed}:{environ.get('PJRT_NPROC', '')}"
  environ["PJRT_NPROC"] = str(needed)
  return needed


def _undo_inherited_raise(environ: dict[str, str], needed: int) -> None:
  """Puts back the `PJRT_NPROC` a parent process had before vlfusion raised it (the raise is inherited
  by the processes it starts) when this process needs fewer threads, unless it was changed since."""
  raised, _, before = environ.get(RAISED, "").partition(":")
  if not raised or environ.get("PJRT_NPROC") != raised or needed >= int(raised):
    return
  del environ[RAISED]
  if before:
    environ["PJRT_NPROC"] = before
  else:
    del environ["PJRT_NPROC"]


def check_collective_threads(devices: list) -> None:
  """Raises RuntimeError when `devices` are several CPU devices of this process and the CPU client was
  created with a pool too small for their collectives (see the module docstring)."""
  import jax

  local_cpu = [d for d in devices if d.platform == "cpu" and d.process_index == jax.process_index()]
  if len(local_cpu) < 2:
    return
  started_with = _POOL_AT_IMPORT if _BACKEND_STARTED_BEFORE_IMPORT else pool_threads()
  needed = needed_threads(len(local_cpu))
  if started_with < needed:
    message = (
        f"{len(local_cpu)} CPU devices in one process with an XLA:CPU thread pool of {started_with}: "
        f"collectives across them can deadlock (XLA aborts after 40 s). Set PJRT_NPROC={needed} in the "
        f"environment before JAX starts (importing vlfusion before using JAX does it); see "
        f"vlfusion/cpu_threads.py.")
    if os.environ.get(KEEP_POOL) == "1":
      logging.getLogger(__name__).warning("%s", message)
      return
    raise RuntimeError(message)


def _backend_started() -> bool:
  import sys

  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


_BACKEND_STARTED_BEFORE_IMPORT = _backend_started()
_POOL_AT_IMPORT = pool_threads()
if not _BACKEND_STARTED_BEFORE_IMPORT:
  _raised_to = ensure_collective_threads()
  if _raised_to is not None:
    logging.getLogger(__name__).info(
        "PJRT_NPROC=%d: %d CPU devices need %d XLA:CPU pool threads each for their collectives.",
        _raised_to, requested_cpu_devices(), THREADS_PER_DEVICE)
