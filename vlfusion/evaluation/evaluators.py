"""The evaluators of a run: for each entry of `config.evals` (or the default one), its tasks' evaluators,
their results keyed and written to `workdir/eval/step_<N>.json`.

An evaluator is built from a `Predictor` (the model's forward pass and mesh) and its data, and knows
nothing of training: tasks scored batch by batch share one `batched.BatchedEvaluator`; a task that reads
the split its own way (`Task.evaluator`: retrieval over every caption of every image) has its own.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import jax
import ml_collections
from absl import logging

from vlfusion import configuration, tasks
from vlfusion.data import pipeline
from vlfusion.evaluation import results
from vlfusion.evaluation.batched import BatchedEvaluator
from vlfusion.evaluation.digests import params_digest
from vlfusion.evaluation.predictor import Predictor
from vlfusion.rundir import Workdir


class Evaluator:
  """Every evaluated task's metrics over one evaluator config's split (`evaluator_config`).

  Reports each task of `config.eval.tasks` whose head the model has (`config.model.heads`), as its task
  declares (`vlfusion.tasks`): through one `BatchedEvaluator` for the tasks it counts or gathers, and an
  evaluator of its own for a task that names one (`Task.evaluator`, built as
  `Class(predictor, config, source)`). Scenes with identical captions make some ground truths
  ambiguous, so retrieval on the shapes world is bounded below 1.
  """

  def __init__(self, predictor: Predictor, config: ml_collections.ConfigDict):
    self.config = config
    heads = set(config.model.heads)
    self.tasks = configuration.evaluated_tasks(config.eval.tasks, heads)
    if not self.tasks:
      raise configuration.ConfigError(
          f"config.eval.tasks={tuple(config.eval.tasks)}: none is a head of this model "
          f"(config.model.heads={tuple(config.model.heads)}); evaluable tasks: {tasks.eval_tasks()}")
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.source = pipeline.make_batch_source(config, config.data.eval_split, **process)

    def train_source():
      if config.data.train_split == config.data.eval_split:
        return self.source
      return pipeline.make_batch_source(config, config.data.train_split, **process)

    own = {name: tasks.get(name).evaluator for name in self.tasks if tasks.get(name).evaluator}
    batched = tuple(name for name in self.tasks if name not in own)
    self.batched = (BatchedEvaluator(predictor, config, self.source, batched, train_source)
                    if batched else None)
    self.own: dict[str, Any] = {}
    for name, path in own.items():
      module, cls = path.split(":")
      self.own[name] = getattr(importlib.import_module(module), cls)(predictor, config, self.source)

  def run(self, params: Any) -> dict[str, dict[str, Any]]:
    """{task: {"accuracy": a, "count": n, ...}} for each evaluated task, in `self.tasks`' order."""
    found = self.batched.run(params) if self.batched else {}
    found.update({name: ev.run(params) for name, ev in self.own.items()})
    return {task: found[task] for task in self.tasks if task in found}


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
  """The numbers of a result as flat TensorBoard names: `vqa_accuracy`, `vqa_by_type/colour_accuracy`."""
  out = {}
  for task, values in metrics.items():
    if not isinstance(values, dict):
      continue
    for key, value in values.items():
      if isinstance(value, dict):
        for group, inner in value.items():
          if isinstance(inner, dict):
            out.update({f"{prefix}{task}_{key}/{group}_{k}": float(v) for k, v in inner.items()})
          else:
            out[f"{prefix}{task}_{key}_{group}"] = float(inner)
      else:
        out[f"{prefix}{task}_{key}"] = float(value)
  return out


DEFAULT_EVALUATOR = tasks.DEFAULT_EVALUATOR


def evaluator_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The run's config as evaluator `name` of `config.evals` sees it: its data, split, tasks, batch size.

  The batches carry the text of the evaluated tasks (a task's own: questions for vqa, statements for
  pairs, hypotheses for ve; captions otherwise), whatever the run trained on.
  """
  entry = config.evals[name]
  out = ml_collections.ConfigDict(config.to_dict())
  data = entry.get("data", None) or {}
  data = data.to_dict() if hasattr(data, "to_dict") else dict(data)
  if "split" in data:
    out.data.eval_split = data.pop("split")
  for key, value in data.items():
    out.data[key] = value
  names = tuple(entry.get("tasks", config.eval.tasks))
  out.eval.tasks = names
  out.eval.batch_size = entry.get("batch_size", config.eval.batch_size)
  # Eval batches are padded, so any split size works; one row per process passes the pipeline's check.
  out.data.global_batch_size = jax.process_count()
  evaluated = configuration.evaluated_tasks(names, config.model.heads)
  # The rows each evaluated task reads (`Task.rows_of`); a task with its own text takes the batch.
  wanted = {tasks.get(t).rows_of for t in evaluated}
  own = [n for n, t in tasks.REGISTRY.items() if n in wanted and t.own_text is not None]
  for objective in out.objectives:
    out.objectives[objective] = 1.0 if (objective == own[0] if own else objective in wanted) else 0.0
  return out


class Evaluators:
  """The evaluators of a run (`config.evals`, or the default one over config.data.eval_split).

  What `eval.py` and training (`config.eval.every_steps`) both call. Results are keyed by evaluator
  name; each holds its dataset and split, then one entry per task.
  """

  def __init__(self, predictor: Predictor, config: ml_collections.ConfigDict):
    self.config = config
    self.evaluators: dict[str, Evaluator] = {}
    if not config.get("evals"):
      self.evaluators[DEFAULT_EVALUATOR] = Evaluator(predictor, config)
      return
    for name in config.evals:
      try:
        self.evaluators[name] = Evaluator(predictor, evaluator_config(config, name))
      except configuration.ConfigError as e:
        raise configuration.ConfigError(f"config.evals.{name}: {e}") from e

  @property
  def digest(self) -> str:
    """What keys their results (`results`): the evaluator digest of the config they were built with."""
    return configuration.evaluator_digest(self.config)

  def run(self, params: Any) -> dict[str, dict[str, Any]]:
    """{evaluator name: {"dataset", "split", task: metrics, ...}}."""
    out = {}
    for name, ev in self.evaluators.items():
      out[name] = {"dataset": ev.config.data.name, "split": ev.config.data.eval_split, **ev.run(params)}
    return out

  def result(self, params: Any, step: int) -> dict[str, Any]:
    """The content of `eval/step_<N>.json`: step and digests (the config's, its evaluators', the
    parameters') first, then each evaluator's metrics."""
    return {"step": int(step), "config_digest": configuration.digest(self.config),
            results.KEY: self.digest, "params_digest": params_digest(params), **self.run(params)}

  def run_and_write(self, params: Any, step: int, workdir: str) -> tuple[dict[str, float], dict[str, float]]:
    """Evaluates during training and writes the JSON. Returns (what `config.train.best_metric` can name:
    `<name>/<task>_accuracy`, and for the default evaluator also `<task>_accuracy`; every scalar as
    `eval/<name>/...` for the run's metrics record and TensorBoard)."""
    result = self.result(params, step)
    write_result(workdir, result)
    metrics, record = {}, {}
    for name in self.evaluators:
      record.update(scalars(result[name], prefix=f"eval/{name}/"))
      default = name == DEFAULT_EVALUATOR and not self.config.get("evals")
      for task, r in result[name].items():
        if isinstance(r, dict) and "accuracy" in r:
          metrics.update(dict.fromkeys(tasks.accuracy_names(name, task, default), r["accuracy"]))
    logging.info("step %d eval: %s", step, metrics)
    return metrics, record


def write_result(workdir: str, result: dict[str, Any]) -> str:
  """Writes the result where its evaluator config keys it (process 0 only) and returns its path.

  The run's own evaluators write `eval/step_<N>.json`; what held that file before from another evaluator
  config (an eval.py of other tasks, or written before results were keyed) moves to its own folder first
  (`results.aside_path`): no evaluator's result overwrites another's.
  """
  run = Workdir(workdir)
  path = run.eval_result_path(result["step"], result.get(results.KEY))
  if jax.process_index() != 0:
    return str(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  held = results.read(path) if path.exists() else None
  if held is not None and held.get(results.KEY) != result.get(results.KEY):
    aside = run.path / results.aside_path(held)
    aside.parent.mkdir(parents=True, exist_ok=True)
    path.replace(aside)
    logging.info("Moved %s (another evaluator config's result) to %s", path, aside)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
  tmp.replace(path)
  logging.info("Wrote %s", path)
  return str(path)
