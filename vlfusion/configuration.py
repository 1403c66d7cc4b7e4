"""Run configuration: the defaults every config file starts from, model sizes, and validation.

A pretraining config file under `configs/` starts from `sized_config(arg)` (the defaults with a size and its
data applied), sets what makes its family, and returns the result locked; a fine-tuning file starts from a
pretraining file's config and applies its recipe as dotted overrides (`override`). `validate` checks the
resolved config before anything is built or compiled, and raises `ConfigError` naming the field at fault.
What each field is (default, type, checks, when it is read, resume rules) is declared once in
`config_fields`; this module reads it from there and holds the checks across fields. `load_config_file` and
`override` are the one loader of `path:arg` config files and the one typed setter of dotted fields.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from typing import Any

import ml_collections

from vlfusion import config_fields
from vlfusion import tasks as task_registry
from vlfusion.config_fields import (  # noqa: F401  (re-exported: the names callers import from here)
  BASE_REGIONS,
  COMPUTE_DTYPES,
  CROSS_ORDERS,
  DEFAULT_IMAGE_EMBEDDING,
  DTYPES,
  FUSION_FAMILIES,
  IMAGE_EMBEDDINGS,
  IMAGE_INPUTS,
  IMAGE_STEMS,
  POOLERS,
  REMAT_POLICIES,
)
from vlfusion.errors import ConfigError  # raised here, and caught by callers as configuration.ConfigError.

# The tasks (objectives, heads, evaluations) are declared in vlfusion/tasks, one file each; these are
# their names when this module was imported (validation asks the registry itself, so a task registered
# later is known to it too).
OBJECTIVES = task_registry.objectives()
EVAL_TASKS = task_registry.eval_tasks()
# The head each evaluation task reads where it is not its own (retrieval: ITC, re-ranked by ITM).
EVAL_TASK_HEADS = {n: t.head_name for n, t in task_registry.REGISTRY.items() if t.head_name != n}


def evaluated_tasks(names, heads) -> list[str]:
  """The tasks of `names` an evaluator runs: those whose head (`Task.head_name`) is in `heads`."""
  return task_registry.evaluated(names, heads)


# Sizes shared by every family: text stream, image stream and fusion depth.
SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=4, mlp=128, image_layers=1, fusion_layers=2),
    "small": dict(hidden=256, layers=4, heads=4, mlp=1024, image_layers=2, fusion_layers=2),
    "base": dict(hidden=768, layers=12, heads=12, mlp=3072, image_layers=5, fusion_layers=5),
}


def base_config() -> ml_collections.ConfigDict:
  """Returns the defaults shared by every run (DESIGN.md section 4), unlocked: every field declared in
  `config_fields.FIELDS` at its default (docs/config.md lists them)."""
  return config_fields.base_config()


def _apply_size(config: ml_collections.ConfigDict, size: str) -> None:
  """Sets hidden sizes, depths and heads of both streams from `SIZES[size]`."""
  if size not in SIZES:
    raise ConfigError(f"unknown size {size!r} in the config argument; choose one of {sorted(SIZES)}")
  s = SIZES[size]
  for stream in (config.model.text, config.model.image):
    stream.hidden_size = s["hidden"]
    stream.num_heads = s["heads"]
    stream.mlp_dim = s["mlp"]
  config.model.text.num_layers = s["layers"]
  config.model.image.num_layers = s["image_layers"]
  config.model.fusion_layers = s["fusion_layers"]


# Data and schedule per size: tiny runs in minutes on a laptop CPU, base is a pod-scale run.
TRAIN_DEFAULTS = {
    "tiny": dict(global_batch_size=32, num_steps=2000, learning_rate=1e-3, warmup_steps=100,
                 checkpoint_every_steps=500),
    "small": dict(global_batch_size=64, num_steps=5000, learning_rate=3e-4, warmup_steps=500,
                  checkpoint_every_steps=1000),
    "base": dict(global_batch_size=256, num_steps=100_000, learning_rate=1e-4, warmup_steps=10_000,
                 checkpoint_every_steps=5000),
}


def _apply_data_defaults(config: ml_collections.ConfigDict, size: str) -> None:
  """Sets the data, batch size, run length and learning rate of the pretraining run for `size`.

  tiny and small train on the shapes world; base is a pod run, so it names real data: COCO captions
  over 36 detector regions of 2048 features, with BERT's 30522-token uncased vocab. Its files are not
  shipped: the run stops before compiling with an error naming `--config.data.manual_dir` and
  `--config.data.vocab_path` until both are given. Published configs set their own base data.
  """
  d = TRAIN_DEFAULTS[size]
  config.data.name = "shapes_world/tiny"
  if size == "base":
    config.data.name = "coco_captions/regions"
    config.model.text.vocab_size = 30522
    config.model.image.update(BASE_REGIONS)
  config.data.global_batch_size = d["global_batch_size"]
  config.train.num_steps = d["num_steps"]
  config.train.checkpoint_every_steps = d["checkpoint_every_steps"]
  config.optimizer.learning_rate = d["learning_rate"]
  config.optimizer.warmup_steps = d["warmup_steps"]


def override(config: ml_collections.ConfigDict, overrides: dict[str, Any], *, flags: bool = False,
             source: str = "the config") -> ml_collections.ConfigDict:
  """Sets each dotted field of `overrides` ("model.fusion_layers": 2, ...) on an unlocked `config`, checked
  as a `--config.<field>=` flag is; returns `config`.

  The one typed override: the field must exist (an entry of an open section, `config.evals.<name>` or
  `config.data.mixture.<label>`, may be new), and the value must have the field's type: a bool is no
  number, an int for a float field becomes a float, a list for a tuple field a tuple. With `flags` (the
  overrides become `--config.` flags, as a sweep prints them), what the command line cannot do is
  refused too: a new entry, or a None field it cannot type. Errors are `ConfigError`s naming the field
  and `source` (where the config came from).
  """
  open_sections = config_fields.open_sections()
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    present, node = field_value(config, ".".join(parents)) if parents else (True, config)
    if not present or not hasattr(node, "keys") or (leaf not in node and (
        flags or not any(dotted.startswith(f"{s}.") for s in open_sections))):
      raise ConfigError(f"override {dotted}={value!r}: {source} has no field config.{dotted}")
    if leaf not in node:
      node[leaf] = value
      continue
    current = node[leaf]
    if flags and current is None and _field_type(node, leaf) is type(None):
      raise ConfigError(f"override {dotted}={value!r}: config.{dotted} is None in {source}, and a None "
                        "field cannot be set with --config.<field>=; set it in a config file instead")
    number = isinstance(current, (int, float)) and not isinstance(current, bool)
    if isinstance(current, bool) != isinstance(value, bool) and current is not None or (
        number and not isinstance(value, (int, float))):
      raise ConfigError(f"override {dotted}={value!r} has the wrong type for config.{dotted}={current!r}")
    if isinstance(current, float) and isinstance(value, int):
      value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[leaf] = value
    except TypeError:
      raise ConfigError(f"override {dotted}={value!r} has the wrong type for config.{dotted}="
                        f"{current!r}") from None
  return config


def _field_type(node: ml_collections.ConfigDict, leaf: str) -> type:
  """The type the command line parses a field as: a None default without a typed reference has none."""
  field = getattr(node, "_fields", {}).get(leaf)
  if isinstance(field, ml_collections.FieldReference):
    return field.get_type()
  return type(node[leaf])


def load_config_file(spec: str, root: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `path[:arg]`, unlocked: the one loader of config files.

  A relative path is taken from `root` (default: the repository, where `configs/` lives); the
  repository is put on `sys.path`, as config files import `configs.*` and `vlfusion`.
  """
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(root or repo, path)
  if not os.path.isfile(full):
    raise ConfigError(f"config file {path!r} does not exist")
  if repo not in sys.path:
    sys.path.insert(0, repo)
  name = "_config_file_" + hashlib.sha256(os.path.abspath(full).encode()).hexdigest()[:16]
  module_spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  config.unlock()
  return config


def sized_config(arg: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """What every config file starts from: `base_config()` with the size `arg` picks (and its data
  defaults) applied, unlocked, and that size."""
  size = parse_arg(arg)["size"]
  config = base_config()
  _apply_size(config, size)
  _apply_data_defaults(config, size)
  return config, size


def parse_arg(arg: str | None, default_size: str = "tiny", keys: tuple[str, ...] = ()) -> dict[str, str]:
  """Parses a config argument like `tiny` or `small,family=co_attention` into a dict.

  `size` (given bare or as `size=`) is always understood; `keys` names the others the config file
  reads. Any other key, and a key given twice, is a `ConfigError`, so no part of the argument can be
  silently dropped.
  """
  out = {"size": default_size}
  given: set[str] = set()
  for part in (arg or "").split(","):
    if not part.strip():
      continue
    k, v = part.split("=", 1) if "=" in part else ("size", part)
    k = k.strip()
    if k != "size" and k not in keys:
      known = ", ".join(("size", *keys))
      raise ConfigError(f"config argument {arg!r}: unknown key {k!r}; this config understands {known}")
    if k in given:  # `tiny,size=small` or `family=a,family=b`: one of the two would be dropped.
      raise ConfigError(f"config argument {arg!r} gives {k} twice; give it once")
    given.add(k)
    out[k] = v.strip()
  return out


def _check(cond: bool, message: str) -> None:
  if not cond:
    raise ConfigError(message)


def field_value(config: Any, dotted: str) -> tuple[bool, Any]:
  """(present, value) of a dotted field of a ConfigDict or dict."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False, None
    node = node[part]
  return True, node


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "True or False",
               tuple: "a tuple", dict: "a dict"}


def has_type(value: Any, kind: type) -> bool:
  """A float field takes an int, a tuple field a list (as a saved config reads back); bool is no number."""
  if kind in (int, float):
    return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
  if kind is tuple:
    return isinstance(value, (tuple, list))
  if kind is dict:
    return isinstance(value, (dict, ml_collections.ConfigDict))
  return isinstance(value, kind)


def check_fields(config: Any) -> None:
  """Each declared field's type and checks (`config_fields.FIELDS`), in declaration order; a field the
  config lacks is not checked, and None passes where the default is None."""
  for name, field in config_fields.FIELDS.items():
    present, value = field_value(config, name)
    if not present or (value is None and field.default is None):
      continue
    _check(has_type(value, field.type),
           f"config.{name}={value!r} must be {_TYPE_NAMES.get(field.type, field.type.__name__)}")
    for check in field.checks:
      problem = check(value)
      _check(problem is None, f"config.{name}={value!r} {problem}")


# Checks across fields, in the order `validate` runs them; each names the fields it reads (a section
# name stands for every field in it), and tests/test_config_fields.py holds each name to a declaration.
CROSS_FIELD_CHECKS: list[tuple[tuple[str, ...], Any]] = []


def _reads(*fields: str):
  def register(check):
    CROSS_FIELD_CHECKS.append((fields, check))
    return check
  return register


@_reads("data.max_text_len", "model.text.max_len")
def _text_fits_positions(config: Any) -> None:
  _check(config.data.max_text_len <= config.model.text.max_len,
         f"config.data.max_text_len={config.data.max_text_len} exceeds the position table "
         f"config.model.text.max_len={config.model.text.max_len}")


@_reads("model.text.hidden_size", "model.text.num_heads", "model.image.hidden_size", "model.image.num_heads")
def _heads_divide_width(config: Any) -> None:
  for name in ("text", "image"):
    stream = config.model[name]
    _check(stream.hidden_size % stream.num_heads == 0,
           f"config.model.{name}.num_heads={stream.num_heads} does not divide "
           f"config.model.{name}.hidden_size={stream.hidden_size}")


@_reads("model.image.embedding", "model.image.input")
def _embedding_fits_input(config: Any) -> None:
  image = config.model.image
  if image.embedding:
    _check(IMAGE_EMBEDDINGS[image.embedding] == image.input,
           f"config.model.image.embedding={image.embedding!r} embeds {IMAGE_EMBEDDINGS[image.embedding]}, "
           f"but config.model.image.input={image.input!r}")


@_reads("model.fusion", "model.text.hidden_size", "model.image.hidden_size", "model.cross.share_weights")
def _one_width(config: Any) -> None:
  m = config.model
  if m.fusion in ("single_stream", "merged_attention"):
    _check(m.text.hidden_size == m.image.hidden_size,
           f"config.model.fusion={m.fusion!r} needs one width: config.model.text.hidden_size="
           f"{m.text.hidden_size} differs from config.model.image.hidden_size={m.image.hidden_size}")
  if m.cross.share_weights:
    _check(m.text.hidden_size == m.image.hidden_size,
           "config.model.cross.share_weights=True needs config.model.text.hidden_size == "
           "config.model.image.hidden_size")


@_reads("model.cross.hidden_size", "model.cross.num_heads", "model.text.num_heads", "model.image.num_heads")
def _cross_heads_divide_width(config: Any) -> None:
  m = config.model
  if m.cross.hidden_size > 0:
    heads = m.cross.num_heads or min(m.text.num_heads, m.image.num_heads)
    _check(m.cross.hidden_size % heads == 0,
           f"config.model.cross.num_heads={heads} does not divide "
           f"config.model.cross.hidden_size={m.cross.hidden_size}")


@_reads("model.heads")
def _known_heads(config: Any) -> None:
  heads = tuple(n for n, t in task_registry.REGISTRY.items() if t.head is not None)
  for head in config.model.heads:
    _check(head in heads, f"config.model.heads has {head!r}, not a head; known: {heads}")


@_reads("model.fusion", "model.fusion_layers", "model.heads", "model.pooler")
def _dual_encoder(config: Any) -> None:
  m = config.model
  if m.fusion == "dual_encoder":
    _check(m.fusion_layers == 0,
           f"config.model.fusion_layers={m.fusion_layers}: the dual encoder has no fusion layers; set 0")
    needs_both = sorted(h for h in m.heads if task_registry.get(h).reads_pooled)
    _check(not needs_both or m.pooler != "text",
           f"config.model.pooler='text' sees no image in a dual encoder, but heads {needs_both} read "
           "the pooled output; use 'product' or 'concat'")


@_reads("model.heads", "model.image.input", "model.mrm.regression", "model.mrm.num_labels")
def _mrm_head(config: Any) -> None:
  m = config.model
  if "mrm" in m.heads:
    _check(m.image.input == "regions",
           f"config.model.heads has 'mrm' but config.model.image.input={m.image.input!r}; masked "
           "region modelling needs 'regions'")
    _check(m.mrm.regression or m.mrm.num_labels > 0,
           "config.model.heads has 'mrm' but config.model.mrm.regression=False and "
           "config.model.mrm.num_labels=0: nothing to predict")


@_reads("model.heads", "model.itc.temperature", "model.itc.min_temperature", "model.itc.max_temperature")
def _itc_temperatures(config: Any) -> None:
  itc = config.model.itc
  if "itc" in config.model.heads:
    _check(0 < itc.min_temperature <= itc.temperature <= itc.max_temperature,
           f"config.model.itc.temperature={itc.temperature} must lie in [config.model.itc."
           f"min_temperature={itc.min_temperature}, config.model.itc.max_temperature="
           f"{itc.max_temperature}] with a positive minimum")


@_reads("model.text.init_from", "model.image.init_from", "model.scan_layers")
def _init_from_unrolled(config: Any) -> None:
  m = config.model
  for stream in ("text", "image"):
    _check(not (m[stream].init_from and m.scan_layers),
           f"config.model.{stream}.init_from={m[stream].init_from!r} with "
           "config.model.scan_layers=True is not supported: checkpoints load into unrolled layers; "
           "set scan_layers=False")


@_reads("model.image.position_init", "model.image.input", "model.image.hidden_size")
def _sincos_positions(config: Any) -> None:
  image = config.model.image
  _check(image.position_init == "normal" or (image.input == "patches" and image.hidden_size % 4 == 0),
         f"config.model.image.position_init='sincos' needs config.model.image.input='patches' and "
         f"config.model.image.hidden_size={image.hidden_size} divisible by 4")


@_reads("model.image.input", "model.image.stem", "model.image.image_size", "model.image.patch_size",
        "model.image.hidden_size")
def _patch_grid(config: Any) -> None:
  image = config.model.image
  stem = image.stem
  if image.input != "patches":
    _check(stem == "linear",
           f"config.model.image.stem={stem!r} applies to pixels, but config.model.image.input="
           f"{image.input!r}; leave it 'linear' or use input='patches'")
    return
  _check(image.image_size % image.patch_size == 0,
         f"config.model.image.patch_size={image.patch_size} does not divide "
         f"config.model.image.image_size={image.image_size}")
  p = image.patch_size
  _check(stem != "conv" or (p >= 2 and p & (p - 1) == 0),
         f"config.model.image.stem='conv' halves the image per convolution, so "
         f"config.model.image.patch_size={p} must be a power of two (>= 2)")
  if stem == "conv":
    # The stem's channels per stage, as `embeddings.ConvStem` sets them; GroupNorm splits each into
    # groups of 8, which must divide it (flax would fail while tracing the model).
    stages = p.bit_length() - 1
    channels = [max(image.hidden_size // 2 ** (stages - 1 - i), 16) for i in range(stages)]
    bad = [c for c in channels if c % max(c // 8, 1)]
    _check(not bad, f"config.model.image.stem='conv' with config.model.image.hidden_size="
           f"{image.hidden_size}: the stem's stages of {channels} channels cannot be cut into "
           f"GroupNorm groups of 8 ({bad}); a multiple of {8 * 2 ** (stages - 1)} works")


@_reads("objectives", "model.heads")
def _objectives(config: Any) -> None:
  objectives = task_registry.objectives()
  for name in config.objectives:
    _check(name in objectives, f"config.objectives.{name} is not an objective; known: {objectives}")
    weight = config.objectives[name]
    _check(weight >= 0, f"config.objectives.{name}={weight} must be >= 0")
    if weight > 0:
      _check(name in config.model.heads,
             f"config.objectives.{name}={weight} needs the head {name!r} in config.model.heads="
             f"{config.model.heads}")
  _check(any(config.objectives[n] > 0 for n in config.objectives),
         "every weight in config.objectives is 0: nothing to train")


@_reads("eval.tasks", "evals", "model.heads")
def _eval_tasks(config: Any) -> None:
  m = config.model
  eval_tasks = task_registry.eval_tasks()
  for task in config.eval.tasks:
    _check(task in eval_tasks, f"config.eval.tasks has {task!r}, not an evaluation task; known: {eval_tasks}")
  if not config.get("evals"):  # the default evaluator: eval.py must be able to evaluate what train.py ran.
    _check(bool(evaluated_tasks(config.eval.tasks, m.heads)),
           f"config.eval.tasks={tuple(config.eval.tasks)}: none is a head of this model "
           f"(config.model.heads={tuple(m.heads)}); evaluable tasks: {eval_tasks}")


@_reads("init", "model.text.init_from", "model.image.init_from")
def _validate_init(config: ml_collections.ConfigDict) -> None:
  init = config.init
  checkpoint, hf = init.checkpoint, init.huggingface
  _check(not (checkpoint and hf), f"config.init.checkpoint={checkpoint!r} and config.init.huggingface="
         f"{hf!r} are both set; choose one")
  for name in ("exclude", "allow_fresh"):
    if init[name]:
      _check(bool(checkpoint or hf), f"config.init.{name}={init[name]!r} is set but neither "
             "config.init.checkpoint nor config.init.huggingface names a source")
  if checkpoint or hf:
    for stream in ("text", "image"):
      _check(not config.model[stream].init_from,
             f"config.model.{stream}.init_from={config.model[stream].init_from!r} and config.init "
             "both set parameters; use one")


@_reads("data.question_type_weights", "train.num_steps")
def _question_phases_in_run(config: Any) -> None:
  weights, num_steps = config.data.question_type_weights, config.train.num_steps
  if weights:
    from vlfusion.data import questions  # numpy only.

    last_start = questions.parse_type_weight_schedule(weights)[-1][0]
    _check(last_start < num_steps, f"config.data.question_type_weights={weights!r}: its "
           f"last phase starts at step {last_start}, after the run's config.train.num_steps="
           f"{num_steps}")


@_reads("data.global_batch_size", "optimizer.grad_accum_steps")
def _batch_splits_into_micro_batches(config: Any) -> None:
  b, accum = config.data.global_batch_size, config.optimizer.grad_accum_steps
  _check(b % accum == 0, f"config.data.global_batch_size={b} is not divisible by "
         f"config.optimizer.grad_accum_steps={accum}")


def resolve_mesh_shape(mesh_config: Any, num_devices: int) -> dict[str, int]:
  """Returns {data, fsdp, tensor} sizes whose product is `num_devices`, resolving one -1."""
  sizes = {ax: int(mesh_config[ax]) for ax in ("data", "fsdp", "tensor")}
  free = [ax for ax, n in sizes.items() if n == -1]
  _check(len(free) <= 1, f"only one of config.mesh.{{data,fsdp,tensor}} may be -1, got {free}")
  for ax, n in sizes.items():
    _check(n == -1 or n >= 1, f"config.mesh.{ax}={n} must be -1 or a positive integer")
  fixed = 1
  for n in sizes.values():
    if n != -1:
      fixed *= n
  if free:
    _check(
        num_devices % fixed == 0,
        f"config.mesh sizes {sizes} leave no whole number of devices for config.mesh.{free[0]}: "
        f"{num_devices} devices are not divisible by {fixed}",
    )
    sizes[free[0]] = num_devices // fixed
  _check(
      sizes["data"] * sizes["fsdp"] * sizes["tensor"] == num_devices,
      f"config.mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = "
      f"{sizes['data'] * sizes['fsdp'] * sizes['tensor']} does not match the {num_devices} "
      "available devices",
  )
  return sizes


def _check_device_batches(config: ml_collections.ConfigDict, num_devices: int) -> int:
  """The mesh fits `num_devices` and each batch splits over its data-parallel size, which it returns.
  Reads config.mesh, config.data.global_batch_size, config.optimizer.grad_accum_steps and
  config.eval.batch_size."""
  sizes = resolve_mesh_shape(config.mesh, num_devices)
  batch_shards = sizes["data"] * sizes["fsdp"]
  b, accum = config.data.global_batch_size, config.optimizer.grad_accum_steps
  _check((b // accum) % batch_shards == 0,
         f"config.data.global_batch_size={b} (per micro-batch {b // accum}) is not "
         f"divisible by the data-parallel size config.mesh.data x config.mesh.fsdp = {batch_shards}")
  e = config.eval.batch_size
  _check(e >= 1 and e % batch_shards == 0,
         f"config.eval.batch_size={e} is not divisible by the data-parallel size "
         f"config.mesh.data x config.mesh.fsdp = {batch_shards}")
  return batch_shards


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises `ConfigError` naming the field when the config cannot work; builds and compiles nothing.

  First each declared field alone (`check_fields`: its type and checks), then the checks across fields
  (`CROSS_FIELD_CHECKS`), the mesh and batch sizes over `num_devices` (when given), the named
  evaluators, and last the fields set where nothing reads them (`_refuse_inert_fields`).
  """
  check_fields(config)
  for _, check in CROSS_FIELD_CHECKS:
    check(config)
  batch_shards = 1 if num_devices is None else _check_device_batches(config, num_devices)
  _validate_evals(config, batch_shards)
  _refuse_inert_fields(config)  # last: a value that cannot work is the first thing to hear about.


def _refuse_inert_fields(config: ml_collections.ConfigDict) -> None:
  """Refuses a field set to a value that the configured model or run would never read.

  A knob that silently does nothing is worse than an error: an ablation over it compares identical
  runs. Derived from the declarations: where one of a field's `read_when` conditions fails, its value
  must be one of its neutral values (its default, or what means "not used"). Head settings
  (model.mrm/itc/vqa) declare no condition, as a fine-tuning config carries the pretraining family's
  model over to other heads.
  """
  for name, field in config_fields.FIELDS.items():
    unread = next((when for when in field.read_when if not when.test(config)), None)
    if unread is None:
      continue
    present, value = field_value(config, name)
    neutral = field.neutral_values(config)
    _check(not present or value in neutral,
           f"config.{name}={value!r} does nothing: {unread.reason(config, name.rsplit('.', 1)[-1])}; "
           f"leave it {neutral[0]!r}")


# Model fields a run started from another's parameters may set differently: head settings, and fields
# that change neither parameter shapes nor what they compute (an init only draws parameters left fresh);
# the model fields declared `structural=False`.
NON_STRUCTURAL = config_fields.non_structural()


def model_differences(source: Any, model: Any) -> list[str]:
  """`model.<field>: <source's> vs <model's>` for each structural model field the two set differently.

  Both are `config.model` sections (ConfigDicts, or dicts as read back from a workdir's config.json);
  only fields declared structural (`config_fields.FIELDS`) that both sides have are compared, so
  `NON_STRUCTURAL` fields, fields a config saved before they existed lacks, and fields no longer declared
  are not. The one check of whether a checkpoint of `source` describes the model `model` builds:
  training's `config.init` and the sweep's stages share it.
  """
  a, b = _flat_fields(source), _flat_fields(model)
  compared = set(config_fields.structural())
  return [f"model.{k}: {a[k]!r} vs {b[k]!r}" for k in sorted(set(a) & set(b) & compared) if a[k] != b[k]]


def _flat_fields(model: Any) -> dict[str, Any]:
  """{dotted field: value} of a model section, tuples as lists (as a saved config reads them back) and
  `image.embedding` resolved ("" is the input's default, as a converted HF model names it)."""
  tree = json.loads(json.dumps(model.to_dict() if hasattr(model, "to_dict") else model,
                               default=_json_default))
  flat: dict[str, Any] = {}

  def walk(node: dict[str, Any], prefix: str) -> None:
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      else:
        flat[f"{prefix}{k}"] = v

  walk(tree, "")
  if not flat.get("image.embedding") and flat.get("image.input") in DEFAULT_IMAGE_EMBEDDING:
    flat["image.embedding"] = DEFAULT_IMAGE_EMBEDDING[flat["image.input"]]  # "" and its default agree.
  return flat


EVALUATOR_FIELDS = ("data", "tasks", "batch_size")


def _validate_evals(config: ml_collections.ConfigDict, batch_shards: int) -> None:
  """Each named evaluator of `config.evals` has known fields, evaluable tasks and a usable batch size."""
  for name, entry in (config.get("evals") or {}).items():
    where = f"config.evals.{name}"
    _check(isinstance(entry, (dict, ml_collections.ConfigDict)),
           f"{where} must be a dict with fields {EVALUATOR_FIELDS}")
    for key in entry:
      _check(key in EVALUATOR_FIELDS, f"{where}.{key} is not an evaluator field; known: {EVALUATOR_FIELDS}")
    for key in entry.get("data", None) or {}:
      _check(key == "split" or key in config.data,
             f"{where}.data.{key} is neither 'split' nor a field of config.data")
    tasks = tuple(entry.get("tasks", config.eval.tasks))
    for task in tasks:
      _check(task in task_registry.eval_tasks(),
             f"{where}.tasks has {task!r}, not an evaluation task; known: {task_registry.eval_tasks()}")
    heads = evaluated_tasks(tasks, config.model.heads)
    _check(bool(heads), f"{where}.tasks={tasks}: none is a head of this model "
           f"(config.model.heads={tuple(config.model.heads)})")
    own = set(task_registry.own_text_tasks())
    _check(len(set(heads) & own) == 0 or len(set(heads)) == 1,
           f"{where}.tasks={tasks}: {' and '.join(sorted(own))} each put their own text in a batch; "
           f"evaluate them (and {sorted(set(heads) - own)}) in separate evaluators")
    size = entry.get("batch_size", config.eval.batch_size)
    _check(isinstance(size, int) and size >= 1 and size % batch_shards == 0,
           f"{where}.batch_size={size} must be a positive multiple of the data-parallel size "
           f"config.mesh.data x config.mesh.fsdp = {batch_shards}")


def data_seed(config: Any) -> int:
  """The seed of the training data (order, ITM negatives, masks, augmentation): `data.seed` when set,
  else `train.seed`, so that one seed varies a run. `config` is a ConfigDict or a saved config.json's
  dict as `complete` fills it; one saved before data.seed could be unset holds a number, which is kept."""
  seed = config["data"]["seed"]
  return int(config["train"]["seed"] if seed is None else seed)


def seeds_resolved(config: dict[str, Any]) -> dict[str, Any]:
  """A config's dict with `data.seed` as the run reads it (`data_seed`), for comparing a saved config
  with a new one: one saved when data.seed was always a number and today's unset one compare by the data
  they read."""
  return {**config, "data": {**config["data"], "seed": data_seed(config)}}


def eval_data_seed(config: Any) -> int:
  """The seed of evaluation examples' random choices: `data.seed` when set, else 0 (not `train.seed`),
  so that every seed of a sweep is scored on the same examples."""
  seed = config["data"]["seed"]
  return 0 if seed is None else int(seed)


def complete(saved: ml_collections.ConfigDict | dict[str, Any]) -> ml_collections.ConfigDict:
  """A saved config (a workdir's config.json as read, or a ConfigDict) on today's defaults, unlocked.

  Every saved value is kept, fields the saved config lacks (added since it was written) take their
  `base_config()` value, and what the saved config has beyond the defaults (named evaluators, a mixture,
  a field since removed) stays. The one place a config read back meets today's fields: its readers use
  plain attribute access, never a `.get(field, default)` that would write a default a second time.
  """
  saved = saved.to_dict() if hasattr(saved, "to_dict") else saved
  defaults = json.loads(to_json(base_config()))
  return ml_collections.ConfigDict(_filled(json.loads(json.dumps(saved, default=_json_default)), defaults))


def _filled(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
  """`saved` with each key of `defaults` it lacks added, section by section."""
  out = dict(saved)
  for key, default in defaults.items():
    if key not in out:
      out[key] = default
    elif isinstance(default, dict) and isinstance(out[key], dict):
      out[key] = _filled(out[key], default)
  return out


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as canonical JSON (sorted keys), as written to workdir/config.json."""
  return json.dumps(config.to_dict(), sort_keys=True, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
  if isinstance(value, tuple):
    return list(value)
  return str(value)


def digest(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """SHA-256 of the canonical JSON of the config (a ConfigDict, or a saved config.json's dict)."""
  text = to_json(config) if hasattr(config, "to_dict") else json.dumps(
      config, sort_keys=True, indent=2, default=_json_default)
  return hashlib.sha256(text.encode()).hexdigest()


# Fields that cannot change an evaluation's numbers: where the data lives and how fast it is read, and
# what only training batches use (their size, mixture and augmentation). Every other field of `data`,
# all of `model`, `objectives` (which rows and keys an eval batch holds), `eval` but its cadence, and
# `evals` key a result; a field added later keys it too until it is named here.
EVAL_NEUTRAL_DATA = ("data_dir", "num_workers", "prefetch_batches", "global_batch_size", "mixture",
                     "randaugment_num_ops", "randaugment_magnitude", "question_type_weights")
EVAL_NEUTRAL_EVAL = ("every_steps",)


def evaluator_fields(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The part of a config that decides an evaluation's numbers (model, evaluation data and seed, tasks,
  batch sizes, named evaluators), as canonical JSON values of the completed config: what
  `evaluator_digest` hashes."""
  # Completed first (`complete`): a config file that leaves a field to its default, or a config.json
  # written before a field existed, keys its results as the config eval.py reads back.
  c = json.loads(to_json(complete(config)))
  data = {k: v for k, v in (c.get("data") or {}).items() if k not in EVAL_NEUTRAL_DATA}
  # Evaluation draws with data.seed, or 0 when it follows train.seed: a sweep's seeds share one key.
  data["seed"] = 0 if data.get("seed") is None else int(data["seed"])
  return {"model": c.get("model") or {}, "data": data, "objectives": c.get("objectives") or {},
          "eval": {k: v for k, v in (c.get("eval") or {}).items() if k not in EVAL_NEUTRAL_EVAL},
          "evals": c.get("evals") or {}}


def evaluator_digest(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """SHA-256 of `evaluator_fields`: the key of an evaluation result, so that results of different
  evaluator configs never stand in for each other, while a run's seed, schedule or mesh leave it alone."""
  return hashlib.sha256(json.dumps(evaluator_fields(config), sort_keys=True).encode()).hexdigest()
