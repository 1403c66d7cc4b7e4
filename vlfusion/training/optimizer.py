"""AdamW with warmup and decay, global-norm clipping, a weight-decay mask by parameter name and optional
per-module learning-rate multipliers, from `config.optimizer`."""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import optax

from vlfusion.errors import ConfigError

# Leaf names that are weight matrices: decayed.
DECAYED = ("kernel",)
# Leaf names that are lookup tables or learned tokens: decayed only with `optimizer.decay_embeddings`.
EMBEDDINGS = ("embedding", "position_embeddings", "cls")
# Leaf names never decayed: biases and LayerNorm scales/biases.
NOT_DECAYED = ("bias", "scale")


def schedule_length(opt_config: Any, num_steps: int) -> int:
  """The step at which the schedule reaches its end: `optimizer.schedule_steps`, or `num_steps` if 0."""
  steps = int(opt_config.schedule_steps)
  if steps < 0:
    raise ConfigError(f"config.optimizer.schedule_steps={steps} must be >= 0 (0: config.train.num_steps)")
  return steps or num_steps


def learning_rate_schedule(opt_config: Any, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine or linear decay to 0 at `schedule_length` (or
  constant); past that step the rate stays at its final value."""
  num_steps = schedule_length(opt_config, num_steps)
  lr, warmup = opt_config.learning_rate, opt_config.warmup_steps
  decay_steps = max(num_steps - warmup, 1)
  if opt_config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps)
  elif opt_config.schedule == "linear":
    decay = optax.linear_schedule(lr, 0.0, decay_steps)
  elif opt_config.schedule == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ConfigError(f"config.optimizer.schedule={opt_config.schedule!r} is not a schedule")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def param_path(path: tuple[Any, ...]) -> str:
  """'encoder/text_layers_0/mlp/mlp/intermediate/kernel' for a tree path of a params dict."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def is_decayed(path: str, ndim: int, decay_embeddings: bool) -> bool:
  """Whether weight decay applies to the parameter at `path`, decided by its leaf name.

  Kernels are decayed; biases and LayerNorm scales are not; embedding tables, position tables and
  learned tokens follow `decay_embeddings`. A name not listed falls back to "matrices are decayed".
  """
  name = path.rsplit("/", 1)[-1]
  if name in DECAYED:
    return True
  if name in NOT_DECAYED:
    return False
  if name in EMBEDDINGS:
    return decay_embeddings
  return ndim > 1


def decay_mask(params: Any, decay_embeddings: bool = False) -> Any:
  """A tree of bools over `params`: True where weight decay applies (see `is_decayed`)."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: is_decayed(param_path(p), len(x.shape), decay_embeddings), params)


def parse_lr_multipliers(value: Any) -> tuple[tuple[str, float], ...]:
  """`config.optimizer.lr_multipliers` as ((regex, factor), ...).

  Accepts the string form `"text:0.1,image:0.5"` (what the command line sets) or a sequence of
  (regex, factor) pairs. Raises ConfigError naming the field on a malformed entry.
  """
  field = "config.optimizer.lr_multipliers"
  if value is None or value == "" or value == ():
    return ()
  if isinstance(value, str):
    pairs = []
    for part in value.split(","):
      part = part.strip()
      if not part:
        continue
      pattern, sep, factor = part.rpartition(":")
      if not sep or not pattern:
        raise ConfigError(f"{field}={value!r}: entry {part!r} is not 'regex:factor'")
      pairs.append((pattern.strip(), factor.strip()))
  else:
    pairs = list(value)
  out = []
  for entry in pairs:
    if len(entry) != 2:
      raise ConfigError(f"{field}={value!r}: entry {entry!r} is not a (regex, factor) pair")
    pattern, factor = entry
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"{field}: {pattern!r} is not a regular expression ({e})") from e
    try:
      factor = float(factor)
    except ValueError as e:
      raise ConfigError(f"{field}: factor {factor!r} of {pattern!r} is not a number") from e
    if not (math.isfinite(factor) and factor >= 0):
      raise ConfigError(f"{field}: factor {factor} of {pattern!r} must be finite and >= 0")
    out.append((str(pattern), factor))
  return tuple(out)


def lr_multiplier(path: str, multipliers: tuple[tuple[str, float], ...]) -> float:
  """The factor of the first pattern `re.search`-matching `path`, else 1."""
  for pattern, factor in multipliers:
    if re.search(pattern, path):
      return factor
  return 1.0


def check_lr_multipliers(opt_config: Any, params: Any) -> None:
  """Raises ConfigError for a multiplier pattern that matches no parameter (most likely a typo)."""
  multipliers = parse_lr_multipliers(opt_config.lr_multipliers)
  paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern, _ in multipliers:
    if not any(re.search(pattern, p) for p in paths):
      raise ConfigError(
          f"config.optimizer.lr_multipliers: {pattern!r} matches no parameter; parameter paths look "
          f"like {paths[:3]}"
      )


class _Stateless(NamedTuple):
  pass


def scale_by_path(multipliers: tuple[tuple[str, float], ...]) -> optax.GradientTransformation:
  """Multiplies each update by `lr_multiplier(its path)`: a per-module learning rate (decay included)."""

  def init_fn(params):
    del params
    return _Stateless()

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree_util.tree_map_with_path(
        lambda p, u: u * lr_multiplier(param_path(p), multipliers) if u is not None else u, updates)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(opt_config: Any, num_steps: int) -> tuple[optax.GradientTransformation,
                                                             optax.Schedule]:
  """Returns (optimizer, schedule) for `config.optimizer` over a run of `num_steps` (the schedule's
  length unless `optimizer.schedule_steps` sets it).

  clip by global norm -> AdamW (decay masked by name) -> per-module learning-rate multipliers.
  """
  schedule = learning_rate_schedule(opt_config, num_steps)
  decay_embeddings = bool(opt_config.decay_embeddings)
  parts = []
  if opt_config.grad_clip_norm and opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(
      optax.adamw(
          schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
          weight_decay=opt_config.weight_decay,
          mask=lambda params: decay_mask(params, decay_embeddings),
      )
  )
  multipliers = parse_lr_multipliers(opt_config.lr_multipliers)
  if multipliers:
    parts.append(scale_by_path(multipliers))
  return optax.chain(*parts), schedule


def explain_schedule_change(opt_config: Any, saved_num_steps: int, num_steps: int, step: int) -> str | None:
  """What a resumed run's new `train.num_steps` does to the learning rate at `step`; None if nothing.

  With `optimizer.schedule_steps=0` the schedule follows `num_steps`, so it is re-stretched: the rate at
  the resumed step jumps. The message gives both rates and the flag that keeps the old schedule.
  """
  if saved_num_steps == num_steps:
    return None
  if int(opt_config.schedule_steps):
    length = schedule_length(opt_config, num_steps)
    return (f"config.train.num_steps changed from {saved_num_steps} to {num_steps}; the learning-rate "
            f"schedule keeps config.optimizer.schedule_steps={length} (rate at step {step}: "
            f"{float(learning_rate_schedule(opt_config, num_steps)(step)):.3g}).")
  old = float(learning_rate_schedule(opt_config, saved_num_steps)(step))
  new = float(learning_rate_schedule(opt_config, num_steps)(step))
  return (f"config.train.num_steps changed from {saved_num_steps} to {num_steps}: the learning-rate "
          f"schedule follows it (config.optimizer.schedule_steps=0) and is re-stretched to "
          f"{num_steps} steps, so at step {step} the rate goes from {old:.3g} to {new:.3g}. To continue "
          f"the old schedule instead, pass --config.optimizer.schedule_steps={saved_num_steps} (the "
          f"steps past it keep its final rate).")
