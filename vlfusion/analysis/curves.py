r"""Curves of runs side by side: a metric of `metrics.jsonl` against the step, one line per workdir, as a PNG.

  python -m vlfusion.analysis.curves --out=vqa.png --metrics=vqa_loss,eval/vqa_accuracy \
      --runs=pretrained=W_vqa_pre,scratch=W_vqa_scratch

One panel per metric; drawn with Pillow (no plotting library needed).
"""

from __future__ import annotations

from absl import app, flags

from vlfusion.rundir import Workdir

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
W, H, MARGIN = 420, 260, 46


def read_metric(workdir: str, metric: str) -> list[tuple[int, float]]:
  """(step, value) of every record of `workdir/metrics.jsonl` that has `metric`."""
  records = Workdir(workdir).read_metrics()
  return [(r["step"], float(r[metric])) for r in records if metric in r]


def _panel(series: dict[str, list[tuple[int, float]]], metric: str):
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  image = Image.new("RGB", (W, H), "white")
  draw = ImageDraw.Draw(image)
  points = [p for s in series.values() for p in s]
  if not points:
    draw.text((MARGIN, H // 2), f"no {metric}", fill="black", font=font)
    return image
  x0, x1 = 0, max(s for s, _ in points)
  y0, y1 = min(v for _, v in points), max(v for _, v in points)
  if y1 - y0 < 1e-9:
    y0, y1 = y0 - 0.5, y1 + 0.5
  sx = lambda s: MARGIN + (s - x0) / max(x1 - x0, 1) * (W - MARGIN - 12)
  sy = lambda v: H - MARGIN + 14 - (v - y0) / (y1 - y0) * (H - MARGIN - 20)
  draw.rectangle([MARGIN, 6, W - 12, H - MARGIN + 14], outline=(160, 160, 160))
  for k in range(5):
    v = y0 + (y1 - y0) * k / 4
    draw.text((2, sy(v) - 5), f"{v:.3g}", fill="black", font=font)
    s = x0 + (x1 - x0) * k / 4
    draw.text((sx(s) - 10, H - MARGIN + 18), f"{int(s)}", fill="black", font=font)
  draw.text((W // 2 - 60, H - 14), f"x: step   y: {metric}", fill="black", font=font)
  for i, (name, s) in enumerate(series.items()):
    colour = COLOURS[i % len(COLOURS)]
    xy = [(sx(a), sy(b)) for a, b in s]
    if len(xy) > 1:
      draw.line(xy, fill=colour, width=2)
    for x, y in xy:
      draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((MARGIN + 6, 10 + 12 * i), f"{name}: last {s[-1][1]:.3g}" if s else name, fill=colour,
              font=font)
  return image


def plot(runs: dict[str, str], metrics: list[str], out: str) -> str:
  """Writes one PNG with a panel per metric and a line per run ({label: workdir}); returns `out`."""
  from PIL import Image

  panels = [_panel({label: read_metric(w, m) for label, w in runs.items()}, m) for m in metrics]
  sheet = Image.new("RGB", (W * len(panels), H), "white")
  for i, panel in enumerate(panels):
    sheet.paste(panel, (i * W, 0))
  sheet.save(out)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  runs = dict(part.split("=", 1) for part in f.runs.split(","))
  print(plot(runs, f.metrics.split(","), f.out))


def define_flags() -> None:
  """The command line's flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_string("runs", None, "label=workdir,... (one line per run).")
  flags.DEFINE_string("metrics", "loss", "Comma-separated metrics of metrics.jsonl.")
  flags.DEFINE_string("out", None, "The PNG to write.")
  flags.mark_flags_as_required(["runs", "out"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
