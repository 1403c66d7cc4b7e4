"""The evaluator of tasks scored batch by batch over a split: counts summed, rows gathered.

Every accuracy that depends on the image is reported with `accuracy_shuffled_images`: the same rows
scored again, each shown the image of another image of the split (`shuffled_images`; every key of
`pipeline.IMAGE_KEYS` moves together). A model that ignores the image scores the same both ways; the
figure is left out, with a warning, when the split holds a single image. VQA also reports
`text_prior_accuracy` (see `tasks.text_prior`) and the figures by question type (and by answer type on
VQA v2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from vlfusion import tasks
from vlfusion.data import pipeline, rows
from vlfusion.evaluation import shuffled_images
from vlfusion.evaluation.predictor import PredictFn, Predictor
from vlfusion.tasks import base as task_base


def image_tasks() -> tuple[str, ...]:
  """Tasks whose accuracy depends on the image, and so come with `accuracy_shuffled_images`."""
  return tuple(n for n, t in tasks.REGISTRY.items() if t.image_bound)


def eval_counts(predict_fn: PredictFn, params: Any, batch: dict[str, Any],
                contexts: dict[str, Any] | None = None) -> dict[str, dict[str, dict]]:
  """{task: {group: {value: sum, "total": n}}} on one batch, padding rows excluded (`Task.eval_counts`
  of each registered task whose outputs the model gives).

  Group "" is the whole task; "<kind>:<name>" a slice of its rows (a VQA question type, an ITM negative
  kind, a true label, ...). Values: `correct` (the model's accuracy summed; VQA: the soft score of the
  arg-max answer), `shuffled` (the same with each row shown the images it holds under
  `pipeline.SHUFFLED_IMAGES`; absent without them), `prior` (the text prior's, where the batch holds its
  answers). `contexts` gives a task the static context of its counts (`EvalHost.context`; VQA: the
  question types).
  """
  contexts = contexts or {}
  moved = batch.get(pipeline.SHUFFLED_IMAGES)
  batch = {k: v for k, v in batch.items() if k != pipeline.SHUFFLED_IMAGES}
  outputs = predict_fn(params, batch)
  image_bound = any(t.image_bound and t.output in outputs for t in tasks.REGISTRY.values())
  shuffled = None
  if image_bound and moved is not None:
    shuffled = predict_fn(params, {**batch, **moved})
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


def host_inputs(local: dict[str, Any], hosts: dict[str, task_base.EvalHost]) -> dict[str, Any]:
  """Pops the host-side strings of a local batch; adds what each task's host side computes from them
  (e.g. `vqa_prior_answer`, VQA v2 type ids). Host strings never reach the devices."""
  host = {k: local.pop(k) for k in rows.host_keys() if k in local}
  for task_host in hosts.values():
    if task_host.inputs is not None:
      local = task_host.inputs(local, host)
  return local


def _gathered_rows(task: tasks.Task, predict_fn: PredictFn, params: Any, batch: dict[str, Any]) -> dict:
  return task.gather(predict_fn(params, batch), batch)


class BatchedEvaluator:
  """The metrics of tasks scored batch by batch over `source`'s split.

  Each task of `task_names` is counted batch by batch and the counts summed (`Task.eval_counts`,
  `Task.metrics`), or its rows gathered and scored at the end (`Task.gather`, `Task.finish`: ITC
  retrieval over the split's matching pairs). Image-bound tasks come with `accuracy_shuffled_images`, and
  a task with a host side (`Task.eval_host`, e.g. VQA's text prior, fitted on `train_source()`'s split)
  with `text_prior_accuracy`.
  """

  def __init__(self, predictor: Predictor, config: ml_collections.ConfigDict, source: Any,
               task_names: tuple[str, ...], train_source: Callable[[], Any] | None = None):
    self.predictor = predictor
    self.config = config
    self.source = source
    self.tasks = tuple(task_names)
    self.hosts: dict[str, task_base.EvalHost] = {}  # each task's host side (its text prior), built once.
    for name in self.tasks:
      make = tasks.get(name).eval_host
      host = make(config, source, train_source or (lambda: source)) if make else None
      if host is not None:
        self.hosts[name] = host
    contexts = {name: host.context for name, host in self.hosts.items() if host.context is not None}
    self._donors: Any = None  # computed on the first run (one read of the split), then reused.
    predict_fn = predictor.predict_fn
    self.counts_fn = jax.jit(lambda p, b: eval_counts(predict_fn, p, b, contexts))
    self.gather_fns = {
        name: predictor.jit(functools.partial(_gathered_rows, tasks.get(name), predict_fn))
        for name in self.tasks if tasks.get(name).gather is not None}

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
    """{task: {"accuracy": a, "count": n, ...}} for each of its tasks."""
    totals: Any = None
    gathered: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in self.gather_fns}
    keep_text = any(host.keep_text for host in self.hosts.values())
    batches = self.source.eval_batches(self.config.eval.batch_size, keep_text=keep_text,
                                       image_donors=self.image_donors())
    with self.predictor.placed():
      for local in batches:
        batch = self.predictor.global_batch(host_inputs(local, self.hosts))
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
    return metrics
