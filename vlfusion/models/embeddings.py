"""Input embeddings: BERT-style text, detector regions (features + boxes) and ViLT-style patches."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import default_kernel_init, partitioned
from vlfusion.models.layers import dense, layer_norm

Dtype = Any


class TextEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout (BERT).

  `attend` projects hidden states onto the word embeddings, for an MLM decoder tied to them.

  Attributes:
    vocab_size: size of the word table.
    hidden_size: width D.
    max_len: rows of the position table.
    type_vocab_size: rows of the token-type table.
  """

  vocab_size: int
  hidden_size: int
  max_len: int
  type_vocab_size: int = 2
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    def table(num: int, names: tuple[str, str]) -> nn.Embed:
      return nn.Embed(
          num, self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
          embedding_init=partitioned(default_kernel_init, names),
      )

    self.word_embeddings = table(self.vocab_size, ("vocab", "embed"))
    self.position_embeddings = table(self.max_len, (None, "embed"))
    self.token_type_embeddings = table(self.type_vocab_size, (None, "embed"))
    self.norm = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype)
    self.drop = nn.Dropout(self.dropout)

  def __call__(
      self, ids: jax.Array, token_types: jax.Array | None = None, *, deterministic: bool
  ) -> jax.Array:
    """ids int [B,Lt] -> [B,Lt,D]."""
    if ids.shape[1] > self.max_len:
      raise ValueError(f"text length {ids.shape[1]} exceeds the position table max_len={self.max_len}")
    positions = jnp.arange(ids.shape[1])[None, :]
    if token_types is None:
      token_types = jnp.zeros_like(ids)
    x = (
        self.word_embeddings(ids)
        + self.position_embeddings(positions)
        + self.token_type_embeddings(token_types)
    )
    x = self.drop(self.norm(x), deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  def attend(self, x: jax.Array) -> jax.Array:
    """x [..., D] -> logits [..., vocab] against the word table."""
    return self.word_embeddings.attend(x)


class RegionEmbeddings(nn.Module):
  """Detector regions as LXMERT embeds them: (LN(W_f feature) + LN(W_b box)) / 2, then dropout.

  Attributes:
    hidden_size: width D.
  """

  hidden_size: int
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, boxes: jax.Array, *, deterministic: bool) -> jax.Array:
    """features [B,R,F], boxes [B,R,4] (x1,y1,x2,y2 in [0,1]) -> [B,R,D]."""
    def branch(x: jax.Array, name: str) -> jax.Array:
      h = dense(self.hidden_size, (None, "embed"), self.dtype, self.param_dtype, name=f"{name}_proj")(x)
      return layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name=f"{name}_norm")(h)

    x = (branch(features, "feature") + branch(boxes, "box")) / 2
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def interpolate_positions(table: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Bilinearly resizes a [h*w, D] square position table to `grid`, as ViLT does for other sizes."""
  side = int(round(table.shape[0] ** 0.5))
  if (side, side) == tuple(grid):
    return table
  square = table.reshape(side, side, -1)
  return jax.image.resize(square, (*grid, table.shape[-1]), method="bilinear").reshape(
      grid[0] * grid[1], -1
  )


class PatchEmbeddings(nn.Module):
  """Image pixels cut into patches (a strided conv), an image [CLS] token and position embeddings.

  The position table is learned for `image_size`; other resolutions interpolate it (ViLT).

  Attributes:
    hidden_size: width D.
    patch_size: side of a square patch in pixels.
    image_size: side of the pretraining image, which sizes the position table.
  """

  hidden_size: int
  patch_size: int
  image_size: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array, *, deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """pixels [B,H,W,3] -> (tokens [B,1+N,D], mask bool [B,1+N])."""
    p = self.patch_size
    x = nn.Conv(
        self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=partitioned(default_kernel_init, (None, None, None, "embed")),
        bias_init=partitioned(nn.initializers.zeros, ("embed",)), name="patch_proj",
    )(pixels)
    b, gh, gw, d = x.shape
    x = x.reshape(b, gh * gw, d)
    cls = self.param("cls", partitioned(nn.initializers.zeros, (None, "embed")), (1, d),
                     self.param_dtype)
    n = (self.image_size // p) ** 2
    pos = self.param(
        "position_embeddings", partitioned(default_kernel_init, (None, "embed")), (n + 1, d),
        self.param_dtype,
    )
    patch_pos = interpolate_positions(pos[1:], (gh, gw))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    x = x + jnp.concatenate([pos[:1], patch_pos], axis=0)[None].astype(x.dtype)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return x, jnp.ones((b, x.shape[1]), bool)
