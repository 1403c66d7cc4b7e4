r"""The results of a sweep as a table (Markdown + CSV) and plots, read from the variants' workdirs.

  python -m vlfusion.analysis.report --root=runs/fusion_ablation      # writes into the root
  python -m vlfusion.analysis.report --root=runs/fusion_ablation --out=docs/results/fusion_ablation

Per variant (the sweep's variants without the seed axis), each as mean ± standard deviation over the
seeds that finished, accuracies with a 95% interval (`intervals`: over seeds, or over the evaluated
examples for one seed): parameters, training FLOPs per example (XLA's count of the train step over the
batch), training examples/s, and the final evaluation of each stage: ITM accuracy overall, by kind
of negative (positive, random, attribute, relation) and on relation captions against their swaps,
each label weighing half (`itm relation balanced`: chance 0.5, the column that needs fusion), VQA
accuracy overall, with shuffled images and by question type, retrieval R@1, pair accuracy, MLM accuracy.
Plots: validation metrics against steps (one line per variant, the mean over seeds; dots are seeds),
and final accuracy against training FLOPs per example (bars span the 95% interval). Under each stage's
table, the pairs of variants whose intervals do not overlap on a metric: the differences the sweep can
tell from seed and sampling noise.

Reads `<root>/sweep.json` (written by vlfusion.analysis.sweep), each stage's `config.json`,
`metrics.jsonl` and `eval/step_<N>.json`; a stage counts once `eval/step_<final step>.json` exists. It
refuses a final result that another evaluator config wrote (`evaluation.results`) and a run whose config
is not the one the plan's overrides ask for, naming the file.
Drawn with Pillow, as vlfusion.analysis.curves.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
from typing import Any

from vlfusion.analysis import intervals, plots
from vlfusion.data.questions import QUESTION_TYPES  # the shapes world's, the order of by-type columns
from vlfusion.data.visual_entailment import LABELS as VE_LABELS  # the order of by-label columns
from vlfusion.evaluation import results
from vlfusion.rundir import Workdir, as_path

PLAN = "sweep.json"
NEGATIVE_KINDS = ("positive", "random", "attribute", "relation")
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _read_json(path: Any) -> Any:
  return json.loads(as_path(path).read_text())


def metrics_of_result(result: dict[str, Any]) -> dict[str, float]:
  """The reported accuracies of one `eval/step_<N>.json`, flat: `itm`, `itm/relation`, `itm relation
  balanced`, `vqa`, `vqa/colour`, `vqa shuffled`, `itc R@1`, ... Evaluators other than `default` prefix
  their name."""
  return {key: value for key, (value, _) in counted_metrics(result).items()}


def counted_metrics(result: dict[str, Any]) -> dict[str, tuple[float, int | None]]:
  """`metrics_of_result` with each figure's count of evaluated examples (None where none is given)."""
  out: dict[str, tuple[float, int | None]] = {}
  for name, tasks in result.items():
    if not isinstance(tasks, dict):
      continue  # step, config_digest, params_digest.
    prefix = "" if name == "default" else f"{name}:"
    for task, r in tasks.items():
      if not isinstance(r, dict):
        continue  # dataset, split.
      key = prefix + task
      count = r.get("count")
      if task in ("itc", "retrieval"):
        t2i = r.get("text_to_image", {})
        if "r1" in t2i:
          out[f"{key} R@1"] = float(t2i["r1"]), count
        i2t = r.get("image_to_text", {})
        if "r1" in i2t:
          out[f"{key} image-to-text R@1"] = float(i2t["r1"]), r.get("num_images")
        continue
      named = {"": r}
      if isinstance(r.get("relation_balanced"), dict):
        named[" relation balanced"] = r["relation_balanced"]
      for suffix, values in named.items():
        if "accuracy" in values:
          out[key + suffix] = float(values["accuracy"]), values.get("count")
        if "accuracy_shuffled_images" in values:
          out[f"{key}{suffix} shuffled"] = float(values["accuracy_shuffled_images"]), values.get("count")
      if "text_prior_accuracy" in r:
        out[f"{key} text prior"] = float(r["text_prior_accuracy"]), count
      for group in ("by_kind", "by_type", "by_label"):
        for sub, values in (r.get(group) or {}).items():
          if isinstance(values, dict) and "accuracy" in values:
            out[f"{key}/{sub}"] = float(values["accuracy"]), values.get("count")
  return out


def eval_results(workdir: str) -> dict[int, dict[str, Any]]:
  """{step: result} of every `eval/step_<N>.json` of `workdir`."""
  return Workdir(workdir).eval_results()


def training_scalars(workdir: str) -> dict[str, float]:
  """Training examples/s (median over the logged windows) and FLOPs per example (XLA's count of the
  train step divided by the global batch) from `metrics.jsonl` and `config.json`."""
  run = Workdir(workdir)
  out: dict[str, float] = {}
  records = run.read_metrics()  # a line cut short by a crash is left out.
  rates = [r["examples_per_sec"] for r in records if "examples_per_sec" in r]
  if rates:
    out["examples/s"] = float(statistics.median(rates))
  flops = [r["flops_per_step"] for r in records if "flops_per_step" in r]
  if flops and run.has_config():
    out["GFLOPs/example"] = flops[0] / run.read_raw_config()["data"]["global_batch_size"] / 1e9
  return out


class StaleResultError(ValueError):
  """A stage's workdir holds results or a config that are not those of the sweep's plan."""


def _check_overrides(run: dict[str, Any], config: dict[str, Any], config_path: str) -> None:
  """Refuses a run whose saved config differs from the overrides the plan lists for it: the sweep file
  changed after the run was made (paths, which a root may spell differently, are not compared)."""
  from vlfusion.analysis.sweep import render_value  # no JAX: the config file is not read.

  differ = []
  for arg in run.get("train") or []:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    field, value = arg[len("--config."):].split("=", 1)
    if field in ("init.checkpoint", "data.data_dir"):
      continue
    node: Any = config
    for part in field.split("."):
      node = node.get(part, "<absent>") if isinstance(node, dict) else "<absent>"
    if render_value(node) != value:
      differ.append(f"config.{field}: run {render_value(node)}, plan {value}")
  if differ:
    raise StaleResultError(
        f"{config_path} was made with other overrides than the plan lists ({'; '.join(differ[:6])}): the "
        "sweep file changed since its runs; rerun the sweep with the file they were made with, or delete "
        "those workdirs")


def collect(root: str) -> dict[str, Any]:
  """Every run of the sweep under `root`: its variant, group, stage and what its workdir holds.

  Raises `StaleResultError` when a run's config is not the plan's, or its final result came from another
  evaluator config than the run's own (`evaluation.results`); a result of another evaluator config at
  an earlier step is left out of the curve.
  """
  plan_path = as_path(root) / PLAN
  if not plan_path.is_file():
    raise FileNotFoundError(f"{plan_path} does not exist: run vlfusion.analysis.sweep (or its "
                            "--print_commands) with this --root first")
  plan = _read_json(plan_path)
  variants = {v["name"]: v for v in plan["variants"]}
  runs = []
  for r in plan["runs"]:
    workdir = os.path.join(root, r["workdir"])
    run = Workdir(workdir)
    v = variants[r["variant"]]
    config = run.read_raw_config()
    final = config["train"]["num_steps"] if config is not None else None
    if config is not None:
      _check_overrides(r, config, os.fspath(run.config_path))
    found = run.eval_results()
    own = {step: res for step, res in found.items()
           if config is not None and results.produced_by(res, config)}
    if final in found and final not in own:
      raise StaleResultError(
          f"stage {r['variant']}/{r['stage']}: "
          + results.mismatch(found[final], config, os.fspath(run.eval_result_path(final)))
          + f"; evaluate it with the run's own config: python eval.py --workdir={workdir} --step={final}")
    finished = final is not None and final in own
    runs.append({
        "variant": v["name"], "group": v["group"], "stage": r["stage"], "workdir": workdir,
        "seed": v["labels"].get(plan.get("seed_axis") or "", ""), "finished": finished,
        "final": counted_metrics(own[final]) if finished else {},
        "curve": {step: metrics_of_result(res) for step, res in own.items()},
        "training": training_scalars(workdir), "count": v.get("count", {}),
    })
  return {"plan": plan, "runs": runs}


def _parameters(runs: list[dict[str, Any]], plan: dict[str, Any]) -> dict[str, float]:
  """{variant: parameters} of the sweep's match stage (or the first): the matched count when the sweep
  matched parameters, else the model table's count of the stage's saved config."""
  match = plan.get("match") or {}
  stage = match.get("stage") or plan["stages"][0]["name"]
  out = {}
  for r in runs:
    if r["stage"] != stage:
      continue
    if match.get("by") == "params" and not match.get("count") and "params" in r["count"]:
      out[r["variant"]] = float(r["count"]["params"])
    elif Workdir(r["workdir"]).has_config():
      out[r["variant"]] = _model_table_params(Workdir(r["workdir"]).read_raw_config())
  return out


def _model_table_params(saved_config: dict[str, Any]) -> float:
  from vlfusion import configuration
  from vlfusion.analysis import model_table  # imports JAX.

  config = configuration.complete(saved_config)
  return float(model_table.parameter_counts(config)["total"])


def summarize(data: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
  """(columns, rows): one row per variant group with {column: `intervals.Cell`} over finished seeds:
  an accuracy's 95% interval is over seeds, or for one seed a bootstrap over its evaluated examples."""
  plan, runs = data["plan"], data["runs"]
  stages = [s["name"] for s in plan["stages"]]
  params = _parameters(runs, plan)
  params_stage = (plan.get("match") or {}).get("stage") or stages[0]
  groups: dict[str, dict[str, list[float]]] = {}
  counts: dict[str, dict[str, int]] = {}  # the examples a one-seed figure was measured on.
  seeds: dict[str, set[str]] = {}
  columns: list[str] = ["params"]
  for r in runs:
    if not r["finished"]:
      continue
    values = groups.setdefault(r["group"], {})
    seeds.setdefault(r["group"], set()).add(r["seed"])
    row = {}
    if r["variant"] in params and r["stage"] == params_stage:
      row["params"] = params[r["variant"]]
    for key, value in r["training"].items():
      row[f"{r['stage']} {key}"] = value
    for key, (value, count) in r["final"].items():
      row[f"{r['stage']} {key}"] = value
      if count:
        counts.setdefault(r["group"], {})[f"{r['stage']} {key}"] = int(count)
    for key, value in row.items():
      values.setdefault(key, []).append(value)
      if key not in columns:
        columns.append(key)
  order = {s: i for i, s in enumerate(stages)}
  columns = ["params"] + sorted((c for c in columns if c != "params"),
                                key=lambda c: (order.get(c.split(" ")[0], 99), _metric_rank(c)))
  rows = []
  for group in dict.fromkeys(r["group"] for r in runs):  # the sweep's order.
    if group not in groups:
      continue
    cells = {c: intervals.cell(groups[group][c], counts.get(group, {}).get(c), interval=_is_accuracy(c))
             for c in columns if c in groups[group]}
    rows.append({"variant": group, "seeds": len(seeds[group]), "cells": cells})
  return columns, rows


TASK_ORDER = ("itm", "vqa", "pairs", "ve", "itc", "retrieval", "mlm")
COST = ("GFLOPs/example", "examples/s")


def _is_accuracy(column: str) -> bool:
  """Whether a column is an accuracy (in [0, 1], with an interval), not a cost or a parameter count."""
  return column != "params" and column.split(" ", 1)[-1] not in COST


def _metric_rank(column: str) -> tuple:
  """Cost first; then by task (ITM, VQA, pairs, retrieval, MLM): overall, by kind or type, references."""
  metric = column.split(" ", 1)[1] if " " in column else column
  if metric in COST:
    return 0, COST.index(metric)
  head, _, qualifier = metric.partition(" ")
  task, _, sub = head.partition("/")
  task_rank = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)
  if sub:
    order = {"itm": NEGATIVE_KINDS, "ve": VE_LABELS}.get(task, QUESTION_TYPES)
    return 1, task_rank, 1, order.index(sub) if sub in order else len(order), sub
  return 1, task_rank, 0 if not qualifier else 2, 0, qualifier


def _fmt(cell: intervals.Cell | None, column: str) -> str:
  """`mean ± sd [lo, hi]`; a one-seed interval (over examples) is marked with *."""
  if cell is None:
    return "—"
  if column == "params":
    return f"{cell.mean / 1e6:.3f}M" + (f" ± {cell.sd / 1e6:.3f}M" if cell.sd else "")
  digits = 1 if column.endswith("examples/s") else 4 if column.endswith("GFLOPs/example") else 3
  text = f"{cell.mean:.{digits}f}" + ("" if cell.sd is None else f" ± {cell.sd:.{digits}f}")
  if cell.lo is not None:
    text += f" [{cell.lo:.{digits}f}, {cell.hi:.{digits}f}]" + ("*" if cell.over == "examples" else "")
  return text


def separations(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
  """{column: [(higher, lower)]}: the pairs of variants whose 95% intervals do not overlap."""
  out: dict[str, list[tuple[str, str]]] = {}
  for column in columns:
    if not _is_accuracy(column):
      continue
    have = [(row["variant"], row["cells"][column]) for row in rows if column in row["cells"]]
    pairs = []
    for i, (a, ca) in enumerate(have):
      for b, cb in have[i + 1:]:
        if intervals.separated(ca, cb):
          pairs.append((a, b) if ca.mean > cb.mean else (b, a))
    if pairs:
      out[column] = pairs
  return out


def markdown(columns: list[str], rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
  """Tables: cost, then one per stage with that stage's accuracies."""
  plan = data["plan"]
  finished = sum(r["finished"] for r in data["runs"])
  lines = [f"# Sweep report: {plan.get('sweep', '')}", ""]
  if plan.get("description"):
    lines += [plan["description"], ""]
  lines += [f"{finished} of {len(data['runs'])} stage runs finished. Each cell: mean ± sample standard "
            "deviation over the finished seeds (n in `seeds`) [95% interval: the t interval over seeds; "
            "for a single seed, marked *, a bootstrap over the evaluated examples, which leaves out "
            "the seed-to-seed spread]; accuracies are the final evaluation of each stage on the "
            "validation split. Two variants are separated on a metric when their intervals do not "
            "overlap.", ""]
  stages = [s["name"] for s in plan["stages"]]
  cost = [c for c in columns if not _is_accuracy(c)]
  tables = [("Cost", cost)] + [
      (f"Stage `{s}`", [c for c in columns if c.startswith(f"{s} ") and c not in cost]) for s in stages]
  for title, cols in tables:
    if not cols:
      continue
    strip = title != "Cost"  # a stage's table names its metrics without the stage.
    lines += [f"## {title}", "",
              "| variant | seeds | " + " | ".join(_header(c, strip) for c in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for row in rows:
      seeds = max((row["cells"][c][2] for c in cols if c in row["cells"]), default=0)
      lines.append(f"| {row['variant']} | {seeds} | "
                   + " | ".join(_fmt(row["cells"].get(c), c) for c in cols) + " |")
    lines.append("")
    if strip:
      split = separations(cols, rows)
      lines += ["Separated (95% intervals apart; higher first): " + ("none." if not split else ""), ""]
      lines += [f"- `{_header(c, True)}`: " + ", ".join(f"{a} > {b}" for a, b in pairs)
                for c, pairs in split.items()]
      lines += [""] if split else []
  return "\n".join(lines)


def _header(column: str, strip_stage: bool) -> str:
  return column.split(" ", 1)[1] if strip_stage and " " in column else column


def write_csv(columns: list[str], rows: list[dict[str, Any]], path: str) -> None:
  """One row per variant: for every column its mean, sd, n, 95% interval (lo, hi) and what the interval
  is over (seeds, examples)."""
  fields = ("mean", "sd", "n", "lo", "hi", "over")
  number = lambda v: "" if v is None else f"{v:.6g}"
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["variant", "seeds"] + [f"{c} {s}" for c in columns for s in fields])
    for row in rows:
      cells = []
      for c in columns:
        cell = row["cells"].get(c)
        if cell is None:
          cells += ["", "", 0, "", "", ""]
        else:
          cells += [number(cell.mean), number(cell.sd), cell.n, number(cell.lo), number(cell.hi), cell.over]
      writer.writerow([row["variant"], row["seeds"], *cells])


# ---------------------------------------------------------------------------------------------------
# Plots.

def headline_metrics(runs: list[dict[str, Any]], stages: list[str]) -> list[tuple[str, str]]:
  """(stage, metric) pairs worth a panel: each task's overall accuracy, ITM on relation captions against
  their swaps."""
  seen: dict[tuple[str, str], None] = {}
  wanted = ("itm", "itm relation balanced", "vqa", "vqa/relation", "pairs", "ve", "itc R@1", "retrieval R@1")
  for stage in stages:
    present = {m for r in runs if r["stage"] == stage for c in r["curve"].values() for m in c}
    for metric in wanted:
      if metric in present:
        seen[(stage, metric)] = None
  return list(seen)


METRIC_NAMES = {"itm": "ITM accuracy", "vqa": "VQA accuracy", "pairs": "pair accuracy", "ve": "VE accuracy",
                "itc R@1": "ITC retrieval R@1 (text to image)",
                "retrieval R@1": "retrieval R@1 (text to image)",
                "itm relation balanced": "ITM accuracy, relation captions vs their swaps (balanced)",
                "mlm": "MLM accuracy"}


def metric_title(metric: str) -> str:
  """`itm/relation` -> "ITM accuracy, relation negatives"; `vqa/colour` -> "VQA accuracy, colour"."""
  head, _, sub = metric.partition("/")
  name = METRIC_NAMES.get(head, head)
  if sub:
    name += f", {sub} negatives" if head == "itm" and sub != "positive" else f", {sub}"
  return name


def _legend(names: list[str], colours: dict[str, tuple], width: int):
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  per_row = max(1, width // 160)
  rows = math.ceil(len(names) / per_row)
  image = Image.new("RGB", (width, 16 * rows + 8), "white")
  draw = ImageDraw.Draw(image)
  for i, name in enumerate(names):
    x, y = 10 + (i % per_row) * 160, 4 + (i // per_row) * 16
    draw.rectangle([x, y + 3, x + 14, y + 9], fill=colours[name])
    draw.text((x + 20, y), name, fill="black", font=font)
  return image


def _sheet(panels: list, legend, columns: int = 3):
  from PIL import Image

  columns = min(columns, max(len(panels), 1))
  rows = math.ceil(len(panels) / columns)
  width = plots.PANEL_W * columns
  sheet = Image.new("RGB", (width, plots.PANEL_H * rows + legend.height), "white")
  for i, panel in enumerate(panels):
    sheet.paste(panel, ((i % columns) * plots.PANEL_W, (i // columns) * plots.PANEL_H))
  sheet.paste(legend, (0, plots.PANEL_H * rows))
  return sheet


def plot_curves(data: dict[str, Any], path: str) -> str:
  """Validation metrics against steps: a panel per (stage, metric), a line per variant (mean over seeds
  at each step), the seeds as pale dots."""
  stages = [s["name"] for s in data["plan"]["stages"]]
  runs = data["runs"]
  groups = list(dict.fromkeys(r["group"] for r in runs))
  colours = {g: COLOURS[i % len(COLOURS)] for i, g in enumerate(groups)}
  panels = []
  for stage, metric in headline_metrics(runs, stages):
    series = {}
    for g in groups:
      by_step: dict[int, list[float]] = {}
      for r in runs:
        if r["group"] == g and r["stage"] == stage:
          for step, metrics in r["curve"].items():
            if metric in metrics:
              by_step.setdefault(step, []).append(metrics[metric])
      if by_step:
        series[g] = {"line": [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())],
                     "points": [(s, y) for s, v in by_step.items() for y in v]}
    panels.append(plots.panel(f"{stage}: {metric_title(metric)} (validation)", "step", series, colours))
  sheet = _sheet(panels, _legend(groups, colours, plots.PANEL_W * min(3, max(len(panels), 1))))
  sheet.save(path)
  return path


def plot_accuracy_vs_flops(data: dict[str, Any], columns: list[str], rows: list[dict[str, Any]],
                           path: str) -> str:
  """Final accuracy against training GFLOPs per example of the first stage: a point per variant with its
  95% interval."""
  stages = [s["name"] for s in data["plan"]["stages"]]
  flops_column = next((c for s in stages for c in columns if c == f"{s} GFLOPs/example"), None)
  groups = [row["variant"] for row in rows]
  colours = {g: COLOURS[i % len(COLOURS)] for i, g in enumerate(groups)}
  panels = []
  for stage, metric in headline_metrics(data["runs"], stages):
    column = f"{stage} {metric}"
    series = {}
    for row in rows:
      cell, x = row["cells"].get(column), row["cells"].get(flops_column) if flops_column else None
      if cell is None or x is None:
        continue
      series[row["variant"]] = {"line": [(x.mean, cell.mean)], "label": row["variant"],
                                "bars": [(x.mean, cell.lo, cell.hi)] if cell.lo is not None else []}
    xlabel = f"training GFLOPs per example ({flops_column.split(' ')[0]})" if flops_column else "no FLOPs"
    panels.append(plots.panel(f"{stage}: final {metric_title(metric)}", xlabel, series, colours))
  sheet = _sheet(panels, _legend(groups, colours, plots.PANEL_W * min(3, max(len(panels), 1))))
  sheet.save(path)
  return path


def write_report(root: str, out: str | None = None) -> dict[str, str]:
  """Writes report.md, report.csv, curves.png and accuracy_vs_flops.png into `out` (default `root`)."""
  out = out or root
  os.makedirs(out, exist_ok=True)
  data = collect(root)
  columns, rows = summarize(data)
  paths = {"markdown": os.path.join(out, "report.md"), "csv": os.path.join(out, "report.csv"),
           "curves": os.path.join(out, "curves.png"),
           "accuracy_vs_flops": os.path.join(out, "accuracy_vs_flops.png")}
  text = markdown(columns, rows, data)
  text += ("\n![validation metrics against steps](curves.png)\n\n"
           "![final accuracy against training FLOPs per example](accuracy_vs_flops.png)\n")
  with open(paths["markdown"], "w") as f:
    f.write(text)
  write_csv(columns, rows, paths["csv"])
  plot_curves(data, paths["curves"])
  plot_accuracy_vs_flops(data, columns, rows, paths["accuracy_vs_flops"])
  return paths


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="the sweep's --root")
  parser.add_argument("--out", default=None, help="folder for the report (default: the root)")
  args = parser.parse_args(argv)
  try:
    paths = write_report(args.root, args.out)
  except StaleResultError as e:
    raise SystemExit(f"error: {e}") from None
  for kind, path in paths.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  main()
