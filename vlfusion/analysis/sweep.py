r"""Ablation sweeps from a sweep file: variants x stages, run one after another, resumable; or the commands.

  python -m vlfusion.analysis.sweep --sweep=configs/sweeps/fusion_ablation.py --root=runs/fusion
  python -m vlfusion.analysis.sweep --sweep=configs/sweeps/fusion_ablation.py --root=runs/fusion \
      --print_commands          # one train.py / eval.py line per stage, for a cluster scheduler
  python -m vlfusion.analysis.report --root=runs/fusion

A sweep file defines `get_sweep()` returning a dict (docs/sweeps.md):

  stages     [{name, config ("path:arg"), overrides {dotted: value}, init_from (an earlier stage),
              evaluate (default True)}, ...]: what each variant runs, in order. A stage is `train.py`
              then `eval.py --all`; `init_from` passes the earlier stage's workdir as config.init.checkpoint.
  axes       {axis: {label: overrides}}: the variants are the product of the axes, in order. An override
              key "stage:dotted" applies to that stage only; a plain key to every stage.
  seed_axis  the axis whose labels are seeds: the report averages over it (default "seed").
  match      optional fair comparison: {by: "params" | "flops", target: a variant of the other axes
              (e.g. "co_lxmert") or a number, stage (default the first), count (parameter stages
              counted; default all), scale: [{fields: {dotted: ratio}, multiple_of, min}, ...],
              tolerance (default 0.02)}. Each scale group in turn is solved for the integer x (fields =
              round(ratio * x)) whose count is nearest the target, using the model table's exact counts.

Each stage's workdir is `<root>/<variant>/<stage>`. A stage is finished when its workdir holds a complete
checkpoint of the final step and `eval/step_<final>.json` (with `evaluate`) written by its own evaluators
(`evaluation.results`), and its `config.json` is the config this sweep asks for; the sweep then writes
`sweep_stage.json` there. A rerun skips finished stages and resumes an interrupted one from its latest
checkpoint (train.py's own resume), so killing the sweep at any moment loses at most the steps since the
last checkpoint. A run, and `--print_commands`, refuse a root whose stages were started with another
config than the sweep file now asks for, before rewriting its `sweep.json`.

Stages run as subprocesses (the default): the command run is exactly the one `--print_commands` prints,
each stage starts with fresh JAX state and memory, and a crash, OOM or Ctrl-C in a stage leaves the
sweep's record intact. `--in_process` runs them inside this process instead (no interpreter and import
start-up per stage; what the tests use).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import ml_collections

from vlfusion import configuration
from vlfusion.errors import ConfigError
from vlfusion.evaluation import results
from vlfusion.rundir import Workdir, config_differences

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "sweep_stage.json"
PLAN = "sweep.json"
SWEEP_KEYS = ("stages", "axes", "seed_axis", "match", "description")
STAGE_KEYS = ("name", "config", "overrides", "init_from", "evaluate")
MATCH_KEYS = ("by", "target", "stage", "count", "scale", "tolerance")
SCALE_KEYS = ("fields", "multiple_of", "min", "max")


class SweepError(ValueError):
  """A sweep file or root that cannot be run as asked; the message names the part at fault."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of every variant: a config file (with its argument) trained, then evaluated."""

  name: str
  config: str
  overrides: dict[str, Any]
  init_from: str | None = None
  evaluate: bool = True


@dataclasses.dataclass
class Variant:
  """One point of the product of the axes.

  Attributes:
    name: the labels joined by "-" (the folder under the root).
    group: the labels of every axis but the seed axis joined by "-": what the report averages over.
    labels: {axis: label}.
    overrides: {dotted or "stage:dotted": value}, the axes' overrides in axis order.
    matched: fields the matching solved, {dotted: value}; `count` the matched quantity (and target).
  """

  name: str
  group: str
  labels: dict[str, str]
  overrides: dict[str, Any]
  matched: dict[str, int] = dataclasses.field(default_factory=dict)
  count: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
  """A stage of a variant: its workdir, config file and every override (init.checkpoint included)."""

  variant: Variant
  stage: Stage
  workdir: str
  overrides: dict[str, Any]

  def config(self) -> ml_collections.ConfigDict:
    """The config this run asks for, as train.py builds it from `train_argv()` (unlocked)."""
    return build_config(self.stage.config, self.overrides)

  def train_argv(self) -> list[str]:
    path, _, arg = self.stage.config.partition(":")
    spec = os.path.relpath(os.path.join(REPO, path), REPO) + (f":{arg}" if arg else "")
    return ["train.py", f"--config={spec}", f"--workdir={self.workdir}",
            *(f"--config.{k}={render_value(v)}" for k, v in self.overrides.items())]

  def eval_argv(self) -> list[str]:
    return ["eval.py", f"--workdir={self.workdir}", "--all"]

  @property
  def label(self) -> str:
    return f"{self.variant.name}/{self.stage.name}"


@dataclasses.dataclass
class Sweep:
  """A parsed sweep file."""

  path: str
  stages: list[Stage]
  axes: dict[str, dict[str, dict[str, Any]]]
  seed_axis: str | None
  match: dict[str, Any] | None
  description: str = ""


def render_value(value: Any) -> str:
  """A config value as train.py's `--config.x=` flag parses it back (bool, int, float, str, tuple)."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value) if isinstance(value, str) else repr(value)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `path[:arg]` (relative to the repository), unlocked."""
  path = spec.partition(":")[0]
  if not os.path.isfile(path if os.path.isabs(path) else os.path.join(REPO, path)):
    raise SweepError(f"config file {path!r} does not exist")
  return configuration.load_config_file(spec)


def build_config(spec: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config file's config with `overrides` set field by field, as `--config.<field>=` flags would
  (`configuration.override` with flags): a field the file lacks, or one the command line cannot set, is a
  SweepError."""
  config = load_config_file(spec)
  try:
    return configuration.override(config, overrides, flags=True, source=spec)
  except ConfigError as e:
    raise SweepError(str(e)) from None


def _check_keys(where: str, given: Any, known: tuple[str, ...]) -> None:
  if not isinstance(given, dict):
    raise SweepError(f"{where} must be a dict with keys {known}")
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise SweepError(f"{where} has unknown keys {unknown}; known: {known}")


def load_sweep(path: str) -> Sweep:
  """Reads and checks the sweep file at `path` (its `get_sweep()`); every unknown key is an error."""
  full = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
  if not os.path.isfile(full):
    raise SweepError(f"sweep file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("_sweep_file", full)
  module = importlib.util.module_from_spec(spec)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  spec.loader.exec_module(module)
  raw = module.get_sweep()
  _check_keys(f"{path}: get_sweep()", raw, SWEEP_KEYS)
  stages = []
  for i, s in enumerate(raw.get("stages") or ()):
    _check_keys(f"{path}: stages[{i}]", s, STAGE_KEYS)
    if "name" not in s or "config" not in s:
      raise SweepError(f"{path}: stages[{i}] needs a name and a config")
    init = s.get("init_from")
    if init is not None and init not in [t.name for t in stages]:
      raise SweepError(f"{path}: stage {s['name']!r} has init_from={init!r}, not an earlier stage")
    stages.append(Stage(s["name"], s["config"], dict(s.get("overrides", {})), init, s.get("evaluate", True)))
  if not stages:
    raise SweepError(f"{path}: get_sweep() has no stages")
  if len({s.name for s in stages}) != len(stages):
    raise SweepError(f"{path}: stage names repeat: {[s.name for s in stages]}")
  axes = {axis: {str(k): dict(v) for k, v in labels.items()}
          for axis, labels in (raw.get("axes") or {}).items()}
  for axis, labels in axes.items():
    if not labels:
      raise SweepError(f"{path}: axis {axis!r} has no labels")
    for label in labels:
      if not label or "-" in label or "/" in label or label.startswith("."):
        raise SweepError(f"{path}: axis {axis!r} label {label!r} must be non-empty, without '-' or '/'")
  seed_axis = raw.get("seed_axis", "seed" if "seed" in axes else None)
  if seed_axis is not None and seed_axis not in axes:
    raise SweepError(f"{path}: seed_axis={seed_axis!r} is not an axis; axes: {list(axes)}")
  match = raw.get("match")
  if match is not None:
    _check_keys(f"{path}: match", match, MATCH_KEYS)
    if match.get("by") not in ("params", "flops"):
      raise SweepError(f"{path}: match.by={match.get('by')!r} must be 'params' or 'flops'")
    if not match.get("scale"):
      raise SweepError(f"{path}: match.scale names no fields to scale")
    for i, group in enumerate(match["scale"]):
      _check_keys(f"{path}: match.scale[{i}]", group, SCALE_KEYS)
    if match.get("stage", stages[0].name) not in [s.name for s in stages]:
      raise SweepError(f"{path}: match.stage={match.get('stage')!r} is not a stage")
  sweep = Sweep(os.path.relpath(full, REPO) if full.startswith(REPO) else full, stages, axes, seed_axis,
                match, raw.get("description", ""))
  _check_stage_overrides(sweep)
  return sweep


def _check_stage_overrides(sweep: Sweep) -> None:
  names = {s.name for s in sweep.stages}
  for axis, labels in sweep.axes.items():
    for label, overrides in labels.items():
      for key in overrides:
        stage, sep, _ = key.rpartition(":")
        if sep and stage not in names:
          raise SweepError(f"{sweep.path}: axes.{axis}.{label} override {key!r} names no stage; stages: "
                           f"{sorted(names)}")


def variants(sweep: Sweep) -> list[Variant]:
  """The product of the axes in order (no axes: one variant named "base")."""
  if not sweep.axes:
    return [Variant("base", "base", {}, {})]
  out = []
  names = list(sweep.axes)
  for combo in itertools.product(*(list(sweep.axes[a].items()) for a in names)):
    labels = {axis: label for axis, (label, _) in zip(names, combo, strict=True)}
    overrides: dict[str, Any] = {}
    for _, values in combo:
      overrides.update(values)
    group = "-".join(label for axis, label in labels.items() if axis != sweep.seed_axis) or "base"
    out.append(Variant("-".join(labels.values()), group, labels, overrides))
  return out


def stage_overrides(stage: Stage, variant: Variant, root: str) -> dict[str, Any]:
  """The overrides of `stage` for `variant`: the stage's own, the variant's (plain keys and those
  qualified with this stage's name), the matched fields, then config.init.checkpoint."""
  out = dict(stage.overrides)
  for key, value in variant.overrides.items():
    name, sep, dotted = key.rpartition(":")
    if not sep:
      out[key] = value
    elif name == stage.name:
      out[dotted] = value
  out.update(variant.matched)
  if stage.init_from:
    out["init.checkpoint"] = os.path.join(root, variant.name, stage.init_from)
  return out


def plan(sweep: Sweep, root: str, counter: Callable[..., float] | None = None) -> list[Run]:
  """Every run of the sweep under `root`, variant by variant, stage by stage; matching solved."""
  root = os.path.abspath(root)
  vs = variants(sweep)
  if sweep.match:
    solve_matching(sweep, vs, root, counter)
  runs = []
  for v in vs:
    for stage in sweep.stages:
      runs.append(Run(v, stage, os.path.join(root, v.name, stage.name), stage_overrides(stage, v, root)))
  checked = set()
  for r in runs:  # every stage's config, before anything runs (seeds do not change validity).
    if (r.variant.group, r.stage.name) not in checked:
      checked.add((r.variant.group, r.stage.name))
      try:
        configuration.validate(r.config())
      except ConfigError as e:
        raise ConfigError(f"{r.label}: {e}") from e
  _check_init_fits(runs)
  return runs


def _check_init_fits(runs: list[Run]) -> None:
  """A stage that starts from another's checkpoint must describe the same model, field by field
  (`configuration.model_differences`, the check `config.init` makes when the stage runs): otherwise
  parameters that differ in meaning but not shape would be restored, or left fresh unsaid. A stage that
  sets `init.allow_fresh` has named what may differ; the run itself still checks its parameters."""
  by_key = {(r.variant.name, r.stage.name): r for r in runs}
  seen_groups = set()
  for run in runs:
    if not run.stage.init_from or (run.variant.group, run.stage.name) in seen_groups:
      continue
    seen_groups.add((run.variant.group, run.stage.name))
    config = run.config()
    if config.init.allow_fresh:
      continue
    source = by_key[(run.variant.name, run.stage.init_from)]
    differ = configuration.model_differences(source.config().model, config.model)
    if differ:
      raise SweepError(
          f"variant {run.variant.name}: stage {run.stage.name!r} starts from {run.stage.init_from!r}, "
          f"but their models differ ({'; '.join(differ[:6])}); set the same values in both stages (a "
          "plain override key applies to every stage)")


# ---------------------------------------------------------------------------------------------------
# Matching by parameters or FLOPs.


def count_of(config: ml_collections.ConfigDict, by: str, stages: tuple[str, ...] | None = None) -> float:
  """Parameters (of the model table's `stages`, all by default) or forward FLOPs of one example."""
  from vlfusion.analysis import model_table  # imports JAX.

  if by == "params":
    counts = model_table.parameter_counts(config)
    return float(sum(counts[s] for s in (stages or model_table.STAGES)))
  return model_table.forward_flops(config, batch_size=1, text_len=config.data.max_text_len)


COUNTS = "sweep_counts.json"


def _load_counts(root: str) -> dict[str, float]:
  path = os.path.join(root, COUNTS)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _save_counts(root: str, memo: dict[str, float]) -> None:
  os.makedirs(root, exist_ok=True)
  tmp = os.path.join(root, COUNTS + ".tmp")
  with open(tmp, "w") as f:
    json.dump(memo, f, indent=0, sort_keys=True)
  os.replace(tmp, os.path.join(root, COUNTS))


def _scaled(group: dict[str, Any], x: int) -> dict[str, int]:
  return {field: max(1, int(round(ratio * x))) for field, ratio in group["fields"].items()}


def solve_matching(sweep: Sweep, vs: list[Variant], root: str,
                   counter: Callable[..., float] | None = None) -> None:
  """Sets `matched` and `count` of every variant: the scale groups solved in order so that the count
  of `match.stage`'s config is nearest the target; raises SweepError beyond `match.tolerance`."""
  m = sweep.match
  counter = counter or count_of
  stage = next(s for s in sweep.stages if s.name == m.get("stage", sweep.stages[0].name))
  stages = tuple(m["count"]) if m.get("count") else None
  tolerance = float(m.get("tolerance", 0.02))
  by = m["by"]
  memo = _load_counts(root)  # counts cost a trace (params) or a compile (FLOPs): kept under the root.

  def base_overrides(variant: Variant) -> dict[str, Any]:
    overrides = stage_overrides(stage, dataclasses.replace(variant, matched={}), root)
    overrides.pop("init.checkpoint", None)
    return overrides

  def count(variant: Variant, extra: dict[str, Any]) -> float:
    config = build_config(stage.config, {**base_overrides(variant), **extra})
    # What a count depends on: the model, and for FLOPs the text length.
    key = json.dumps([by, stages, config.model.to_dict(), config.data.max_text_len], sort_keys=True,
                     default=str)
    if key not in memo:
      configuration.validate(config)  # a scaled model must be one the run accepts.
      memo[key] = counter(config, by, stages)
      _save_counts(root, memo)
    return memo[key]

  def count_scaled(variant: Variant, fixed: dict[str, int], group: dict[str, Any], x: int) -> float:
    return count(variant, {**fixed, **_scaled(group, x)})

  groups: dict[str, Variant] = {}
  for v in vs:
    groups.setdefault(v.group, v)
  target = m.get("target")
  reference = None
  if isinstance(target, str):
    if target not in groups:
      raise SweepError(f"{sweep.path}: match.target={target!r} is not a variant; variants (without the "
                       f"seed axis): {sorted(groups)}")
    reference = target
    target = count(groups[target], {})
  if not isinstance(target, (int, float)) or target <= 0:
    raise SweepError(f"{sweep.path}: match.target must be a variant or a positive number, got {target!r}")
  solved: dict[str, tuple[dict[str, int], float]] = {}
  for name, v in groups.items():
    if name == reference:
      solved[name] = ({}, target)
      continue
    fixed: dict[str, int] = {}
    for i, group in enumerate(m["scale"]):
      field, ratio = next(iter(group["fields"].items()))
      present = build_config(stage.config, {**base_overrides(v), **fixed})
      for part in field.split("."):
        present = present[part]
      count_at = functools.partial(count_scaled, v, dict(fixed), group)
      fixed.update(_solve_group(count_at, group, target, f"{sweep.path}: match.scale[{i}] for variant {name}",
                                start=int(round(present / ratio))))
    achieved = count(v, fixed)
    if abs(achieved / target - 1) > tolerance:
      raise SweepError(
          f"{sweep.path}: variant {name} reaches {by}={achieved:.6g} at best ({fixed}), "
          f"{100 * (achieved / target - 1):+.1f}% from the target {target:.6g}, beyond match.tolerance="
          f"{tolerance}; add a finer scale group (e.g. an MLP width)")
    solved[name] = (fixed, achieved)
  for v in vs:
    fields, achieved = solved[v.group]
    v.matched = dict(fields)
    v.count = {by: achieved, "target": target}


def _solve_group(count: Callable[[int], float], group: dict[str, Any], target: float, where: str,
                 start: int | None = None) -> dict[str, int]:
  """The fields of `group` at the integer x (a multiple of `multiple_of`, in [`min`, `max`]) whose count
  is nearest `target`. Counts grow with x: the search brackets the target from `start` (the fields'
  present value) by doubling or halving, then narrows the bracket by interpolation (one or two counts
  when the count is linear in x, as in an MLP width) with bisection as the fallback."""
  step = int(group.get("multiple_of", 1))
  lo = max(step, int(group.get("min", step)))
  lo += (-lo) % step
  hi_limit = int(group.get("max", 1 << 16))
  snap = lambda x: max(lo, min(hi_limit, int(round(x / step)) * step))
  x = snap(start or lo)
  other = snap(x + step) if x + step <= hi_limit else snap(x - step)
  if count(other) == count(x):
    raise SweepError(f"{where}: scaling {sorted(group['fields'])} does not change the count; this model "
                     "does not read them")
  # Start where the line through the two counts meets the target (exact for a count linear in x), then
  # grow the bracket [a, b] until count(a) <= target <= count(b) or a limit is hit.
  guess = snap(x + (target - count(x)) * (other - x) / (count(other) - count(x)))
  known = (x, other, guess)
  a = max((v for v in known if count(v) <= target), default=guess)
  b = min((v for v in known if count(v) >= target), default=guess)
  a, b = min(a, b), max(a, b)
  reach = step
  while count(b) < target and b < hi_limit:
    a, b = b, snap(b + reach)
    reach *= 2
  reach = step
  while count(a) > target and a > lo:
    a, b = snap(a - reach), a
    reach *= 2
  side, bisect = None, False
  while b - a > step and count(a) < target < count(b):
    fa, fb = count(a), count(b)
    mid = (a + b) / 2 if bisect else a + (target - fa) / (fb - fa) * (b - a)
    mid = min(max(int(round(mid / step)) * step, a + step), b - step)
    moved = "a" if count(mid) <= target else "b"
    if moved == "a":
      a = mid
    else:
      b = mid
    bisect = moved == side  # the same bound moving twice: interpolation is stalling; bisect once.
    side = moved
  best = min((a, b), key=lambda v: (abs(count(v) - target), v))
  return _scaled(group, best)


# ---------------------------------------------------------------------------------------------------
# Running.


def final_step(workdir: str) -> int | None:
  """`train.num_steps` of the config the run saved, or None before it has started."""
  config = Workdir(workdir).read_config()
  return None if config is None else int(config.train.num_steps)


def stage_complete(workdir: str, evaluate: bool = True) -> bool:
  """Whether `workdir` holds a complete checkpoint of its final step (and its evaluation)."""
  run = Workdir(workdir)
  step = final_step(workdir)
  if step is None or step not in run.complete_steps():
    return False
  if not evaluate:
    return True
  # The run's own evaluation: a result another eval config left there is not the stage's. The digest is
  # of config.json as saved (not completed): it is what the run's evaluation recorded.
  result = run.read_eval_result(step)
  return result is not None and results.produced_by(result, run.read_raw_config())


def differing_fields(saved: dict[str, Any], intended: dict[str, Any]) -> list[str]:
  """Dotted fields where the run's saved config.json differs from the config asked for
  (`rundir.config_differences`); a field the run resolves when it starts (`model.vqa.num_answers=0`)
  matches any value."""
  return [name for name, (_, b) in config_differences(saved, intended).items()
          if not (name == "model.vqa.num_answers" and b == 0)]


def check_workdir_config(run: Run) -> None:
  """Raises SweepError when the run's workdir was started with another config than this sweep asks."""
  saved = Workdir(run.workdir).read_config()  # completed: fields added since have today's defaults.
  if saved is None:
    return
  saved = json.loads(configuration.to_json(saved))
  intended = json.loads(configuration.to_json(run.config()))
  differ = differing_fields(configuration.seeds_resolved(saved), configuration.seeds_resolved(intended))
  if differ:
    raise SweepError(f"{run.workdir} was started with another config than the sweep's stage "
                     f"{run.label} (fields {differ[:8]}); delete that workdir or use another --root")


def is_finished(run: Run) -> bool:
  """A finished stage, from its workdir alone: the marker, or a complete final checkpoint + eval (e.g.
  run from the printed commands), either way with the config this sweep asks for."""
  check_workdir_config(run)
  return (Workdir(run.workdir).path / MARKER).is_file() or stage_complete(run.workdir, run.stage.evaluate)


def write_marker(run: Run, seconds: float | None) -> None:
  step = final_step(run.workdir)
  marker = {
      "variant": run.variant.name, "group": run.variant.group, "labels": run.variant.labels,
      "stage": run.stage.name, "config": run.stage.config, "overrides": run.overrides,
      "final_step": step, "matched": run.variant.matched, "count": run.variant.count,
      "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  path = Workdir(run.workdir).path / MARKER
  tmp = path.with_name(MARKER + ".tmp")
  tmp.write_text(json.dumps(marker, indent=2, sort_keys=True, default=str))
  tmp.replace(path)


class SubprocessLauncher:
  """Runs each stage's printed command lines as child processes, logging to the workdir."""

  def __init__(self, python: str = sys.executable, env: dict[str, str] | None = None):
    self.python, self.env = python, env

  def _run(self, argv: list[str], run: Run, log_name: str) -> None:
    os.makedirs(run.workdir, exist_ok=True)
    log_path = os.path.join(run.workdir, log_name)
    with open(log_path, "a") as log:
      child = subprocess.Popen([self.python, *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env=self.env)
      # SIGTERM to the sweep (a preempted job) reaches the stage, which checkpoints and exits; the
      # sweep then stops with the stage unfinished, and a rerun resumes it.
      previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
      try:
        code = child.wait()
      finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
      with open(log_path) as f:
        tail = f.read()[-3000:]
      raise SweepError(f"{run.label}: {argv[0]} exited with {code}; log {log_path}:\n{tail}")

  def train(self, run: Run) -> None:
    self._run(run.train_argv(), run, "sweep_train.log")

  def evaluate(self, run: Run) -> None:
    self._run(run.eval_argv(), run, "sweep_eval.log")


class InProcessLauncher:
  """Runs each stage in this process: the same config as the command line would build."""

  def train(self, run: Run) -> None:
    from vlfusion import experiment

    config = run.config()
    config.lock()
    experiment.train_and_evaluate(config, run.workdir)

  def evaluate(self, run: Run) -> None:
    from vlfusion import experiment

    experiment.CheckpointEvaluator(experiment.saved_config(run.workdir), run.workdir).evaluate_all()


def write_plan(sweep: Sweep, runs: list[Run], root: str) -> str:
  """`<root>/sweep.json`: the sweep file, its stages and variants (group, labels, matched fields)."""
  os.makedirs(root, exist_ok=True)
  seen, vs = set(), []
  for r in runs:
    if r.variant.name not in seen:
      seen.add(r.variant.name)
      vs.append({"name": r.variant.name, "group": r.variant.group, "labels": r.variant.labels,
                 "matched": r.variant.matched, "count": r.variant.count})
  out = {"sweep": sweep.path, "description": sweep.description, "seed_axis": sweep.seed_axis,
         "match": sweep.match, "stages": [dataclasses.asdict(s) for s in sweep.stages], "variants": vs,
         "runs": [{"variant": r.variant.name, "stage": r.stage.name,
                   "workdir": os.path.relpath(r.workdir, root), "train": r.train_argv(),
                   "eval": r.eval_argv() if r.stage.evaluate else None} for r in runs]}
  path = os.path.join(root, PLAN)
  with open(path, "w") as f:
    json.dump(out, f, indent=2, default=str)
  return path


def commands(runs: list[Run]) -> list[str]:
  """One shell line per train.py / eval.py invocation, variant by variant, stage by stage (a stage
  needs the stage it starts from to have finished)."""
  lines = []
  for r in runs:
    lines.append(f"# {r.label}")
    lines.append(shlex.join(["python", *r.train_argv()]))
    if r.stage.evaluate:
      lines.append(shlex.join(["python", *r.eval_argv()]))
  return lines


def run(sweep: Sweep, root: str, launcher: Any, log: Callable[[str], None] = print,
        only: str | None = None) -> list[Run]:
  """Runs every unfinished stage in order (variants whose name contains `only`, if given); returns the
  runs it started. Finished stages are skipped; an interrupted one resumes from its checkpoint."""
  runs = plan(sweep, root)
  for r in runs:  # before sweep.json is rewritten: it must stay the plan its runs were made with.
    check_workdir_config(r)
  write_plan(sweep, runs, os.path.abspath(root))
  started = []
  for r in runs:
    if only and only not in r.variant.name:
      continue
    if is_finished(r):
      if not (Workdir(r.workdir).path / MARKER).is_file():
        write_marker(r, None)
      log(f"{r.label}: finished, skipped")
      continue
    if r.stage.init_from:
      source = next(x for x in runs if x.variant is r.variant and x.stage.name == r.stage.init_from)
      if not (Workdir(source.workdir).path / MARKER).is_file():
        raise SweepError(f"{r.label} starts from {source.label}, which has not finished")
    start = time.time()
    started.append(r)
    if not stage_complete(r.workdir, evaluate=False):  # trained but not evaluated: evaluation only.
      log(f"{r.label}: {shlex.join(r.train_argv())}")
      launcher.train(r)
    step = final_step(r.workdir)
    if not stage_complete(r.workdir, evaluate=False):
      raise SweepError(f"{r.label}: training stopped before its final step {step} (preempted?); run the "
                       "sweep again to resume it")
    if r.stage.evaluate and not stage_complete(r.workdir, evaluate=True):  # training may have done it.
      launcher.evaluate(r)
      if not stage_complete(r.workdir, evaluate=True):
        raise SweepError(f"{r.label}: evaluation wrote no eval/step_{step}.json")
    write_marker(r, time.time() - start)
    log(f"{r.label}: done in {time.time() - start:.0f}s")
  return started


def main(argv: list[str] | None = None) -> None:
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep", required=True, help="the sweep file (configs/sweeps/<name>.py)")
  parser.add_argument("--root", required=True, help="folder of the variants' workdirs")
  parser.add_argument("--print_commands", action="store_true",
                      help="print one train.py / eval.py line per stage instead of running them")
  parser.add_argument("--in_process", action="store_true",
                      help="run the stages in this process instead of as child processes")
  parser.add_argument("--only", default=None, help="run only the variants whose name contains this")
  args = parser.parse_args(argv)
  try:
    sweep = load_sweep(args.sweep)
    if args.print_commands:
      runs = plan(sweep, args.root)
      for r in runs:  # as a sweep run does: the plan must be the one its started runs were made with.
        check_workdir_config(r)
      write_plan(sweep, runs, os.path.abspath(args.root))
      print("\n".join(commands(runs)))
      return
    run(sweep, args.root, InProcessLauncher() if args.in_process else SubprocessLauncher(),
        only=args.only)
  except (SweepError, ConfigError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
