"""Stress test of collectives across several CPU devices in one process (docs/reliability.md).

XLA:CPU deadlocks, and aborts after its rendezvous timeout, when a program with collectives runs over
several CPU devices with too few threads in its pool (vlfusion/cpu_threads.py). This repeats the sequence
that showed it, each run in a fresh process, and counts the runs that did not finish:

- `--mode=jit`: a jitted step of independent matmuls whose results are reduced across the devices,
  dispatched `--steps` times without waiting (as the training loop does) — the smallest program seen
  to deadlock;
- `--mode=train`: the training run of tests/evaluation/test_evaluators.py (single_stream tiny, VQA,
  250 steps, two evaluators at the end) — where the abort was first seen.

    python benchmarks/collectives.py --runs=10                      # as vlfusion runs (pool raised)
    python benchmarks/collectives.py --runs=10 --pool=2             # the pool XLA picks on 2 cores
    python benchmarks/collectives.py --mode=train --runs=10 --pool=2

It prints one line, `collectives: <mode>, <d> devices, pool <p>: <a> aborted of <n> runs (<s> s/run)`.
`--pool=N` sets PJRT_NPROC=N in the runs and keeps vlfusion from raising it (`jit` does not import
vlfusion; `train` reads the pool it is given). The XLA rendezvous timeout is cut to `--timeout_s` so a
deadlocked run fails fast.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def jit_child(steps: int) -> None:
  """The minimal program: W independent matmul branches, each reduced across devices, not awaited."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec

  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
  rows, replicated = NamedSharding(mesh, PartitionSpec("d")), NamedSharding(mesh, PartitionSpec())

  @jax.jit
  def step(ws, x):
    outs = [jnp.tanh(x @ w).sum(0) for w in ws]  # sums over the sharded rows: all-reduces.
    return [w * jnp.tanh(x @ w).mean() - 1e-3 * o.mean() for w, o in zip(ws, outs, strict=True)], x

  rng = np.random.default_rng(0)
  ws = [jax.device_put(rng.random((64, 64), np.float32), replicated) for _ in range(8)]
  x = jax.device_put(rng.random((16 * n, 64), np.float32), rows)
  for _ in range(steps):
    ws, x = step(ws, x)
  jax.block_until_ready(ws)


def train_child(workdir: str, data_dir: str) -> None:
  """The training run of tests/evaluation/test_evaluators.py, on the shapes world."""
  from configs.pretrain import single_stream
  from tests.conftest import tiny_config
  from vlfusion import experiment
  from vlfusion.data import questions

  steps = 250
  config = tiny_config(single_stream, data_dir, **{
      "objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.vqa": 1.0, "model.heads": ("vqa",),
      "model.vqa.num_answers": len(questions.ANSWERS), "train.num_steps": steps,
      "train.log_every_steps": steps, "train.checkpoint_every_steps": steps, "eval.every_steps": steps,
      "optimizer.warmup_steps": 20, "model.dropout": 0.0, "model.pooler": "concat",
      "model.initializer_range": 0.1})
  config.evals = {"val": {"data": {"split": "validation"}, "tasks": ("vqa",), "batch_size": 128},
                  "test": {"data": {"split": "test"}, "tasks": ("vqa", "itm"), "batch_size": 256}}
  experiment.train_and_evaluate(config, workdir)


def child_env(devices: int, pool: int | None, timeout_s: int) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS=(
      f"--xla_force_host_platform_device_count={devices} {FAST_XLA} "
      f"--xla_cpu_collective_call_warn_stuck_timeout_seconds={max(1, timeout_s // 2)} "
      f"--xla_cpu_collective_call_terminate_timeout_seconds={timeout_s}"))
  env.pop("PJRT_NPROC", None)
  env.pop("NPROC", None)
  if pool is not None:
    env["PJRT_NPROC"] = str(pool)
    env["VLFUSION_KEEP_PJRT_NPROC"] = "1"
  return env


def run_once(mode: str, devices: int, pool: int | None, steps: int, timeout_s: int, work: str
             ) -> tuple[bool, float, str]:
  """(finished, seconds, the tail of stderr) of one run in a fresh process."""
  args = [sys.executable, os.path.abspath(__file__), f"--child={mode}", f"--steps={steps}",
          f"--work={work}"]
  start = time.perf_counter()
  proc = subprocess.run(args, cwd=ROOT, env=child_env(devices, pool, timeout_s), capture_output=True,
                        text=True, timeout=timeout_s + 900)
  return proc.returncode == 0, time.perf_counter() - start, proc.stderr[-2000:]


def main(argv: list[str] | None = None) -> str:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--mode", choices=("jit", "train"), default="jit")
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--pool", type=int, default=None,
                      help="PJRT_NPROC for the runs (default: what vlfusion sets)")
  parser.add_argument("--steps", type=int, default=1000, help="jit steps per run")
  parser.add_argument("--timeout_s", type=int, default=10, help="XLA's rendezvous termination timeout")
  parser.add_argument("--work", default=os.path.join(ROOT, "workdir", "collectives"))
  parser.add_argument("--child", choices=("jit", "train"), default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child == "jit":
    if os.environ.get("VLFUSION_KEEP_PJRT_NPROC") != "1":
      import vlfusion  # noqa: F401 - raises the pool before JAX starts.
    jit_child(args.steps)
    return ""
  if args.child == "train":
    import tempfile

    train_child(tempfile.mkdtemp(dir=args.work), os.path.join(args.work, "tfds"))
    return ""
  os.makedirs(args.work, exist_ok=True)
  if args.mode == "train":  # prepare the dataset once, outside the timed runs.
    run_once("train", 1, None, 0, args.timeout_s, args.work)
  from vlfusion import cpu_threads

  pool = args.pool if args.pool is not None else cpu_threads.needed_threads(args.devices)
  aborted, seconds = 0, []
  for i in range(args.runs):
    ok, s, err = run_once(args.mode, args.devices, args.pool, args.steps, args.timeout_s, args.work)
    seconds.append(s)
    if not ok:
      aborted += 1
      reason = "rendezvous timeout" if "Termination timeout" in err else err.strip().splitlines()[-1:]
      print(f"run {i}: aborted ({reason})", file=sys.stderr)
  line = (f"collectives: {args.mode}, {args.devices} devices, pool {pool}: {aborted} aborted of "
          f"{args.runs} runs ({sum(seconds) / max(len(seconds), 1):.1f} s/run)")
  print(line)
  return line


if __name__ == "__main__":
  main()
