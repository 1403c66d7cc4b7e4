"""Where an evaluation result lives, and whether a saved one came from a given evaluator config.

A result records `evaluator_digest` (`configuration.evaluator_digest`: the model, evaluation data, tasks
and batch sizes that decide its numbers) beside `config_digest` and `params_digest`. The run's own
evaluators (those of its `config.json`) write `eval/step_<N>.json`, which the sweep and its report read;
any other evaluator config writes `eval/<digest>/step_<N>.json`, its first 16 hex digits naming the
folder. So a second eval config neither overwrites the run's results nor is skipped because of them.

No JAX here: the sweep report reads results with it.
"""

from __future__ import annotations

import json
from typing import Any

from vlfusion import configuration
from vlfusion.rundir import EVAL, FOLDER_DIGITS, UNKEYED  # noqa: F401 - re-exported.
from vlfusion.rundir import eval_relative_path as relative_path  # noqa: F401 - re-exported.

KEY = "evaluator_digest"


def aside_path(result: dict[str, Any]) -> str:
  """Where a result that sits in the run's own `eval/step_<N>.json` but is not the run's own moves to."""
  folder = str(result[KEY])[:FOLDER_DIGITS] if result.get(KEY) else UNKEYED
  return f"{EVAL}/{folder}/step_{int(result['step'])}.json"


def produced_by(result: dict[str, Any], config: Any) -> bool:
  """Whether `result` came from the evaluators of `config` (a ConfigDict or a config.json's dict).

  A result saved before results were keyed records no evaluator digest: it counts as `config`'s when it
  was produced under `config` itself (its `config_digest`), as a training run's own evaluation was.
  """
  if result.get(KEY):
    return result[KEY] == configuration.evaluator_digest(config)
  return result.get("config_digest") == configuration.digest(config)


def mismatch(result: dict[str, Any], config: Any, path: str) -> str | None:
  """Why `result` (read from `path`) is not a result of `config`'s evaluators, or None when it is."""
  if produced_by(result, config):
    return None
  if result.get(KEY):
    recorded = f"evaluator digest {result[KEY][:FOLDER_DIGITS]}"
  else:
    recorded = f"no evaluator digest and config digest {str(result.get('config_digest'))[:FOLDER_DIGITS]}"
  return (f"{path} was written by another evaluator config ({recorded}; this run's config has evaluator "
          f"digest {configuration.evaluator_digest(config)[:FOLDER_DIGITS]})")


def read(path: Any) -> dict[str, Any] | None:
  """The result at `path` (a str or epath.Path), or None when there is none or it cannot be parsed."""
  try:
    if hasattr(path, "read_text"):
      return json.loads(path.read_text())
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):  # absent, or cut short: no result to trust, so the step is evaluated.
    return None
