"""Pooler and pretraining heads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import partitioned
from vlfusion.models.layers import dense, gelu, layer_norm

Dtype = Any


class Pooler(nn.Module):
  """tanh(Dense(D)) on the first token (BERT, LXMERT)."""

  hidden_size: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    """hidden [B,L,D] -> pooled [B,hidden_size]."""
    x = dense(self.hidden_size, ("embed", "mlp"), self.dtype, self.param_dtype, name="dense")(
        hidden[:, 0])
    return jnp.tanh(x)


class MlmHead(nn.Module):
  """Masked language modelling: Dense -> GELU -> LayerNorm -> decoder tied to the word table + bias.

  Attributes:
    vocab_size: output classes.
    decode: the tied decoder, hidden [..., D] -> logits [..., vocab] (the word table's `attend`).
  """

  vocab_size: int
  decode: Callable[[jax.Array], jax.Array]
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    """hidden [B,Lt,D] -> logits float32 [B,Lt,vocab]."""
    d = hidden.shape[-1]
    x = dense(d, ("embed", "mlp"), self.dtype, self.param_dtype, name="transform")(hidden)
    x = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name="norm")(gelu(x))
    bias = self.param("bias", partitioned(nn.initializers.zeros, ("vocab",)), (self.vocab_size,),
                      self.param_dtype)
    logits = self.decode(x) + bias
    return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class ItmHead(nn.Module):
  """Image-text matching: Dense(2) on the pooled output (label 1 = the caption matches)."""

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    """pooled [B,P] -> logits float32 [B,2]."""
    return dense(2, ("mlp", None), self.dtype, self.param_dtype, name="classifier")(
        pooled).astype(jnp.float32)
