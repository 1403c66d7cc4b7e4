"""Multi-head attention for self- and cross-attention, on `jax.nn.dot_product_attention`."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# The standard deviation of `default_kernel_init`: BERT's 0.02 unless the model sets
# `model.initializer_range` (VisionLanguageModel enters `initializer_range` around its call, which is
# where every parameter is created). A context variable keeps the modules free of an init attribute.
_INITIALIZER_RANGE = contextvars.ContextVar("initializer_range", default=0.02)


def default_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """normal(0, initializer_range): the initializer of every kernel and embedding table."""
  return jax.random.normal(key, shape, dtype) * jnp.asarray(_INITIALIZER_RANGE.get(), dtype)


@contextlib.contextmanager
def initializer_range(stddev: float):
  """Within the block, `default_kernel_init` draws with standard deviation `stddev`.

  BERT's 0.02 suits widths of several hundred; a narrow model (width 64) trained from scratch starts
  almost linear and insensitive to its inputs at 0.02, and leaves the answer-from-text plateau of VQA far
  later than at ~1/sqrt(width) (docs/recipes.md).
  """
  token = _INITIALIZER_RANGE.set(float(stddev))
  try:
    yield
  finally:
    _INITIALIZER_RANGE.reset(token)


def partitioned(init: Any, names: tuple[str | None, ...]) -> Any:
  """Wraps an initializer so the parameter carries logical axis names (DESIGN.md section 3)."""
  return nn.with_logical_partitioning(init, names)


def explicit_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dropout: nn.Dropout | None,
    deterministic: bool, bias: jax.Array | None = None,
) -> jax.Array:
  """softmax(QK^T/sqrt(d) + bias + mask) V with the softmax in float32; the path that can drop
  probabilities.

  q [B,Lq,H,Dh], k/v [B,Lk,H,Dh], mask bool broadcastable to [B,H,Lq,Lk], bias (optional) float
  broadcastable to [B,H,Lq,Lk].
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout is not None:
    probs = dropout(probs, deterministic=deterministic)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def relative_position_index(grid: tuple[int, int]) -> np.ndarray:
  """[N, N] (N = h*w) row of a (2h-1)(2w-1)-row table for each pair of patches in raster order.

  Entry (i, j) encodes (dy, dx) = (row_i - row_j, col_i - col_j), shifted to be non-negative: two pairs
  of patches with the same offset share a row, wherever they lie in the grid (Swin, BEiT).
  """
  h, w = grid
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)
  dy = rows[:, None] - rows[None, :] + (h - 1)
  dx = cols[:, None] - cols[None, :] + (w - 1)
  return (dy * (2 * w - 1) + dx).astype(np.int32)


def relative_position_bias(table: jax.Array, grid: tuple[int, int], prefix: int) -> jax.Array:
  """The attention bias [H, L, L] (L = prefix + h*w) a per-head (dy, dx) table [(2h-1)(2w-1), H] gives.

  The first `prefix` tokens (the image [CLS]) are not on the grid: their rows and columns get no bias.
  """
  bias = jnp.moveaxis(table[relative_position_index(grid)], -1, 0)  # [H, N, N]
  return jnp.pad(bias, ((0, 0), (prefix, 0), (prefix, 0)))


class Projection(nn.Module):
  """x @ kernel + bias over the last `in_axes` input axes, to `features`-shaped outputs.

  The kernel is created at its full rank ([*in, *features]) so that each axis carries its own logical
  name; flax's DenseGeneral initialises a flattened 2-D kernel, which loses those names.
  """

  features: tuple[int, ...]
  names: tuple[str, ...]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  in_axes: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[x.ndim - self.in_axes:]
    kernel = self.param("kernel", partitioned(default_kernel_init, self.names),
                        (*in_shape, *self.features), self.param_dtype)
    bias = self.param("bias", partitioned(nn.initializers.zeros, self.names[self.in_axes:]),
                      self.features, self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel, (((tuple(range(x.ndim - self.in_axes, x.ndim))),
                                         tuple(range(self.in_axes))), ((), ())))
    return y + bias


class MultiHeadAttention(nn.Module):
  """Multi-head attention of queries `x` over keys/values `context` with a key padding mask.

  One module serves self-attention (context is x) and cross-attention (context is the other stream);
  the streams may differ in width. With dropout off, or at eval, it calls
  `jax.nn.dot_product_attention` (cuDNN flash attention on GPU where it applies); with
  `attention_dropout > 0` in training it takes an explicit softmax path, since that API has no
  probability dropout. Both paths agree when dropout is off (tested).

  Attributes:
    num_heads: number of heads H.
    qkv_features: inner width H*Dh; defaults to the query width.
    attention_dropout: dropout rate on the attention probabilities.
    relative_grid: (h, w) of a patch grid for a learned 2-D relative position bias (self-attention
      over patch tokens, `model.image.relative_position='bias_2d'`): a per-head table indexed by the
      (dy, dx) between two patches, added to the attention logits (Swin, BEiT); None: no bias and no
      parameter. The sequence must be `grid_prefix` tokens followed by the h*w patches in raster order.
    grid_prefix: tokens before the grid (the image [CLS]), which the bias leaves alone.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int
  qkv_features: int | None = None
  attention_dropout: float = 0.0
  relative_grid: tuple[int, int] | None = None
  grid_prefix: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self, x: jax.Array, context: jax.Array, context_mask: jax.Array, *, deterministic: bool
  ) -> jax.Array:
    """x [B,Lq,Dq], context [B,Lk,Dk], context_mask bool [B,Lk] -> [B,Lq,Dq]."""
    features = self.qkv_features or x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f"attention width {features} is not divisible by num_heads={self.num_heads}")
    head_dim = features // self.num_heads
    def projection(name: str) -> Projection:
      return Projection((self.num_heads, head_dim), ("embed", "heads", "kv"), self.dtype,
                        self.param_dtype, name=name)

    q = projection(name="query")(x)
    k = projection(name="key")(context)
    v = projection(name="value")(context)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
    v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))

    mask = context_mask[:, None, None, :].astype(bool)  # [B,1,1,Lk]
    bias = None
    if self.relative_grid is not None:
      h, w = self.relative_grid
      length = self.grid_prefix + h * w
      if x.shape[1] != length or context.shape[1] != length:
        raise ValueError(f"a relative position bias over a {h}x{w} grid needs {length} tokens "
                         f"({self.grid_prefix} before the grid), got {x.shape[1]} and {context.shape[1]}")
      table = self.param("relative_position_bias", partitioned(nn.initializers.zeros, (None, "heads")),
                         ((2 * h - 1) * (2 * w - 1), self.num_heads), self.param_dtype)
      bias = relative_position_bias(table, (h, w), self.grid_prefix)[None].astype(self.dtype)
    if self.attention_dropout > 0.0 and not deterministic:
      out = explicit_attention(
          q, k, v, mask, nn.Dropout(self.attention_dropout, broadcast_dims=()), deterministic, bias
      )
    else:
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
    return Projection((x.shape[-1],), ("heads", "kv", "embed"), self.dtype, self.param_dtype,
                      in_axes=2, name="out")(out)


def compute_dtype(name: str, backend: str | None = None) -> str:
  """The compute dtype `config.model.dtype` names: "auto" is bfloat16 on TPU and GPU (their matrix
  units run it at full rate) and float32 on CPU (where bfloat16 is emulated and slower); any other
  name is itself. `backend` defaults to JAX's default backend."""
  if name != "auto":
    return name
  backend = backend or jax.default_backend()
  return "float32" if backend == "cpu" else "bfloat16"
