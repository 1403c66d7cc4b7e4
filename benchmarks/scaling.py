r"""How a train step's time and memory grow with the number of image and text tokens, per fusion family.

  python benchmarks/scaling.py                                # small size, batch 8: some minutes
  python benchmarks/scaling.py --size=tiny --image_tokens=36,144 --text_tokens=16,32 --out=/tmp/s.png

Every family reads region features (image tokens = regions, so 36 to 576 tokens need no resizing) at
one size. One sweep varies the image tokens at a fixed text length, the other the text tokens at a fixed
number of regions. Each point is a compiled step: its median time over rounds, XLA's peak memory
(arguments + outputs + temporaries) and XLA's FLOPs. The FLOPs prediction of a point is its FLOPs
times the seconds per FLOP of the family's first point: where the measured line leaves it, the cost
is not in the matmuls (attention's softmax and masks grow with Lq·Lk, memory traffic, overheads).
Single-stream attention grows with (Lt+Li)², co-attention with Lt·Li plus each stream's own square.

Writes a PNG (default: scaling_tokens.png in the system's temp folder; the plot is an output, not part
of the repository) and the numbers as JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_step import FAMILIES, RESULTS_DIR, load_config, measure  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def regions_config(family: str, size: str, batch_size: int, regions: int, text_len: int):
  """`family`'s config at `size` over `regions` region features and `text_len` tokens, MLM + ITM."""
  config = load_config(f"{FAMILIES[family]}:{size}")
  m = config.model
  m.image.input = "regions"
  m.image.embedding = ""
  m.image.num_regions = regions
  m.text.max_len = max(m.text.max_len, text_len)
  m.heads = ("mlm", "itm")
  config.objectives = dict(mlm=1.0, itm=1.0, mrm=0.0, itc=0.0, vqa=0.0, pairs=0.0)
  config.data.global_batch_size = batch_size
  config.data.max_text_len = text_len
  config.mesh.data = 1
  return config


COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
PANEL_W, PANEL_H, LEFT, BOTTOM = 470, 300, 58, 40


def _dashed(draw, xy, fill, dash: float = 6.0) -> None:
  """A dashed polyline through the points `xy`."""
  for (xa, ya), (xb, yb) in zip(xy, xy[1:], strict=False):
    length = max(((xb - xa) ** 2 + (yb - ya) ** 2) ** 0.5, 1e-9)
    n = int(length // dash)
    for k in range(0, n + 1, 2):
      t0, t1 = k * dash / length, min((k + 1) * dash / length, 1.0)
      draw.line([(xa + (xb - xa) * t0, ya + (yb - ya) * t0), (xa + (xb - xa) * t1, ya + (yb - ya) * t1)],
                fill=fill, width=2)


def _scaling_chart(series: dict, key: str, xlabel: str, ylabel: str, predict: bool):
  """One chart: x = tokens (log2 axis), y = `key` of each point, a line per family."""
  import math

  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
  draw = ImageDraw.Draw(image)
  scale = 2**20 if key == "peak_bytes" else 1.0
  lines = {}
  for family, points in series.items():
    xs = [p["tokens"] for p in points]
    lines[family] = (xs, [p[key] / scale for p in points])
    if predict:  # the first point's seconds per FLOP, carried along the FLOPs.
      per_flop = points[0]["step_s"] / points[0]["flops"]
      lines[family + "/flops"] = (xs, [p["flops"] * per_flop for p in points])
  all_x = [x for xs, _ in lines.values() for x in xs]
  all_y = [y for _, ys in lines.values() for y in ys]
  x0, x1 = math.log2(min(all_x)), math.log2(max(all_x))
  y0, y1 = 0.0, max(all_y) * 1.05
  right, top = PANEL_W - 12, 10
  sx = lambda x: LEFT + (math.log2(x) - x0) / max(x1 - x0, 1e-9) * (right - LEFT)
  sy = lambda y: PANEL_H - BOTTOM - (y - y0) / (y1 - y0) * (PANEL_H - BOTTOM - top)
  draw.rectangle([LEFT, top, right, PANEL_H - BOTTOM], outline=(160, 160, 160))
  for k in range(5):
    v = y0 + (y1 - y0) * k / 4
    draw.line([(LEFT, sy(v)), (right, sy(v))], fill=(235, 235, 235))
    draw.text((4, sy(v) - 5), f"{v:.3g}", fill="black", font=font)
  for x in sorted(set(all_x)):
    draw.text((sx(x) - 8, PANEL_H - BOTTOM + 4), str(x), fill="black", font=font)
  draw.text((LEFT, PANEL_H - 16), f"x: {xlabel} (log scale)   y: {ylabel}", fill="black", font=font)
  for i, family in enumerate(series):
    colour = COLOURS[i % len(COLOURS)]
    xs, ys = lines[family]
    xy = [(sx(a), sy(b)) for a, b in zip(xs, ys, strict=True)]
    draw.line(xy, fill=colour, width=2)
    for x, y in xy:
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    if predict:
      xs, ys = lines[family + "/flops"]
      _dashed(draw, [(sx(a), sy(b)) for a, b in zip(xs, ys, strict=True)], colour)
    draw.text((LEFT + 6, top + 4 + 12 * i), family, fill=colour, font=font)
  if predict:
    draw.text((LEFT + 6, top + 4 + 12 * len(series)), "dashed: FLOPs prediction", fill="black",
              font=font)
  return image


def plot(results: dict, out: str, title: str) -> None:
  """Step time (with the FLOPs prediction) and peak memory against image and text tokens: a PNG."""
  from PIL import Image, ImageDraw, ImageFont

  sheet = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H + 24), "white")
  ImageDraw.Draw(sheet).text((8, 6), title, fill="black", font=ImageFont.load_default())
  for col, (axis, label) in enumerate((("image", "image tokens"), ("text", "text tokens"))):
    sheet.paste(_scaling_chart(results[axis], "step_s", label, "step time, s", True), (col * PANEL_W, 24))
    sheet.paste(_scaling_chart(results[axis], "peak_bytes", label, "peak memory, MiB (XLA)", False),
                (col * PANEL_W, 24 + PANEL_H))
  sheet.save(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--families", default=",".join(FAMILIES))
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_tokens", default="36,144,576")
  parser.add_argument("--text_tokens", default="20,80,320")
  parser.add_argument("--fixed_image", type=int, default=36, help="regions while the text varies")
  parser.add_argument("--fixed_text", type=int, default=20, help="text tokens while the image varies")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "scaling_tokens.png"))
  args = parser.parse_args()

  families = [f.strip() for f in args.families.split(",") if f.strip()]
  results = {"image": {}, "text": {}}
  for family in families:
    for axis, values in (("image", args.image_tokens), ("text", args.text_tokens)):
      points = []
      for n in (int(v) for v in values.split(",")):
        regions, text = (n, args.fixed_text) if axis == "image" else (args.fixed_image, n)
        config = regions_config(family, args.size, args.batch_size, regions, text)
        point = {"tokens": n, **measure(config, args.rounds, args.steps)}
        points.append(point)
        print(f"{family:16s} {axis} {n:4d}: {point['step_s']:.3f} s/step, "
              f"{point['flops'] / 1e9:.2f} GFLOP, {point['peak_bytes'] / 2**20:.0f} MiB", flush=True)
      results[axis][family] = points
  title = (f"train step vs tokens, {args.size} size, batch {args.batch_size} "
           f"(text {args.fixed_text} while regions vary; {args.fixed_image} regions while text varies)")
  plot(results, args.out, title)
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, f"scaling_{args.size}.json"), "w") as f:
    json.dump({"args": vars(args), "results": results}, f, indent=1)
  print(f"written {args.out}")


if __name__ == "__main__":
  main()
