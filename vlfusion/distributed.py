"""Multi-process setup: `jax.distributed` when the run spans several processes (hosts).

Three ways to launch (docs/scaling.md has the commands):

- explicit: every process gets `--coordinator_address=host:port --num_processes=N --process_id=i`
  (or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID);
- auto-detected: on Cloud TPU VMs (`gcloud ... ssh --worker=all`) and under SLURM (`srun`),
  `jax.distributed.initialize()` finds the coordinator and the process ids itself;
- single process: nothing of the above, nothing is initialised.

On CPU the cross-process collectives go through gloo. Only process 0 logs at INFO; the others log
warnings and errors only, so that a pod's console is not N copies of the same lines.
"""

from __future__ import annotations

import os

from absl import flags, logging

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator, for a run over several processes (default: "
    "$JAX_COORDINATOR_ADDRESS, or auto-detected on Cloud TPU and SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of a multi-process run (default: $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (default: $JAX_PROCESS_ID).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "auto: initialise jax.distributed when the flags, JAX_* variables, a multi-task SLURM job or a "
    "multi-host Cloud TPU say so; on: always (jax.distributed.initialize() detects the cluster); "
    "off: never.")

# Variables that mark a process as one of several, by launcher.
_SLURM_TASKS = "SLURM_NTASKS"
_TPU_HOSTS = "TPU_WORKER_HOSTNAMES"


def launch_settings(coordinator_address: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None, mode: str = "auto",
                    environ: dict[str, str] | None = None) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single-process run.

  Flags win over the JAX_* environment variables; with neither, a multi-task SLURM job or a
  multi-host Cloud TPU (several TPU_WORKER_HOSTNAMES) is initialised with auto-detection ({}).
  """
  env = os.environ if environ is None else environ
  if mode == "off":
    return None
  address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  count = num_processes if num_processes is not None else (
      int(env["JAX_NUM_PROCESSES"]) if env.get("JAX_NUM_PROCESSES") else None)
  index = process_id if process_id is not None else (
      int(env["JAX_PROCESS_ID"]) if env.get("JAX_PROCESS_ID") else None)
  if address or count is not None or index is not None:
    missing = [n for n, v in (("--coordinator_address", address), ("--num_processes", count),
                              ("--process_id", index)) if v is None]
    if missing:
      raise ValueError(f"a multi-process launch needs {missing} as well (flags or JAX_* variables)")
    if not 0 <= index < count:
      raise ValueError(f"--process_id={index} is not in [0, --num_processes={count})")
    return dict(coordinator_address=address, num_processes=count, process_id=index)
  if mode == "on":
    return {}
  if int(env.get(_SLURM_TASKS, "1") or 1) > 1:
    return {}
  if len([h for h in env.get(_TPU_HOSTS, "").split(",") if h]) > 1:
    return {}
  return None


def initialize() -> None:
  """Initialises `jax.distributed` from the flags/environment when the run spans several processes.

  Must run before anything touches a JAX backend (any jax.devices() or array).
  """
  settings = launch_settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             _DISTRIBUTED.value)
  if settings is None:
    return
  import jax

  # gloo makes cross-process collectives work between CPU processes; GPU/TPU ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**settings)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
