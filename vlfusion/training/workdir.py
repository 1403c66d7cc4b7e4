"""The run's working directory: writable, and holding a config the new run is compatible with."""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from vlfusion import configuration

# Fields a resumed run may change freely: run length, logging, checkpoint cadence, evaluation,
# device layout and where data lives. Anything else changes what the saved state means.
RESUMABLE_CHANGES = (
    "train.num_steps", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.keep_best_checkpoints", "train.nonfinite_policy",
    "train.max_consecutive_nonfinite", "train.inject_nan_at_step", "train.inject_nan_objective",
    "train.peak_flops_per_device",
    "eval.", "evals.", "mesh.", "data.data_dir", "data.num_workers", "data.prefetch_batches",
)


class IncompatibleWorkdirError(ValueError):
  """The workdir holds a run whose config differs in fields that change what its state means."""


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
  """Fields whose values differ (or exist on one side only), as {field: (saved, given)}."""
  a, b = flatten(saved), flatten(given)
  missing = "<absent>"
  return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing)}


def prepare(workdir: str, config: Any, allow_config_change: bool = False) -> None:
  """Creates `workdir`, checks it is writable, and checks a saved config against `config`.

  Raises `IncompatibleWorkdirError` listing the differing fields unless `allow_config_change`.
  Writes the resolved config to `workdir/config.json` (process 0).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"workdir {workdir} is not writable: {e}") from e

  given = json.loads(configuration.to_json(config))
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = {
        k: v for k, v in config_differences(saved, given).items()
        if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_CHANGES)
    }
    if changed and not allow_config_change:
      lines = "\n".join(f"  config.{k}: saved {v[0]!r}, given {v[1]!r}" for k, v in changed.items())
      raise IncompatibleWorkdirError(
          f"{workdir} holds a run with a different config; these fields differ:\n{lines}\n"
          "Use another --workdir, or pass --allow_config_change to continue with the new config."
      )
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(configuration.to_json(config))
    os.replace(tmp, path)
