"""Transformer building blocks: residual sublayers and the one layer every stream is made of."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import MultiHeadAttention, default_kernel_init, partitioned

Dtype = Any


def layer_norm(eps: float, dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm whose scale and bias carry the `embed` logical axis."""
  return nn.LayerNorm(
      epsilon=eps,
      dtype=dtype,
      param_dtype=param_dtype,
      scale_init=partitioned(nn.initializers.ones, ("embed",)),
      bias_init=partitioned(nn.initializers.zeros, ("embed",)),
      name=name,
  )


def dense(
    features: int, names: tuple[str, str], dtype: Dtype, param_dtype: Dtype, name: str | None = None
) -> nn.Dense:
  """A Dense layer whose kernel carries the logical axis `names` (and its bias the second one)."""
  return nn.Dense(
      features,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=partitioned(default_kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros, (names[1],)),
      name=name,
  )


gelu = functools.partial(jax.nn.gelu, approximate=False)  # BERT's exact erf form.


class Mlp(nn.Module):
  """Dense(mlp_dim) -> exact GELU -> Dense(D), the feed-forward half of a transformer layer."""

  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = dense(self.mlp_dim, ("embed", "mlp"), self.dtype, self.param_dtype, name="intermediate")(x)
    h = nn.with_logical_constraint(gelu(h), ("batch", "length", "mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), self.dtype, self.param_dtype, name="output")(h)


class Residual(nn.Module):
  """A sublayer with dropout, a residual connection and LayerNorm, in post- or pre-LN order.

  Post-LN (BERT): LN(x + drop(f(x))). Pre-LN (ViT): x + drop(f(LN(x))). `f` is attention over a
  context (when `context` is given, or self-attention when the sublayer is attention and context is
  None) or the MLP.

  Attributes:
    kind: "attention" or "mlp".
    num_heads, qkv_features, attention_dropout: attention settings (kind="attention").
    relative_grid: the patch grid of a 2-D relative position bias in self-attention (None: none; see
      `MultiHeadAttention`); cross-attention (a `context`) never takes it.
    mlp_dim: MLP width (kind="mlp").
    dropout: dropout rate on the sublayer output.
    pre_norm: pre-LN when True, post-LN when False.
    layer_norm_eps: LayerNorm epsilon.
  """

  kind: str
  num_heads: int = 1
  qkv_features: int | None = None
  attention_dropout: float = 0.0
  relative_grid: tuple[int, int] | None = None
  mlp_dim: int = 0
  dropout: float = 0.0
  pre_norm: bool = False
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: jax.Array | None = None,
      context: jax.Array | None = None,
      context_mask: jax.Array | None = None,
      *,
      deterministic: bool,
  ) -> jax.Array:
    norm = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name="norm")
    h = norm(x) if self.pre_norm else x
    if self.kind == "attention":
      attention = MultiHeadAttention(
          num_heads=self.num_heads,
          qkv_features=self.qkv_features,
          attention_dropout=self.attention_dropout,
          relative_grid=self.relative_grid if context is None else None,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="attention",
      )
      if context is None:
        h = attention(h, h, mask, deterministic=deterministic)
      else:
        h = attention(h, context, context_mask, deterministic=deterministic)
    elif self.kind == "mlp":
      h = Mlp(self.mlp_dim, self.dtype, self.param_dtype, name="mlp")(h)
    else:
      raise ValueError(f"unknown sublayer kind {self.kind!r}")
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    out = x + h if self.pre_norm else norm(x + h)
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))


class TransformerLayer(nn.Module):
  """Self-attention (optional), cross-attention into a context (optional), then the MLP.

  The one layer every stream is built from: a BERT/ViT layer (self + MLP), an ALBEF text layer
  (self + cross + MLP) or a ViLBERT co-TRM half (cross + MLP, `self_attention=False`).

  Attributes:
    num_heads: attention heads.
    mlp_dim: MLP width.
    self_attention: whether the layer has a self-attention sublayer.
    cross_attention: whether the layer attends into a context (after self-attention).
    cross_features: inner width of the cross-attention (defaults to the query width).
    cross_num_heads: heads of the cross-attention (defaults to `num_heads`).
    relative_grid: the patch grid of a 2-D relative position bias in the self-attention (None: none).
    dropout, attention_dropout, pre_norm, layer_norm_eps, dtype, param_dtype: as in `Residual`.
  """

  num_heads: int
  mlp_dim: int
  self_attention: bool = True
  cross_attention: bool = False
  cross_features: int | None = None
  cross_num_heads: int | None = None
  relative_grid: tuple[int, int] | None = None
  dropout: float = 0.0
  attention_dropout: float = 0.0
  pre_norm: bool = False
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def sublayer(self, kind: str, name: str, **kwargs: Any) -> Residual:
    return Residual(
        kind=kind,
        dropout=self.dropout,
        attention_dropout=self.attention_dropout,
        pre_norm=self.pre_norm,
        layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
        **kwargs,
    )

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: jax.Array,
      context: jax.Array | None = None,
      context_mask: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """x [B,L,D], mask bool [B,L]; context [B,Lc,Dc] and its mask for cross-attention.

    `deterministic` is positional-capable so that `nn.remat` can treat it as static.
    """
    if self.self_attention:
      x = self.sublayer("attention", "self_attention", num_heads=self.num_heads,
                        relative_grid=self.relative_grid)(
          x, mask, deterministic=deterministic
      )
    if self.cross_attention:
      if context is None:
        raise ValueError(f"{self.name}: cross_attention=True needs a context")
      x = self.sublayer(
          "attention", "cross_attention", num_heads=self.cross_num_heads or self.num_heads,
          qkv_features=self.cross_features,
      )(x, None, context, context_mask, deterministic=deterministic)
    return self.sublayer("mlp", "mlp", mlp_dim=self.mlp_dim)(x, deterministic=deterministic)


REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def layer_class(remat_policy: str) -> type[TransformerLayer]:
  """TransformerLayer, rematerialised under `remat_policy` unless it is "none"."""
  if remat_policy == "none":
    return TransformerLayer
  # `deterministic` is static. linen counts `self` as argument 0 and the lifted remat shifts indices,
  # so a negative index (-1) lands on the wrong argument: name the position (self, x, mask, context,
  # context_mask, deterministic) explicitly. Callers pass all five arguments positionally.
  return nn.remat(TransformerLayer, policy=REMAT_POLICIES[remat_policy], static_argnums=(5,))
