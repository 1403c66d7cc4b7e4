r"""Train-step speed of a config on this machine's devices: steps/s, examples/s, FLOPs and MFU.

  python benchmarks/train_step.py                                   # co_attention tiny, all devices
  python benchmarks/train_step.py --config=configs/pretrain/single_stream.py:small --steps=20 \
      --mesh=data=2,fsdp=2,tensor=2 --dtype=bfloat16 --peak_flops=1e11
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/train_step.py --mesh=fsdp=8
  python benchmarks/train_step.py --table --sizes=tiny,base      # every family; JSON to benchmarks/results/

Batches are synthetic (the input pipeline has its own benchmark, benchmarks/input_pipeline.py), so the
numbers are the jitted step alone: `Setup(config).jit_train_step()` on a state initialised into its
shardings. FLOPs are XLA's cost analysis of the compiled step; MFU needs a peak (auto on TPU/GPU).

`--table` measures one config per fusion family at each of `--sizes` (batch 8, 20 text tokens unless
set): parameters, FLOPs per step, compile time, median step time over rounds, examples/s, peak memory
(XLA's buffer assignment: arguments + outputs + temporaries - aliased, per device) and the fraction of the
float32 matmul ceiling that XLA reaches on this machine, measured in the same run. The table is printed
as Markdown and written as JSON to `benchmarks/results/train_step_<device>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import machine  # noqa: E402
from vlfusion import partitioning  # noqa: E402
from vlfusion.training import reporting, trainer  # noqa: E402


def load_config(spec: str):
  """`path[:arg]` (from the current directory) -> the config its `get_config(arg)` returns, unlocked."""
  from vlfusion import configuration

  return configuration.load_config_file(spec, root=os.getcwd())


def synthetic_batch(config, seed: int) -> dict[str, np.ndarray]:
  """A global batch of random inputs and MLM/ITM targets with the shapes `config` implies."""
  rng = np.random.default_rng(seed)
  m, b, lt = config.model, config.data.global_batch_size, config.data.max_text_len
  batch = {
      "text_ids": rng.integers(5, m.text.vocab_size, (b, lt)).astype(np.int32),
      "text_mask": np.ones((b, lt), bool),
      "example_mask": np.ones((b,), bool),
      "itm_labels": rng.integers(0, 2, b).astype(np.int32),
      "mlm_targets": rng.integers(5, m.text.vocab_size, (b, lt)).astype(np.int32),
      "mlm_weights": (rng.uniform(size=(b, lt)) < 0.15).astype(np.float32),
  }
  if m.image.input == "regions":
    r = m.image.num_regions
    batch["regions"] = {
        "features": rng.normal(size=(b, r, m.image.feature_dim)).astype(np.float32),
        "boxes": rng.uniform(size=(b, r, m.image.box_dim)).astype(np.float32),
        "mask": np.ones((b, r), bool),
    }
  else:
    s = m.image.image_size
    batch["image"] = rng.normal(size=(b, s, s, 3)).astype(np.float32)
  return batch


# One config per fusion family, as the table lists them.
FAMILIES = {
    "single_stream": "configs/pretrain/single_stream.py",
    "co_attention": "configs/pretrain/co_attention.py",
    "merged_attention": "configs/pretrain/meter_merged.py",
    "one_way": "configs/pretrain/albef.py",
    "dual_encoder": "configs/pretrain/dual_encoder.py",
}
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def xla_matmul_ceiling(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5) -> float:
  """The best float32 FLOP/s of one jitted square matmul on the default device, over `sizes`."""
  best = 0.0
  rng = np.random.default_rng(0)
  mm = jax.jit(jnp.matmul)
  for n in sizes:
    a, b = (jnp.asarray(x) for x in rng.normal(size=(2, n, n)).astype(np.float32))
    mm(a, b).block_until_ready()
    for _ in range(repeats):
      start = time.perf_counter()
      mm(a, b).block_until_ready()
      best = max(best, 2 * n**3 / (time.perf_counter() - start))
  return best


def peak_bytes(compiled) -> int | None:
  """Device memory the compiled step needs at its peak, from XLA's buffer assignment."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # noqa: BLE001 - a backend without memory analysis.
    return None


def measure(config, rounds: int, steps: int) -> dict:
  """Parameters, FLOPs, compile time, median step time over `rounds` of `steps` steps, peak memory."""
  setup = trainer.Setup(config, jax.devices()[:1])
  state = setup.initial_state()
  batch = synthetic_batch(config, 0)
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    batch = partitioning.to_global_batch(batch, setup.mesh)
    start = time.perf_counter()
    step_fn = setup.jit_train_step().lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    flops = setup.flops_per_device_step(step_fn, batch)
    state, metrics = step_fn(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(rounds):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step_fn(state, batch)
      jax.block_until_ready((state, metrics))
      times.append((time.perf_counter() - start) / steps)
  step_s = statistics.median(times)
  return {"params": int(sum(x.size for x in jax.tree.leaves(state.params))), "flops": flops,
          "compile_s": compile_s, "step_s": step_s, "step_s_rounds": times,
          "examples_per_s": config.data.global_batch_size / step_s, "peak_bytes": peak_bytes(step_fn),
          "loss": float(metrics["loss"])}


def table(args) -> None:
  """Every family at every size of `args.sizes`: Markdown to stdout, JSON to benchmarks/results/."""
  rows = []
  for size in args.sizes.split(","):
    for family, path in FAMILIES.items():
      config = load_config(f"{path}:{size}")
      config.data.global_batch_size = args.batch_size or 8
      config.data.max_text_len = args.text_len
      config.mesh.data = 1
      row = {"family": family, "config": f"{path}:{size}", "size": size,
             **measure(config, args.rounds, args.steps)}
      rows.append(row)
      print(f"measured {family} {size}: {row['step_s']:.3f} s/step", flush=True)
  ceiling = xla_matmul_ceiling()
  print(f"\nmachine: {machine.summary(machine.describe())}")
  print(f"XLA float32 matmul ceiling on this machine, this run: {ceiling / 1e9:.0f} GFLOP/s\n")
  print("| family | size | params | GFLOP/step | compile s | step s | examples/s | peak MB | of ceiling |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    r["ceiling_fraction"] = r["flops"] / r["step_s"] / ceiling if r["flops"] else None
    frac = f"{r['ceiling_fraction']:.0%}" if r["ceiling_fraction"] is not None else "?"
    mem = f"{r['peak_bytes'] / 2**20:.0f}" if r["peak_bytes"] else "?"
    print(f"| {r['family']} | {r['size']} | {r['params'] / 1e6:.1f}M | {(r['flops'] or 0) / 1e9:.1f} | "
          f"{r['compile_s']:.1f} | {r['step_s']:.3f} | {r['examples_per_s']:.1f} | {mem} | {frac} |")
  device = jax.devices()[0]
  os.makedirs(RESULTS_DIR, exist_ok=True)
  out = args.json or os.path.join(RESULTS_DIR, f"train_step_{device.platform}.json")
  with open(out, "w") as f:
    json.dump({"device": f"{device.device_kind} ({platform.machine()}, {os.cpu_count()} CPUs)",
               "machine": machine.describe(), "jax": jax.__version__, "batch_size": args.batch_size or 8,
               "text_len": args.text_len,
               "matmul_ceiling_flops": ceiling, "rows": rows}, f, indent=1)
  print(f"\nwritten {out}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pretrain/co_attention.py:tiny")
  parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up step")
  parser.add_argument("--mesh", default="", help="e.g. data=2,fsdp=2,tensor=2 (default: data=all)")
  parser.add_argument("--batch_size", type=int, default=0, help="global batch (default: the config's)")
  parser.add_argument("--dtype", default="", help="model compute dtype, e.g. bfloat16")
  parser.add_argument("--remat_policy", default="")
  parser.add_argument("--peak_flops", type=float, default=0.0, help="peak FLOP/s per device for MFU")
  parser.add_argument("--table", action="store_true", help="every family at --sizes (see above)")
  parser.add_argument("--sizes", default="tiny,base")
  parser.add_argument("--text_len", type=int, default=20, help="text tokens (--table)")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds of --steps steps (--table)")
  parser.add_argument("--json", default="", help="where --table writes its JSON")
  args = parser.parse_args()
  if args.table:
    return table(args)

  config = load_config(args.config)
  for part in filter(None, args.mesh.split(",")):
    axis, size = part.split("=")
    config.mesh[axis.strip()] = int(size)
  if args.batch_size:
    config.data.global_batch_size = args.batch_size
  if args.dtype:
    config.model.dtype = args.dtype
  if args.remat_policy:
    config.model.remat_policy = args.remat_policy

  setup = trainer.Setup(config)
  state = setup.initial_state()
  batches = [synthetic_batch(config, s) for s in range(2)]
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    batches = [partitioning.to_global_batch(b, setup.mesh) for b in batches]
    start = time.perf_counter()
    step_fn = setup.jit_train_step().lower(state, batches[0]).compile()
    compile_seconds = time.perf_counter() - start
    flops = setup.flops_per_device_step(step_fn, batches[0])
    state, metrics = step_fn(state, batches[0])  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(args.steps):
      state, metrics = step_fn(state, batches[i % 2])
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start

  n = len(setup.devices)
  peak = reporting.peak_flops_per_device(args.peak_flops, setup.devices[0].device_kind)
  steps_per_sec = args.steps / seconds
  sizes = dict(zip(setup.mesh.axis_names, setup.mesh.devices.shape, strict=True))
  print(f"config {args.config}  mesh {sizes}  devices {n} x {setup.devices[0].device_kind}  "
        f"batch {config.data.global_batch_size}  dtype {config.model.dtype}  "
        f"remat {config.model.remat_policy}")
  print(f"compile            {compile_seconds:.1f} s")
  print(f"steps/s            {steps_per_sec:.3f}")
  print(f"examples/s         {steps_per_sec * config.data.global_batch_size:.1f}")
  if flops:
    print(f"FLOPs/step         {flops * n:.4g} (XLA; {flops:.4g} per device)")
    print(f"TFLOP/s per device {flops * steps_per_sec / 1e12:.4g}")
    if peak:
      print(f"MFU                {flops * steps_per_sec / peak:.2%} of {peak:.4g} FLOP/s per device")
    else:
      print("MFU                unknown: no peak for this device kind (pass --peak_flops)")
  print(f"final loss         {float(metrics['loss']):.4f}")


if __name__ == "__main__":
  main()
