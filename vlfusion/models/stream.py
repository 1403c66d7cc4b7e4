"""Per-stream settings drawn from the model config, shared by every fusion encoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from vlfusion.models.layers import TransformerLayer, layer_class


@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """What a transformer layer of one stream needs: width, heads, MLP width and shared knobs."""

  hidden_size: int
  num_heads: int
  mlp_dim: int
  dropout: float
  attention_dropout: float
  pre_norm: bool
  layer_norm_eps: float
  remat_policy: str
  dtype: Any
  param_dtype: Any

  @classmethod
  def from_config(cls, model_config: Any, stream: str) -> StreamSettings:
    """Settings of `model_config.text` or `model_config.image` plus the model-wide knobs."""
    s = model_config[stream]
    return cls(
        hidden_size=s.hidden_size,
        num_heads=s.num_heads,
        mlp_dim=s.mlp_dim,
        dropout=model_config.dropout,
        attention_dropout=model_config.attention_dropout,
        pre_norm=model_config.pre_norm,
        layer_norm_eps=model_config.layer_norm_eps,
        remat_policy=model_config.remat_policy,
        dtype=jnp.dtype(model_config.dtype),
        param_dtype=jnp.dtype(model_config.param_dtype),
    )

  def layer(self, name: str, **overrides: Any) -> TransformerLayer:
    """A transformer layer of this stream (rematerialised as configured)."""
    kwargs = dict(
        num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
        attention_dropout=self.attention_dropout, pre_norm=self.pre_norm,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
    )
    kwargs.update(overrides)
    return layer_class(self.remat_policy)(name=name, **kwargs)
