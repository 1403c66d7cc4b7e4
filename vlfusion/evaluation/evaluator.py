"""Evaluates a checkpoint on the validation split and writes `workdir/eval/step_<N>.json`.

Every accuracy that depends on the image is reported with `accuracy_shuffled_images`: the same rows
scored again, each shown the image of another image of the split (`shuffled_images`; every key of
`pipeline.IMAGE_KEYS` moves together). A model that ignores the image scores the same both ways; the
figure is left out, with a warning, when the split holds a single image. VQA also reports
`text_prior_accuracy` (see `text_prior`) and the figures by question type (and by answer type on VQA v2).
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vlfusion import configuration, tasks
from vlfusion.data import pipeline, rows
from vlfusion.data.questions import QUESTION_TYPES  # noqa: F401 - callers import it from here.
from vlfusion.evaluation import results, shuffled_images
from vlfusion.evaluation.digests import params_digest
from vlfusion.rundir import Workdir
from vlfusion.tasks import base as task_base
from vlfusion.tasks import itc
from vlfusion.training import checkpointing, partitioning
from vlfusion.training.setup import Setup

# Per-row values summed per group: the model's score, with shuffled images, and the text prior's.
_VALUES = task_base.VALUES
summarize = task_base.summarize
recall_at_k = itc.recall_at_k


def image_tasks() -> tuple[str, ...]:
  """Tasks whose accuracy depends on the image, and so come with `accuracy_shuffled_images`."""
  return tuple(n for n, t in tasks.REGISTRY.items() if t.image_bound)


IMAGE_TASKS = image_tasks()


def _eval_counts(model: nn.Module, params: Any, batch: dict[str, Any],
                 question_types: tuple[str, ...] | None = None,
                 contexts: dict[str, Any] | None = None) -> dict[str, dict[str, dict]]:
  """{task: {group: {value: sum, "total": n}}} on one batch, padding rows excluded (`Task.eval_counts`
  of each registered task whose outputs the model gives).

  Group "" is the whole task; "<kind>:<name>" a slice of its rows (a VQA question type, an ITM negative
  kind, a true label, ...). Values: `correct` (the model's accuracy summed; VQA: the soft score of the
  arg-max answer), `shuffled` (the same with each row shown the images it holds under
  `pipeline.SHUFFLED_IMAGES`; absent without them), `prior` (the text prior's, where the batch holds its
  answers). `contexts` gives a task the static context of its counts (`EvalHost.context`; VQA: the
  question types, `question_types` for short).
  """
  contexts = dict(contexts or {})
  if question_types is not None:
    contexts.setdefault("vqa", question_types)
  moved = batch.get(pipeline.SHUFFLED_IMAGES)
  batch = {k: v for k, v in batch.items() if k != pipeline.SHUFFLED_IMAGES}
  outputs = model.apply({"params": params}, batch, train=False)
  image_bound = any(t.image_bound and t.output in outputs for t in tasks.REGISTRY.values())
  shuffled = None
  if image_bound and moved is not None:
    shuffled = model.apply({"params": params}, {**batch, **moved}, train=False)
  counts: dict[str, dict[str, dict]] = {}
  for name, task in tasks.REGISTRY.items():
    if task.eval_counts is None:
      continue
    found = task.eval_counts(outputs, shuffled, batch, contexts.get(name))
    if found is not None:
      counts[name] = found
  return counts


def metrics_from_counts(totals: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
  """The reported metrics of each task from its summed counts (`Task.metrics`); groups with no rows
  are left out."""
  out = {}
  for task, groups in totals.items():
    metrics = tasks.get(task).metrics
    out[task] = metrics(groups) if metrics else task_base.summarize(groups[""])
  return out


def _gathered_rows(task: tasks.Task, model: nn.Module, params: Any, batch: dict[str, Any]) -> dict:
  return task.gather(model.apply({"params": params}, batch, train=False), batch)


class Evaluator:
  """Every evaluated task's metrics over the whole eval split.

  Reports each task of `config.eval.tasks` whose head the model has (`config.model.heads`), as its task
  declares (`vlfusion.tasks`): counts summed batch by batch (`Task.eval_counts`, `Task.metrics`), rows
  gathered and scored at the end (`Task.gather`, `Task.finish`: ITC retrieval over the split's matching
  pairs), or an evaluator of its own (`Task.evaluator`: retrieval over every caption of every image).
  Image-bound tasks come with `accuracy_shuffled_images`, and a task with a host side
  (`Task.eval_host`, e.g. VQA's text prior) with `text_prior_accuracy` (module docstring). Scenes with
  identical captions make some ground truths ambiguous, so retrieval on the shapes world is bounded
  below 1.

  Shared by eval.py and by evaluation during training (`config.eval.every_steps`).
  """

  def __init__(self, setup: Any, config: ml_collections.ConfigDict):
    self.setup = setup
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

    # Each evaluated task's host side (its text prior), built once.
    self.hosts: dict[str, task_base.EvalHost] = {}
    for name in self.tasks:
      make = tasks.get(name).eval_host
      host = make(config, self.source, train_source) if make else None
      if host is not None:
        self.hosts[name] = host
    contexts = {name: host.context for name, host in self.hosts.items() if host.context is not None}
    self._donors: Any = None  # computed on the first run (one read of the split), then reused.
    self.counts_fn = jax.jit(lambda p, b: _eval_counts(setup.model, p, b, contexts=contexts))
    gathering = [tasks.get(name) for name in self.tasks if tasks.get(name).gather is not None]
    self.gather_fns = {
        task.name: jax.jit(functools.partial(_gathered_rows, task, setup.model),
                           out_shardings=partitioning.replicated(setup.mesh))
        for task in gathering}
    self.own_evaluators = {}
    for name in self.tasks:
      path = tasks.get(name).evaluator
      if path:
        module, cls = path.split(":")
        self.own_evaluators[name] = getattr(importlib.import_module(module), cls)(setup, config, self.source)

  def _host_inputs(self, local: dict[str, Any]) -> dict[str, Any]:
    """Pops the host-side strings of a local batch; adds what each task's host side computes from them
    (e.g. `vqa_prior_answer`, VQA v2 type ids)."""
    host = {k: local.pop(k) for k in rows.host_keys() if k in local}
    for task_host in self.hosts.values():
      if task_host.inputs is not None:
        local = task_host.inputs(local, host)
    return local

  def image_donors(self) -> np.ndarray | None:
    """The row whose image each row is shown for `accuracy_shuffled_images` (`shuffled_images`), or
    None when no evaluated task needs one or the split holds a single image (a warning says so)."""
    if not set(image_tasks()) & set(self.tasks):
      return None
    if self._donors is None:
      donors = shuffled_images.image_donors(self.source.image_identities())
      if donors is None:
        logging.warning("%s split %r holds a single image: no image can be shuffled, so no "
                        "accuracy_shuffled_images is reported.", self.config.data.name, self.source.split)
      self._donors = (donors,)
    return self._donors[0]

  def run(self, params: Any) -> dict[str, dict[str, Any]]:
    """{task: {"accuracy": a, "count": n, ...}} for each evaluated task."""
    totals: Any = None
    gathered: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in self.gather_fns}
    keep_text = any(host.keep_text for host in self.hosts.values())
    batches = self.source.eval_batches(self.config.eval.batch_size, keep_text=keep_text,
                                       image_donors=self.image_donors())
    if set(self.tasks) <= set(self.own_evaluators):  # they read the split their own way.
      batches = iter(())
    with jax.set_mesh(self.setup.mesh), nn.logical_axis_rules(self.setup.rules):
      for local in batches:
        batch = partitioning.to_global_batch(self._host_inputs(local), self.setup.mesh)
        counts = jax.tree.map(float, jax.device_get(self.counts_fn(params, batch)))
        totals = counts if totals is None else jax.tree.map(lambda a, b: a + b, totals, counts)
        for name, fn in self.gather_fns.items():  # replicated: every process holds the whole batch's rows.
          out = {k: np.asarray(v.addressable_data(0)) for k, v in fn(params, batch).items()}
          for k, v in out.items():
            if k != "rows":
              gathered[name].setdefault(k, []).append(v[out["rows"]])
    measured = metrics_from_counts(totals or {})
    metrics = {task: measured[task] for task in self.tasks if task in measured}
    for name, arrays in gathered.items():
      metrics[name] = tasks.get(name).finish({k: np.concatenate(v) for k, v in arrays.items()})
    for name, own in self.own_evaluators.items():
      metrics[name] = own.run(params)
    return metrics


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

  def __init__(self, setup: Any, config: ml_collections.ConfigDict):
    self.config = config
    self.evaluators: dict[str, Evaluator] = {}
    if not config.get("evals"):
      self.evaluators[DEFAULT_EVALUATOR] = Evaluator(setup, config)
      return
    for name in config.evals:
      try:
        self.evaluators[name] = Evaluator(setup, evaluator_config(config, name))
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


def restore_params(workdir: str, setup: Any, step: int | None = None) -> tuple[Any, int]:
  """(params, step) of the checkpoint at `step` (the latest complete one by default).

  Only the parameters are read: the optimizer moments (two thirds of an Adam state) stay on disk.
  """
  directory = checkpointing.checkpoint_dir(workdir)
  manager = checkpointing.make_manager(workdir, setup.config.train, read_only=True)
  try:
    incomplete = checkpointing.incomplete_checkpoints(directory)
    available = sorted(s for s in manager.all_steps() if str(s) not in incomplete)
    if not available:
      raise FileNotFoundError(f"no complete checkpoint under {directory}")
    if step is None:
      step = available[-1]
    elif step not in available:
      raise FileNotFoundError(f"cannot evaluate step {step}: {directory} has no complete checkpoint "
                              f"of it ({incomplete.get(str(step), 'no such checkpoint')}); complete "
                              f"checkpoints: {available}")
    where = f"{directory}/{step}"
    try:
      have = checkpointing.saved_param_shapes(manager, step)
    except FileNotFoundError:
      raise
    except Exception as e:  # noqa: BLE001 - unreadable metadata: name the checkpoint, not the parser.
      raise OSError(f"checkpoint {where} cannot be read: its state metadata "
                    f"({where}/state/_METADATA) is damaged or missing ({e!r})") from e
    checkpointing.check_compatible(have, setup.abstract_state, where)
    checksums = checkpointing.saved_checksums(manager, step)
  finally:
    manager.close()
  # A partial restore of the saved train state: only its `params` subtree is read from disk.
  target = {"params": setup.abstract_state.params}
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    try:
      restored = checkpointer.restore(
          directory / str(step) / "state",
          args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                      restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    except (OSError, ValueError) as e:
      raise OSError(f"checkpoint {where} cannot be read: {e}") from e
  checkpointing.verify_checksums({"params": restored["params"]}, checksums, where)
  logging.info("Restored the parameters of %s.", where)
  return restored["params"], int(step)


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
             setup: Any = None, evaluators: Evaluators | None = None) -> dict:
  """Restores the parameters at `step` (the latest by default), evaluates them, writes the JSON.

  Pass `setup` and `evaluators` to reuse them (and their compiled functions) across checkpoints.
  """
  setup = setup or Setup(config)
  params, step = restore_params(workdir, setup, step)
  result = (evaluators or Evaluators(setup, config)).result(params, step)
  write_result(workdir, result)
  return result
