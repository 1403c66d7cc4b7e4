r"""Curves of runs side by side: a metric of `metrics.jsonl` against the step, one line per workdir, as a PNG.

  python -m vlfusion.analysis.curves --out=vqa.png --metrics=vqa_loss,eval/vqa_accuracy \
      --runs=pretrained=W_vqa_pre,scratch=W_vqa_scratch

One panel per metric; drawn with Pillow (no plotting library needed).
"""

from __future__ import annotations

from absl import app, flags

from vlfusion.analysis import plots
from vlfusion.rundir import Workdir

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
W, H = plots.PANEL_W, plots.PANEL_H


def read_metric(workdir: str, metric: str) -> list[tuple[int, float]]:
  """(step, value) of every record of `workdir/metrics.jsonl` that has `metric`."""
  records = Workdir(workdir).read_metrics()
  return [(r["step"], float(r[metric])) for r in records if metric in r]


def plot(runs: dict[str, str], metrics: list[str], out: str) -> str:
  """Writes one PNG with a panel per metric and a line per run ({label: workdir}); returns `out`."""
  from PIL import Image

  colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(runs)}
  panels = []
  for m in metrics:
    series = {label: read_metric(w, m) for label, w in runs.items()}
    lines = {label: {"line": s, "label": f"{label}: {s[-1][1]:.3g}" if s else label}
             for label, s in series.items()}
    panels.append(plots.panel(m, "step", lines, colours))
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
