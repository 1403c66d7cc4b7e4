"""What the fine-tuning configs share: a pretraining family's model at a size, one task's head and data.

`finetune_config(arg, task)` reads the argument `size[,family=<name>]`, where the family is any config
file in configs/pretrain/ (co_attention, lxmert, vilt, ...): its `model` section is the model fine-tuned,
so a workdir that file pretrained restores into it (`--config.init.checkpoint`). The heads become the
task's alone and the objectives the task's; each task file then sets its own schedule.
"""

from __future__ import annotations

import copy
import importlib.util
import os

import ml_collections

from vlfusion import configuration, tasks

PRETRAIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrain")

# Fine-tuning recipes over several tasks: name -> (heads, objectives with weight 1, eval tasks). Any
# other name is a task of `vlfusion.tasks` fine-tuned alone: its head, its objective, its evaluation.
RECIPE_TASKS = {
    "retrieval": (("itc", "itm"), ("itc", "itm"), ("itc", "itm")),
}


def task_setup(task: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
  """(heads, objectives with weight 1, eval tasks) of fine-tuning `task`."""
  if task in RECIPE_TASKS:
    return RECIPE_TASKS[task]
  t = tasks.get(task)
  return (t.name,), (t.name,), ((t.name,) if t.evaluated else ())


def families() -> list[str]:
  """The pretraining config files a fine-tuning config can take its model from."""
  return sorted(f[:-3] for f in os.listdir(PRETRAIN_DIR) if f.endswith(".py") and not f.startswith("_"))


def family_config(family: str, size: str) -> ml_collections.ConfigDict:
  """`configs/pretrain/<family>.py`'s `get_config(size)`, unlocked."""
  if family not in families():
    raise configuration.ConfigError(
        f"config argument family={family!r} is not a config in configs/pretrain; choose one of "
        f"{families()}")
  spec = importlib.util.spec_from_file_location(f"_pretrain_{family}",
                                                os.path.join(PRETRAIN_DIR, f"{family}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(size)
  config.unlock()
  return config


def finetune_config(arg: str | None, task: str, default_family: str = "co_attention"
                    ) -> tuple[ml_collections.ConfigDict, str, str]:
  """(config, size, family): the shared defaults at `size` with the family's model and `task`'s head.

  The data stays the shapes world (`shapes_world/tiny`) below base size; the task file sets base data.
  """
  args = configuration.parse_arg(arg, keys=("family",))
  size, family = args["size"], args.get("family", default_family)
  config, _ = configuration.sized_config(size)
  pretrain = family_config(family, size)
  config.model = copy.deepcopy(pretrain.model)
  heads, objectives, eval_tasks = task_setup(task)
  m = config.model
  if task == "retrieval" and m.fusion == "dual_encoder":
    heads, objectives, eval_tasks = ("itc",), ("itc",), ("itc",)  # no fused pair to match.
  m.heads = heads
  # The shared objectives, and the task's own where the shared defaults do not list it.
  names = list(config.objectives) + [n for n in objectives if n not in config.objectives]
  config.objectives = {name: (1.0 if name in objectives else 0.0) for name in names}
  config.eval.tasks = eval_tasks
  config.data.name = "shapes_world/tiny"
  return config, size, family


def finish(config: ml_collections.ConfigDict, eval_points: int = 4) -> ml_collections.ConfigDict:
  """Checkpoints 4 times, logs 40 times and evaluates `eval_points` times over the run; locks.

  Each cadence is a reference to `train.num_steps` (`every`), not a number: a `--config.train.num_steps`
  override, applied after this file is read, resizes them with it, and a cadence set explicitly (on the
  command line or by a sweep) replaces its reference and wins. docs/design.md has the decision.
  """
  t = config.train
  t.checkpoint_every_steps = every(config, 4)
  t.log_every_steps = every(config, 40)
  config.eval.every_steps = every(config, eval_points)
  config.lock()
  return config


def every(config: ml_collections.ConfigDict, points: int) -> ml_collections.FieldReference:
  """`ceil(train.num_steps / points)` (at least 1 for any run of a step or more), computed from the
  run's final `train.num_steps` whenever the field is read: at most `points` times over the run."""
  steps = config.train.get_ref("num_steps")
  return (steps - 1) // points + 1
