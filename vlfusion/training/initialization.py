"""`config.init`: start a run's parameters from a vlfusion checkpoint or a converted HF model.

`config.init.checkpoint` is a vlfusion workdir (its latest complete checkpoint is read) or one step
directory `<workdir>/checkpoints/<step>`; `config.init.huggingface` is a local HF directory of any model
`vlfusion.convert.from_huggingface` reads (BERT, LXMERT, VisualBERT, ViLT). Every parameter of the new
model whose path and shape match one of the source's is restored; only the new task head may keep its
fresh values unsaid, and a source of another model is refused (`match`) unless `config.init.allow_fresh`
names what may stay fresh. `config.init.exclude` is a regex (`re.search` on '/'-joined paths) of
parameters never restored, e.g. an old head of another size. Only parameters are read: never the
optimizer state, the step or the data position, so the fine-tuning run starts at step 0 with fresh
moments.

Layer stacks are compared unrolled (`<prefix>_stack/layer/...` with a leading axis of n reads as
`<prefix>_0..n-1/...`), so a source and a model that differ in `model.scan_layers` match layer by layer.
The report (`init_report.json` in the workdir) names parameters in that unrolled form.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from vlfusion import configuration, rundir
from vlfusion.configuration import ConfigError

Path = tuple[str, ...]
REPORT_FILE = "init_report.json"
_STACK = re.compile(r"^(.*)_stack$")


@dataclasses.dataclass
class Source:
  """Parameters to start from, unrolled, as {path: numpy array}.

  Attributes:
    field: the config field that named it (`init.checkpoint` or `init.huggingface`).
    path: the directory given; `resolved` the one read (e.g. the step directory of a workdir).
    params: unrolled path -> array.
    model: the source's `config.model` as a dict when known (to note structural differences).
  """

  field: str
  path: str
  resolved: str
  params: dict[Path, np.ndarray]
  model: dict[str, Any] | None = None


@dataclasses.dataclass
class InitReport:
  """What `restore` did, with parameters named unrolled and '/'-joined."""

  source: str
  field: str
  restored: list[str]
  fresh: list[str]
  unused: list[str]
  excluded: list[str]
  notes: list[str]

  def summary(self) -> str:
    lines = [f"config.{self.field}: {self.source}",
             f"restored {len(self.restored)} parameters; {len(self.fresh)} freshly initialised; "
             f"{len(self.unused)} source parameters unused; {len(self.excluded)} excluded"]
    if self.fresh:
      lines.append("fresh: " + ", ".join(self.fresh))
    if self.unused:
      lines.append("unused: " + ", ".join(self.unused))
    lines += [f"note: {n}" for n in self.notes]
    return "\n".join(lines)


def requested(config: Any) -> bool:
  """Whether `config.init` names a source."""
  return bool(config.init.checkpoint or config.init.huggingface)


# -- layouts ----------------------------------------------------------------------------------------


def unroll(flat: dict[Path, Any]) -> dict[Path, Any]:
  """{path: array} with every scanned stack `<p>_stack/layer/...` [n, ...] split into `<p>_i/...`."""
  out: dict[Path, Any] = {}
  for path, value in flat.items():
    where = _stack_position(path)
    if where is None:
      out[path] = value
      continue
    prefix = _STACK.match(path[where]).group(1)
    for i in range(value.shape[0]):
      out[path[:where] + (f"{prefix}_{i}",) + path[where + 2:]] = value[i]
  return out


def _stack_position(path: Path) -> int | None:
  for i, part in enumerate(path[:-1]):
    if _STACK.match(part) and path[i + 1] == "layer":
      return i
  return None


def _unrolled_names(path: Path, shape: tuple[int, ...]) -> list[tuple[Path, tuple[int, ...]]]:
  """The unrolled (path, shape) pairs one parameter of the model stands for."""
  where = _stack_position(path)
  if where is None:
    return [(path, shape)]
  prefix = _STACK.match(path[where]).group(1)
  return [(path[:where] + (f"{prefix}_{i}",) + path[where + 2:], shape[1:]) for i in range(shape[0])]


def _name(path: Path) -> str:
  return "/".join(path)


# -- sources ----------------------------------------------------------------------------------------


def _saved_model_config(step_dir: str) -> dict[str, Any] | None:
  """The model config the step's run saved (fields added since: today's defaults), or None."""
  saved = rundir.Workdir(rundir.as_path(step_dir).parent.parent)
  return saved.read_config().model.to_dict() if saved.has_config() else None


def _from_checkpoint(path: str) -> Source:
  step_dir = os.fspath(rundir.find_step_dir(path, "config.init.checkpoint"))
  params = unroll(rundir.read_step_params(step_dir, "config.init.checkpoint"))  # params only, to host.
  return Source("init.checkpoint", path, step_dir, params, _saved_model_config(step_dir))


def _from_huggingface(path: str) -> Source:
  from vlfusion.convert.hf_files import CheckpointError, load_directory
  from vlfusion.convert.huggingface import CONVERTERS

  field = "config.init.huggingface"
  if not os.path.exists(path):
    raise ConfigError(f"{field}={path!r}: no such directory")
  try:
    ck = load_directory(path, field=field)
  except CheckpointError as e:
    raise ConfigError(str(e)) from e
  if ck.model_type not in CONVERTERS:
    hint = (" (a unimodal ViT/CLIP checkpoint starts the image stream: config.model.image.init_from)"
            if ck.model_type in ("vit", "clip", "clip_vision_model") else "")
    raise ConfigError(f"{field}={path!r}: model_type={ck.model_type!r} is not supported; supported: "
                      f"{sorted(CONVERTERS)}{hint}")
  try:
    model_config, converted = CONVERTERS[ck.model_type](ck)
  except CheckpointError as e:
    raise ConfigError(f"{field}={path!r}: {e}") from e
  return Source("init.huggingface", path, path, {k: np.asarray(v) for k, v in converted.items()},
                model_config.to_dict())


def load(config: Any) -> Source:
  """Reads the source `config.init` names; raises `ConfigError` naming the field on bad input."""
  init = config.init
  if init.checkpoint and init.huggingface:
    raise ConfigError(f"config.init.checkpoint={init.checkpoint!r} and config.init.huggingface="
                      f"{init.huggingface!r} are both set; choose one")
  if init.checkpoint:
    return _from_checkpoint(init.checkpoint)
  return _from_huggingface(init.huggingface)


# -- matching ---------------------------------------------------------------------------------------


def _compile(config: Any, name: str) -> re.Pattern | None:
  pattern = config.init.get(name, "")
  try:
    return re.compile(pattern) if pattern else None
  except re.error as e:
    raise ConfigError(f"config.init.{name}={pattern!r} is not a regular expression: {e}") from e


def _heads(names: Any) -> set[str]:
  """The head names (`heads_<name>/...` at the top) among parameter paths."""
  return {path[0][len("heads_"):] for path in names if path and path[0].startswith("heads_")}


def _grouped(names: list[str]) -> str:
  """Parameter names grouped by their first two path components, with counts: a readable list."""
  groups: dict[str, int] = {}
  for name in names:
    key = "/".join(name.split("/")[:2])
    groups[key] = groups.get(key, 0) + 1
  return ", ".join(f"{k} ({n})" if n > 1 else k for k, n in groups.items())


def match(source: Source, params: Any, config: Any) -> InitReport:
  """What restoring `source` into `params` (arrays or shape structs) does, or a `ConfigError`.

  Only the new task head may stay fresh unsaid: the heads of `config.model.heads` that the source lacks
  (e.g. `heads_vqa` on a pretraining checkpoint), and only the source's heads the model lacks may go
  unused. A source of another model is refused, listing what would stay fresh, what would go unused and
  which model fields differ (`configuration.model_differences`, against the source's saved model), unless
  `config.init.allow_fresh` (a regex, `re.search` on '/'-joined paths) names every other parameter that
  may stay fresh or unused; the field differences are then accepted and kept as the report's notes.
  `config.init.exclude` leaves parameters fresh on purpose. Also refused: a shape mismatch outside
  `exclude` (naming the parameter and both shapes), a regex that matches no parameter, and a source of
  which nothing fits.
  """
  exclude, allow = _compile(config, "exclude"), _compile(config, "allow_fresh")
  hit = lambda regex, *names: regex is not None and any(regex.search(_name(n)) for n in names)
  restored, fresh, excluded, mismatched = [], [], set(), []
  used: set[Path] = set()
  for path, leaf in traverse_util.flatten_dict(params).items():
    for name, shape in _unrolled_names(path, tuple(leaf.shape)):
      if hit(exclude, name, path):
        excluded.add(_name(name))
        if name in source.params:
          used.add(name)
        fresh.append(_name(name))
      elif name not in source.params:
        fresh.append(_name(name))
      else:
        used.add(name)
        theirs = tuple(source.params[name].shape)
        if theirs != shape:
          mismatched.append(f"{_name(name)}: source {theirs}, model {shape}")
        else:
          restored.append(_name(name))
  where = f"config.{source.field}={source.path!r}"
  if mismatched:
    more = f" (and {len(mismatched) - 10} more)" if len(mismatched) > 10 else ""
    raise ConfigError(
        f"{where}: {len(mismatched)} parameters differ in shape between the source and the model: "
        f"{'; '.join(mismatched[:10])}{more}. Fix the model config, or leave them fresh with "
        "config.init.exclude (a regex of parameter paths)")
  excluded |= {_name(n) for n in source.params if hit(exclude, n)}
  if exclude is not None and not excluded:
    raise ConfigError(f"config.init.exclude={config.init.exclude!r} matches no parameter of the model or "
                      f"of {where}")
  if not restored:
    raise ConfigError(f"{where}: no parameter of the source matches the model (paths or shapes); is it "
                      "the model family the config builds?")
  fresh = sorted(set(fresh))
  unused = sorted(_name(n) for n in source.params if n not in used and _name(n) not in excluded)
  new_heads = {f"heads_{h}" for h in config.model.heads} - {f"heads_{h}" for h in _heads(source.params)}
  old_heads = {f"heads_{h}" for h in _heads(source.params)} - {f"heads_{h}" for h in config.model.heads}
  expected = lambda name, heads: name.split("/")[0] in heads or name in excluded
  if allow is not None and not any(allow.search(n) for n in fresh + unused + restored):
    raise ConfigError(f"config.init.allow_fresh={config.init.allow_fresh!r} matches no parameter of the "
                      f"model or of {where}")
  allowed = lambda name: allow is not None and bool(allow.search(name))
  odd_fresh = [n for n in fresh if not expected(n, new_heads) and not allowed(n)]
  odd_unused = [n for n in unused if not expected(n, old_heads) and not allowed(n)]
  differences = configuration.model_differences(source.model, config.model) if source.model else []
  if odd_fresh or odd_unused or (differences and allow is None):
    lines = [f"{where} holds another model than this config builds; restoring it would leave "
             f"{len(fresh)} parameters fresh and {len(unused)} of the source unused:"]
    if differences:
      lines.append("  model fields that differ (source vs this run): " + "; ".join(differences))
    if odd_fresh:
      lines.append(f"  fresh beyond the new head ({len(odd_fresh)}): {_grouped(odd_fresh)}")
    if odd_unused:
      lines.append(f"  unused beyond the old heads ({len(odd_unused)}): {_grouped(odd_unused)}")
    lines.append(f"Only the new task head ({', '.join(sorted(new_heads)) or 'none'}) may stay fresh unsaid. "
                 "Build the model the source was trained as (the same --config.model.* flags), or name "
                 "what may stay fresh or unused with config.init.allow_fresh (a regex of parameter paths; "
                 "it accepts the field differences too) or config.init.exclude.")
    raise ConfigError("\n".join(lines))
  return InitReport(source=source.resolved, field=source.field, restored=sorted(restored), fresh=fresh,
                    unused=unused, excluded=sorted(excluded),
                    notes=[f"{d} (accepted by config.init.allow_fresh)" for d in differences])


def _value(leaf: Any, value: np.ndarray) -> jax.Array:
  """`value` with the dtype and sharding of `leaf`."""
  value = np.asarray(value).astype(leaf.dtype)
  sharding = getattr(leaf, "sharding", None)
  return jax.device_put(value, sharding) if sharding is not None else jax.numpy.asarray(value)


def restore(source: Source, params: Any, config: Any, workdir: str | None = None
            ) -> tuple[Any, InitReport]:
  """`params` (unboxed, possibly sharded) with every source parameter `match` restores put in.

  Raises `match`'s `ConfigError`s. Writes the report to `workdir/init_report.json` (process 0) and logs
  it.
  """
  report = match(source, params, config)
  take = {tuple(name.split("/")) for name in report.restored}
  new_flat = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    names = _unrolled_names(path, tuple(leaf.shape))
    values = {i: source.params[name] for i, (name, _) in enumerate(names) if name in take}
    if not values:
      new_flat[path] = leaf
    elif len(names) == 1:
      new_flat[path] = _value(leaf, values[0])
    else:  # a scanned stack: restored layers over the fresh ones.
      stacked = np.array(leaf) if len(values) < len(names) else np.zeros(leaf.shape, leaf.dtype)
      for i, value in values.items():
        stacked[i] = value
      new_flat[path] = _value(leaf, stacked)
  logging.info("Initialised parameters from %s", report.summary())
  if workdir is not None and jax.process_index() == 0:
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
      json.dump(dataclasses.asdict(report), f, indent=2)
  return traverse_util.unflatten_dict(new_flat), report
