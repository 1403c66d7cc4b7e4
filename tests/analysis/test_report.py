"""The sweep report on hand-made workdirs: means and spreads over seeds, unfinished runs left out, the
Markdown, CSV and plots."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from vlfusion import configuration
from vlfusion.analysis import plots, report


def _eval(step, itm, relation, vqa=None, colour=None, r1=None):
  default = {"dataset": "shapes_world/tiny", "split": "validation"}
  if itm is not None:
    default["itm"] = {"accuracy": itm, "accuracy_shuffled_images": 0.5, "count": 512, "by_kind": {
        "positive": {"accuracy": 0.9, "count": 256}, "relation": {"accuracy": relation, "count": 85}}}
    default["mlm"] = {"accuracy": 0.4, "count": 900}
  if vqa is not None:
    default["vqa"] = {"accuracy": vqa, "accuracy_shuffled_images": 0.38, "text_prior_accuracy": 0.4,
                      "count": 512, "by_type": {"colour": {"accuracy": colour, "count": 100}}}
  if r1 is not None:
    default["itc"] = {"accuracy": r1, "count": 256, "text_to_image": {"r1": r1, "r5": 0.9},
                      "image_to_text": {"r1": r1 / 2}}
  return {"step": step, "config_digest": "c", "params_digest": "p", "default": default}


def _workdir(root, name, stage, final, evals, flops=None, rates=(10.0, 30.0, 20.0), batch=32):
  workdir = os.path.join(root, name, stage)
  os.makedirs(os.path.join(workdir, "eval"))
  config = {"train": {"num_steps": final}, "data": {"global_batch_size": batch}}
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  for step, result in evals.items():
    with open(os.path.join(workdir, "eval", f"step_{step}.json"), "w") as f:
      json.dump({"evaluator_digest": configuration.evaluator_digest(config), **result}, f)  # the run's own.
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for i, rate in enumerate(rates):
      record = {"step": 10 * (i + 1), "examples_per_sec": rate, "loss": 1.0}
      if i == 0 and flops:
        record["flops_per_step"] = flops
      f.write(json.dumps(record) + "\n")
    f.write('{"step": 40, "loss"')  # a line a crash cut short.


def _root(tmp_path, values=None):
  root = str(tmp_path / "root")
  variants, runs = [], []
  # group -> seed -> (final ITM, relation, final VQA, colour); "late" seed s1 never finished its VQA.
  values = values or {"fused": {"s0": (0.8, 0.6, 0.7, 0.9), "s1": (0.9, 0.8, 0.5, 0.7)},
                      "late": {"s0": (0.7, 0.5, 0.6, 0.8), "s1": (0.75, 0.55, None, None)}}
  for group, seeds in values.items():
    for seed, (itm, rel, vqa, colour) in seeds.items():
      name = f"{group}-{seed}"
      variants.append({"name": name, "group": group, "labels": {"family": group, "seed": seed},
                       "matched": {}, "count": {"params": 1.0e6 if group != "late" else 1.01e6,
                                                "target": 1.0e6}})
      _workdir(root, name, "pretrain", 100, {50: _eval(50, itm - 0.1, rel - 0.1),
                                             100: _eval(100, itm, rel, r1=0.25)},
               flops=3.2e9 if group == "fused" else 1.6e9)
      vqa_evals = {50: _eval(50, None, None, vqa=0.3, colour=0.3)}
      if vqa is not None:
        vqa_evals[100] = _eval(100, None, None, vqa=vqa, colour=colour)
      _workdir(root, name, "vqa", 100, vqa_evals)
      runs += [{"variant": name, "stage": s, "workdir": f"{name}/{s}"} for s in ("pretrain", "vqa")]
  plan = {"sweep": "configs/sweeps/example.py", "seed_axis": "seed", "description": "an example",
          "match": {"by": "params", "target": "fused", "stage": "pretrain"},
          "stages": [{"name": "pretrain"}, {"name": "vqa", "init_from": "pretrain"}],
          "variants": variants, "runs": runs}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(plan, f)
  return root


def test_report_tables_means_spreads_and_plots(tmp_path):
  root = _root(tmp_path)
  out = str(tmp_path / "out")
  report.main([f"--root={root}", f"--out={out}"])
  paths = {"markdown": f"{out}/report.md", "csv": f"{out}/report.csv", "curves": f"{out}/curves.png",
           "accuracy_vs_flops": f"{out}/accuracy_vs_flops.png"}

  with open(paths["csv"]) as f:
    rows = {r["variant"]: r for r in csv.DictReader(f)}
  fused, late = rows["fused"], rows["late"]
  assert float(fused["pretrain itm/relation mean"]) == 0.7
  assert np.isclose(float(fused["pretrain itm/relation sd"]), np.std([0.6, 0.8], ddof=1))
  assert float(fused["vqa vqa/colour mean"]) == 0.8 and fused["vqa vqa/colour n"] == "2"
  assert float(fused["pretrain itc R@1 mean"]) == 0.25
  assert float(fused["params mean"]) == 1.0e6 and fused["params n"] == "2"  # once per seed.
  # FLOPs per example: XLA's count of the step over the batch; examples/s: the median window.
  assert np.isclose(float(fused["pretrain GFLOPs/example mean"]), 0.1)
  assert float(late["pretrain examples/s mean"]) == 20.0
  # The unfinished VQA run of late-s1 is left out: one seed, no spread.
  assert late["vqa vqa n"] == "1" and late["vqa vqa sd"] == "" and float(late["vqa vqa mean"]) == 0.6
  # 95% intervals: t over two seeds (t(0.975, 1) = 12.71); one seed: a bootstrap over its 512 questions.
  half = 12.706 * np.std([0.8, 0.9], ddof=1) / np.sqrt(2)
  assert np.isclose(float(fused["pretrain itm lo"]), 0.85 - half, atol=1e-3)
  assert float(fused["pretrain itm hi"]) == 1.0  # 0.85 + 0.635, clipped.
  assert fused["pretrain itm over"] == "seeds" and late["vqa vqa over"] == "examples"
  binomial = 1.96 * np.sqrt(0.6 * 0.4 / 512)
  assert np.isclose(float(late["vqa vqa lo"]), 0.6 - binomial, atol=0.006)
  assert np.isclose(float(late["vqa vqa hi"]), 0.6 + binomial, atol=0.006)
  assert fused["params lo"] == "" and fused["pretrain examples/s lo"] == ""  # costs have none.
  assert late["pretrain itm n"] == "2"

  text = open(paths["markdown"]).read()
  assert "6 of 8 stage runs finished" not in text and "7 of 8 stage runs finished" in text
  assert "| fused | 2 |" in text and "0.700 ± 0.141" in text  # itm/relation of fused.
  assert "## Stage `vqa`" in text and "![validation metrics against steps](curves.png)" in text

  for key in ("curves", "accuracy_vs_flops"):
    image = np.asarray(Image.open(paths[key]).convert("RGB"))
    assert image.shape[0] >= plots.PANEL_H and image.shape[1] >= plots.PANEL_W
    for colour in report.COLOURS[:2]:  # both variants are drawn in their colours.
      assert np.any(np.all(image == colour, axis=-1)), (key, colour)


def test_variants_are_separated_only_when_their_intervals_do_not_overlap(tmp_path):
  """Three seeds each: `tight` beats `loose` on ITM with intervals apart; on VQA colour their means
  differ by more but the seeds spread wider, so the intervals overlap and nothing is claimed."""
  values = {"tight": {f"s{i}": (0.90 + 0.005 * i, 0.6, 0.70, 0.9 - 0.2 * i) for i in range(3)},
            "loose": {f"s{i}": (0.80 + 0.005 * i, 0.6, 0.70, 0.5 + 0.2 * i) for i in range(3)}}
  root = _root(tmp_path, values)
  columns, rows = report.summarize(report.collect(root))
  split = report.separations(columns, rows)
  assert split["pretrain itm"] == [("tight", "loose")]
  assert "vqa vqa/colour" not in split and "pretrain itm/relation" not in split  # overlap; equal.
  text = report.markdown(columns, rows, report.collect(root))
  assert "- `itm`: tight > loose" in text


def test_interval_functions():
  from vlfusion.analysis import intervals

  lo, hi = intervals.seed_interval([0.5, 0.6, 0.7])  # t(0.975, 2) = 4.303, sd 0.1.
  assert np.isclose(hi - 0.6, 4.303 * 0.1 / np.sqrt(3), atol=1e-3) and np.isclose(lo + hi, 1.2)
  lo, hi = intervals.bootstrap_interval(0.5, 400)
  assert np.isclose(hi - lo, 2 * 1.96 * 0.025, atol=0.006)
  assert intervals.bootstrap_interval(0.5, 400) == (lo, hi)  # deterministic.
  wide = intervals.cell([0.1, 0.9])  # t(0.975, 1) = 12.7 would reach below 0 and above 1.
  assert (wide.lo, wide.hi) == (0.0, 1.0)
  one = intervals.cell([0.9], count=None)
  assert one.lo is None and not intervals.separated(one, intervals.cell([0.1, 0.1]))


def test_metrics_of_one_result():
  metrics = report.metrics_of_result(_eval(10, 0.8, 0.6, r1=0.5))
  assert metrics["itm"] == 0.8 and metrics["itm/relation"] == 0.6 and metrics["itm/positive"] == 0.9
  assert metrics["itm shuffled"] == 0.5 and metrics["itc R@1"] == 0.5
  assert metrics["itc image-to-text R@1"] == 0.25 and metrics["mlm"] == 0.4
  assert "step" not in metrics and "itc" not in metrics


def test_a_visual_entailment_result_gets_its_columns_in_label_order():
  ve = {"accuracy": 0.8, "accuracy_shuffled_images": 0.34, "text_prior_accuracy": 0.3, "count": 512,
        "by_label": {name: {"accuracy": a, "count": 170} for name, a in
                     (("contradiction", 0.9), ("entailment", 0.85), ("neutral", 0.65))}}
  metrics = report.counted_metrics({"step": 10, "default": {"split": "validation", "ve": ve}})
  assert metrics["ve"] == (0.8, 512) and metrics["ve shuffled"] == (0.34, 512)
  assert metrics["ve text prior"] == (0.3, 512) and metrics["ve/neutral"] == (0.65, 170)
  columns = sorted(metrics, key=report._metric_rank)
  assert columns == ["ve", "ve/entailment", "ve/neutral", "ve/contradiction", "ve shuffled", "ve text prior"]
  assert report.metric_title("ve/neutral") == "VE accuracy, neutral"


def test_report_refuses_a_result_of_another_eval_config(tmp_path):
  """A final result that another evaluator config produced (e.g. eval.py with other tasks) is not the
  stage's result: the report names the file instead of reporting it."""
  root = _root(tmp_path)
  path = os.path.join(root, "fused-s0", "vqa", "eval", "step_100.json")
  with open(path) as f:
    result = json.load(f)
  with open(path, "w") as f:
    json.dump(dict(result, evaluator_digest="another", config_digest="another"), f)
  with pytest.raises(ValueError, match="step_100.json"):
    report.collect(root)


def test_report_refuses_a_plan_whose_overrides_changed(tmp_path):
  """sweep.json listing other overrides than a run was made with (the sweep file changed since) is refused."""
  root = _root(tmp_path)
  with open(os.path.join(root, "sweep.json")) as f:
    plan = json.load(f)
  plan["runs"][0]["train"] = ["train.py", "--config=configs/x.py", "--config.train.num_steps=100"]
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(plan, f)
  report.collect(root)  # the plan its runs were made with.
  plan["runs"][0]["train"][-1] = "--config.train.num_steps=200"
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(plan, f)
  with pytest.raises(report.StaleResultError, match="config.json.*train.num_steps"):
    report.collect(root)
