"""The run's working directory: writable, and holding a config the new run is compatible with."""

from __future__ import annotations

import json
from typing import Any

import jax

from vlfusion import config_fields, configuration
from vlfusion.rundir import Workdir, config_differences

# Fields a resumed run may change freely: run length, logging, checkpoint cadence, evaluation,
# device layout and where data lives, as declared (`resumable=True`) in config_fields. Anything else
# changes what the saved state means.
RESUMABLE_CHANGES = config_fields.resumable_changes()


class IncompatibleWorkdirError(ValueError):
  """The workdir holds a run whose config differs in fields that change what its state means."""


def prepare(workdir: Any, config: Any, allow_config_change: bool = False, write: bool = True
            ) -> dict | None:
  """Creates `workdir`, checks it is writable, and checks a saved config against `config`.

  Raises `IncompatibleWorkdirError` listing the differing fields unless `allow_config_change`.
  With `write`, writes the resolved config to `workdir/config.json` (process 0); the trainer passes
  False and calls `write_config` once the checkpoint has been restored with the new config, so a config
  that then fails leaves the saved one in place. Returns the config saved before, completed with today's
  defaults for fields added since (`configuration.complete`), as a dict (None for a new workdir).
  """
  workdir = Workdir(workdir).path
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_probe_{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise OSError(f"workdir {workdir} is not writable: {e}") from e

  given = json.loads(configuration.to_json(config))
  path = workdir / "config.json"
  saved = None
  if path.exists():
    saved = json.loads(configuration.to_json(configuration.complete(json.loads(path.read_text()))))
    differences = config_differences(configuration.seeds_resolved(saved), configuration.seeds_resolved(given))
    changed = {
        k: v for k, v in differences.items()
        if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_CHANGES)
    }
    if changed and not allow_config_change:
      lines = "\n".join(f"  config.{k}: saved {v[0]!r}, given {v[1]!r}" for k, v in changed.items())
      raise IncompatibleWorkdirError(
          f"{workdir} holds a run with a different config; these fields differ:\n{lines}\n"
          "Use another --workdir, or pass --allow_config_change to continue with the new config."
      )
  if write:
    write_config(workdir, config)
  return saved


def write_config(workdir: Any, config: Any) -> None:
  """Writes the resolved config to `workdir/config.json` atomically (process 0)."""
  if jax.process_index() == 0:
    path = Workdir(workdir).config_path
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(configuration.to_json(config))
    tmp.replace(path)
