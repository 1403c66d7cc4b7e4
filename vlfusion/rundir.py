"""A run directory (workdir) as one object: where each of its files lives and how each is read.

```
workdir/config.json               the resolved config (`read_config`)
workdir/checkpoints/<step>/       orbax: train state + data position (`complete_steps`, `restore_params`)
workdir/eval/step_<N>.json        the run's own evaluators' result of step N (`eval_results`)
workdir/eval/<digest>/step_<N>.json   another evaluator config's (`eval_result_path`)
workdir/metrics.jsonl             one JSON object per logged step (`read_metrics`)
workdir/tensorboard/              clu writers and profiles
```

Paths are `etils.epath` paths, so a workdir on a bucket (`gs://...`) is read and written like a local
one by everything that goes through this class. Restoring parameters imports orbax when it is called.
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath

from vlfusion import configuration
from vlfusion.errors import ConfigError

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
# Orbax writes this file into a step directory when its save has finished.
COMMIT_MARKER = "commit_success.txt"
# An evaluator config's results folder is named by the first digits of its digest.
FOLDER_DIGITS = 16
# Where the run's own result of a step goes when it is moved aside and records no evaluator (written
# before results were keyed, by another config than the run's).
UNKEYED = "unkeyed"


def as_path(path: Any) -> epath.Path:
  """`path` as an `epath.Path`: local paths made absolute, `gs://...` (any URI) kept as given."""
  text = os.fspath(path)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(text))


def eval_relative_path(step: int, digest: str | None, own_digest: str | None) -> str:
  """`eval/step_<step>.json` for the run's own evaluators (`digest == own_digest`, or either unknown),
  else `eval/<digest[:16]>/step_<step>.json`."""
  name = f"step_{int(step)}.json"
  if digest is None or own_digest is None or digest == own_digest:
    return f"{EVAL}/{name}"
  return f"{EVAL}/{digest[:FOLDER_DIGITS]}/{name}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a.b.c': value} for a nested dict."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def config_differences(saved: dict, given: dict) -> dict[str, tuple[Any, Any]]:
  """Fields whose values differ (or exist on one side only), as {field: (saved, given)}; a tuple and a
  list of the same items are the same value (a config.json holds lists)."""
  a, b = flatten(saved), flatten(given)
  missing = "<absent>"
  same = lambda x: list(x) if isinstance(x, (list, tuple)) else x
  return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if same(a.get(k, missing)) != same(b.get(k, missing))}


def _read_json(path: epath.Path) -> Any:
  return json.loads(path.read_text())


class Workdir:
  """One run's directory (see the module docstring). Reads never create anything."""

  def __init__(self, path: Any):
    self.path = path.path if isinstance(path, Workdir) else as_path(path)

  def __fspath__(self) -> str:
    return os.fspath(self.path)

  def __str__(self) -> str:
    return os.fspath(self.path)

  def __repr__(self) -> str:
    return f"Workdir({os.fspath(self.path)!r})"

  # -- config ----------------------------------------------------------------------------------------

  @property
  def config_path(self) -> epath.Path:
    return self.path / CONFIG

  def has_config(self) -> bool:
    return self.config_path.is_file()

  def read_raw_config(self) -> dict[str, Any] | None:
    """config.json exactly as saved (its digests are of this), or None before the run wrote one."""
    if not self.has_config():
      return None
    return _read_json(self.config_path)

  def read_config(self) -> Any:
    """The saved config completed with today's defaults for fields added since
    (`configuration.complete`), as an unlocked ConfigDict; None before the run wrote one."""
    raw = self.read_raw_config()
    return None if raw is None else configuration.complete(raw)

  # -- checkpoints -----------------------------------------------------------------------------------

  @property
  def checkpoints_dir(self) -> epath.Path:
    return self.path / CHECKPOINTS

  def step_dir(self, step: int) -> epath.Path:
    return self.checkpoints_dir / str(int(step))

  def incomplete_checkpoints(self) -> dict[str, str]:
    """Entries of `checkpoints/` that a crash left incomplete, each with the reason."""
    return incomplete_checkpoints(self.checkpoints_dir)

  def complete_steps(self) -> list[int]:
    """The steps of the complete checkpoints, in order (a save in progress is not one)."""
    directory = self.checkpoints_dir
    if not directory.is_dir():
      return []
    incomplete = incomplete_checkpoints(directory)
    return sorted(int(path.name) for path in directory.iterdir()
                  if path.name.isdigit() and path.name not in incomplete and path.is_dir())

  def checkpoint(self, step: int | None = None, field: str = "--workdir") -> epath.Path:
    """The step directory of complete checkpoint `step` (default: the latest); `field` names the
    setting in errors."""
    steps = self.complete_steps()
    if step is None:
      if not steps:
        raise ConfigError(f"{field}={os.fspath(self.path)!r}: no complete checkpoint in "
                          f"{os.fspath(self.checkpoints_dir)}")
      step = steps[-1]
    if int(step) not in steps:
      raise ConfigError(f"{field}={os.fspath(self.path)!r}: no complete checkpoint of step {step} "
                        f"(complete: {steps})")
    return self.step_dir(step)

  def restore_params(self, step: int | None = None, field: str = "--workdir") -> dict[tuple, Any]:
    """The parameters of checkpoint `step` (default: the latest complete one) in host memory, as a
    flat {path: array}; the optimizer state is not read."""
    return read_step_params(self.checkpoint(step, field), field)

  # -- evaluation results ----------------------------------------------------------------------------

  def own_evaluator_digest(self) -> str | None:
    """The evaluator digest of the run's own config.json, or None before there is one."""
    raw = self.read_raw_config()
    return None if raw is None else configuration.evaluator_digest(raw)

  def eval_result_path(self, step: int, digest: str | None = None) -> epath.Path:
    """Where the result of evaluator config `digest` at `step` lives (`eval_relative_path`)."""
    return self.path / eval_relative_path(step, digest, self.own_evaluator_digest() if digest else None)

  def read_eval_result(self, step: int, digest: str | None = None) -> dict[str, Any] | None:
    """The result at `eval_result_path`, or None when there is none or it cannot be parsed."""
    try:
      return _read_json(self.eval_result_path(step, digest))
    except (OSError, ValueError):  # absent, or cut short: no result to trust.
      return None

  def eval_results(self) -> dict[int, dict[str, Any]]:
    """{step: result} of every `eval/step_<N>.json` (the run's own evaluators), in step order."""
    directory = self.path / EVAL
    out = {}
    if directory.is_dir():
      for path in directory.glob("step_*.json"):
        name = path.name[len("step_"):-len(".json")]
        if name.isdigit():
          out[int(name)] = _read_json(path)
    return dict(sorted(out.items()))

  # -- metrics ---------------------------------------------------------------------------------------

  @property
  def metrics_path(self) -> epath.Path:
    return self.path / METRICS

  @property
  def tensorboard_dir(self) -> epath.Path:
    return self.path / TENSORBOARD

  def read_metrics(self) -> list[dict[str, Any]]:
    """The records of metrics.jsonl in order (none before the first log); a line cut short by a crash
    is left out."""
    if not self.metrics_path.is_file():
      return []
    records = []
    for line in self.metrics_path.read_text().splitlines():
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          continue
    return records


def incomplete_checkpoints(directory: Any) -> dict[str, str]:
  """Entries of a checkpoints `directory` that a crash left incomplete, each with the reason."""
  found = {}
  directory = epath.Path(directory)
  if not directory.is_dir():
    return found
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    name = path.name
    if not path.is_dir():
      continue
    if ".orbax-checkpoint-tmp" in name:
      found[name] = "temporary directory of a save that never finished"
    elif name.isdigit():
      if not (path / COMMIT_MARKER).exists():
        found[name] = f"no {COMMIT_MARKER}: the save did not complete"
      else:
        missing = [i for i in ("state", "data") if not (path / i).is_dir()]
        if missing:
          found[name] = f"missing items {missing}"
  return found


def find_step_dir(path: Any, field: str = "config.init.checkpoint") -> epath.Path:
  """The checkpoint step directory `path` names: itself (a `checkpoints/<step>` directory), or the latest
  complete step of a workdir (in its `checkpoints/`, or in itself). `field` names the setting in errors."""
  path = as_path(path)
  shown = os.fspath(path)
  if not path.exists():
    raise ConfigError(f"{field}={shown!r}: no such file or directory")
  if not path.is_dir():
    raise ConfigError(f"{field}={shown!r} is a file; give a vlfusion workdir or one of its "
                      "checkpoints/<step> directories")
  if (path / "state").is_dir() and path.name.isdigit():
    if not (path / COMMIT_MARKER).exists():
      raise ConfigError(f"{field}={shown!r}: this checkpoint is incomplete (no {COMMIT_MARKER}: its save "
                        "did not finish); give another step or the workdir")
    return path
  for directory in (path / CHECKPOINTS, path):
    steps = [p.name for p in directory.iterdir() if p.name.isdigit() and p.is_dir()] \
        if directory.is_dir() else []
    if steps:
      bad = incomplete_checkpoints(directory)
      complete = sorted((int(s) for s in steps if s not in bad), reverse=True)
      if not complete:
        raise ConfigError(f"{field}={shown!r}: no complete checkpoint in {os.fspath(directory)} "
                          f"(incomplete: {sorted(bad)})")
      return directory / str(complete[0])
  hint = ""
  if (path / CONFIG).is_file() and any(p.name.endswith(".safetensors") for p in path.iterdir()):
    hint = " It looks like an HF checkpoint: set config.init.huggingface instead."
  raise ConfigError(f"{field}={shown!r} is not a vlfusion checkpoint: expected a workdir holding "
                    f"checkpoints/<step>/state or a checkpoints/<step> directory.{hint}")


def read_step_params(step_dir: Any, field: str = "config.init.checkpoint") -> dict[tuple, Any]:
  """The parameters of a checkpoint step directory, to host memory as a flat {path: array}; the optimizer
  state is not read. `field` names the setting in errors."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from flax import traverse_util

  state_dir = epath.Path(step_dir) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    metadata = checkpointer.metadata(state_dir)
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
    if hasattr(tree, "tree"):
      tree = tree.tree
    params_meta = tree["params"]
  except Exception as e:  # noqa: BLE001 - any unreadable metadata: say which directory.
    raise ConfigError(f"{field}: {state_dir} cannot be read as a vlfusion train state "
                      f"({e!r})") from e
  is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
  item = jax.tree.map(lambda m: np.zeros((), m.dtype), params_meta, is_leaf=is_leaf)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item={"params": item}, restore_args={"params": args}, partial_restore=True))
  return traverse_util.flatten_dict(restored["params"])
