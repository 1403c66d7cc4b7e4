"""vlfusion.analysis.curves: a panel per metric, a line per run, from metrics.jsonl."""

import json

import numpy as np
from PIL import Image

from vlfusion.analysis import curves


def test_one_panel_per_metric_one_line_per_run(tmp_path):
  runs = {}
  for label, slope in (("a", 0.1), ("b", 0.2)):
    workdir = tmp_path / label
    workdir.mkdir()
    with open(workdir / "metrics.jsonl", "w") as f:
      for step in (10, 20, 30):
        f.write(json.dumps({"step": step, "loss": 1 - slope * step / 30}) + "\n")
      f.write(json.dumps({"step": 30, "eval/acc": slope}) + "\n")
    runs[label] = str(workdir)
  assert curves.read_metric(runs["b"], "loss") == [(10, 1 - 0.2 / 3), (20, 1 - 0.4 / 3), (30, 0.8)]
  out = curves.plot(runs, ["loss", "eval/acc"], str(tmp_path / "c.png"))
  image = np.asarray(Image.open(out).convert("RGB"))
  assert image.shape == (curves.H, 2 * curves.W, 3)
  for colour in curves.COLOURS[:2]:  # both runs drawn in both panels.
    for panel in (image[:, :curves.W], image[:, curves.W:]):
      assert np.all(panel == colour, axis=-1).any()
