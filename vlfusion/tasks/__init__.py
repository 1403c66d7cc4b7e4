"""The tasks, by name: each is one file of this package declaring a `Task` (see `base`).

The model builds the heads named in `config.model.heads`, the losses weigh `config.objectives`, the rows
carry the fields of the objectives trained, and the evaluator runs `config.eval.tasks`, all by looking
their names up here. A new task is a new file and one entry in `REGISTRY`; `register` adds one at run
time (tests do).
"""

from __future__ import annotations

from vlfusion.tasks import itc, itm, mlm, mrm, pairs, retrieval, snli_ve, vqa
from vlfusion.tasks.base import EvalHost, Fused, HeadParts, Objective, Task

__all__ = ["EvalHost", "Fused", "HeadParts", "Objective", "Task", "REGISTRY", "get", "register",
           "objectives", "eval_tasks", "own_text_tasks", "evaluated", "accuracy_names", "eval_metric_names"]

REGISTRY: dict[str, Task] = {
    t.name: t for t in (mlm.TASK, itm.TASK, mrm.TASK, itc.TASK, vqa.TASK, pairs.TASK, retrieval.TASK,
                        snli_ve.TASK)
}


def register(task: Task) -> Task:
  """Adds `task` under its name (replacing a task of that name) and returns it."""
  REGISTRY[task.name] = task
  return task


def get(name: str) -> Task:
  """The task called `name`; a KeyError names the known ones."""
  if name not in REGISTRY:
    raise KeyError(f"no task {name!r}; known: {tuple(REGISTRY)}")
  return REGISTRY[name]


def objectives() -> tuple[str, ...]:
  """The tasks with a training objective (the keys `config.objectives` may hold) and a head."""
  return tuple(n for n, t in REGISTRY.items() if t.objective is not None)


def eval_tasks() -> tuple[str, ...]:
  """The tasks `config.eval.tasks` may name."""
  return tuple(n for n, t in REGISTRY.items() if t.evaluated)


def own_text_tasks() -> tuple[str, ...]:
  """Objectives whose rows hold their own text (a question, a statement), not a caption."""
  return tuple(n for n, t in REGISTRY.items() if t.own_text is not None)


def evaluated(tasks, heads) -> list[str]:
  """The `tasks` an evaluator runs: those whose head (`Task.head_name`) is in `heads`."""
  return [t for t in tasks if (REGISTRY[t].head_name if t in REGISTRY else t) in heads]


DEFAULT_EVALUATOR = "default"  # the evaluator of a run without `config.evals`.


def accuracy_names(evaluator: str, task: str, default: bool) -> list[str]:
  """The names evaluator `evaluator`'s accuracy of `task` is reported under: `<evaluator>/<task>_accuracy`,
  and for the default evaluator of a run without `config.evals` (`default`) also `<task>_accuracy`."""
  return [f"{task}_accuracy", f"{evaluator}/{task}_accuracy"] if default else [f"{evaluator}/{task}_accuracy"]


def eval_metric_names(config) -> list[str]:
  """The accuracies evaluation during training reports (and `train.best_metric` may name): those of
  each named evaluator of `config.evals`, else those of the default evaluator, with and without its
  name (`vqa_accuracy`, `default/vqa_accuracy`). A task counts when the model has the head it reads
  (`Task.head_name`: `retrieval_accuracy` needs the ITC head), as the evaluator decides what it runs."""
  heads = set(config.model.heads)
  evals = config.get("evals") or {}
  if not evals:
    names = [accuracy_names(DEFAULT_EVALUATOR, t, True) for t in evaluated(config.eval.tasks, heads)]
    return [n[0] for n in names] + [n[1] for n in names]
  return [name for evaluator, entry in evals.items()
          for task in evaluated(entry.get("tasks", config.eval.tasks), heads)
          for name in accuracy_names(evaluator, task, False)]
