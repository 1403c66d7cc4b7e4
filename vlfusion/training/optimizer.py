"""AdamW with warmup and decay, global-norm clipping and a weight-decay mask, from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import jax
import optax


def learning_rate_schedule(opt_config: Any, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine or linear decay to 0 at `num_steps` (or constant)."""
  lr, warmup = opt_config.learning_rate, opt_config.warmup_steps
  decay_steps = max(num_steps - warmup, 1)
  if opt_config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps)
  elif opt_config.schedule == "linear":
    decay = optax.linear_schedule(lr, 0.0, decay_steps)
  elif opt_config.schedule == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ValueError(f"config.optimizer.schedule={opt_config.schedule!r} is not a schedule")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
  """True for weight matrices and embeddings; False for biases and LayerNorm scales (1-D leaves)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(opt_config: Any, num_steps: int) -> tuple[optax.GradientTransformation,
                                                             optax.Schedule]:
  """Returns (optimizer, schedule) for `config.optimizer` over a run of `num_steps`."""
  schedule = learning_rate_schedule(opt_config, num_steps)
  parts = []
  if opt_config.grad_clip_norm and opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(
      optax.adamw(
          schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
          weight_decay=opt_config.weight_decay, mask=decay_mask,
      )
  )
  return optax.chain(*parts), schedule
