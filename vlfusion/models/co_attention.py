"""Two-stream co-attention fusion (LXMERT, METER, ViLBERT): streams that attend to each other."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vlfusion.models.layers import Residual
from vlfusion.models.stream import StreamSettings


class CoAttentionLayer(nn.Module):
  """One fusion layer: each stream attends to the other, then to itself, then its MLP.

  `order` picks the published arrangement; every cross-attention reads the layer's inputs:
    cross_self_ffn (LXMERT): cross -> self -> MLP per stream; `share_weights` uses one cross-attention
      module for both directions, as LXMERT does.
    self_cross_ffn (METER): self -> cross -> MLP per stream.
    coattn_ffn_self (ViLBERT): co-TRM (cross -> MLP) then a self-attention layer (self -> MLP).
  With `direction="text_to_image"` only text attends to the image; the image stream runs self-layers.

  Attributes:
    text, image: per-stream settings (widths may differ).
    order: see above.
    direction: "both" or "text_to_image".
    share_weights: one cross-attention module for both directions (needs equal widths).
  """

  text: StreamSettings
  image: StreamSettings
  order: str = "cross_self_ffn"
  direction: str = "both"
  share_weights: bool = False

  def cross(self, s: StreamSettings, name: str, qkv_features: int) -> Residual:
    return Residual(
        kind="attention", num_heads=s.num_heads, qkv_features=qkv_features, dropout=s.dropout,
        attention_dropout=s.attention_dropout, pre_norm=s.pre_norm,
        layer_norm_eps=s.layer_norm_eps, dtype=s.dtype, param_dtype=s.param_dtype, name=name,
    )

  @nn.compact
  def __call__(
      self, t: jax.Array, tm: jax.Array, v: jax.Array, vm: jax.Array, *, deterministic: bool
  ) -> tuple[jax.Array, jax.Array]:
    both = self.direction == "both"
    d = deterministic
    if self.order == "cross_self_ffn":
      text_cross = self.cross(self.text, "text_cross", self.text.hidden_size)
      image_cross = text_cross if self.share_weights else self.cross(
          self.image, "image_cross", self.image.hidden_size)
      t1 = text_cross(t, None, v, vm, deterministic=d)
      v1 = image_cross(v, None, t, tm, deterministic=d) if both else v
      return (self.text.layer("text_layer")(t1, tm, None, None, d),
              self.image.layer("image_layer")(v1, vm, None, None, d))
    if self.order == "self_cross_ffn":
      t1 = self.text.layer("text_layer", cross_attention=True)(t, tm, v, vm, d)
      v1 = self.image.layer("image_layer", cross_attention=both)(v, vm, t, tm, d)
      return t1, v1
    if self.order == "coattn_ffn_self":
      t1 = self.text.layer("text_coattention", self_attention=False, cross_attention=True)(
          t, tm, v, vm, d)
      v1 = v
      if both:
        v1 = self.image.layer("image_coattention", self_attention=False, cross_attention=True)(
            v, vm, t, tm, d)
      return (self.text.layer("text_layer")(t1, tm, None, None, d),
              self.image.layer("image_layer")(v1, vm, None, None, d))
    raise ValueError(f"unknown co-attention order {self.order!r}")


class CoAttentionEncoder(nn.Module):
  """Per-modality self-attention layers, then co-attention fusion layers.

  Attributes:
    text, image: per-stream settings.
    num_text_layers, num_image_layers: unimodal layers before fusion (LXMERT: 9 and 5).
    num_fusion_layers: co-attention layers (LXMERT: 5).
    order, direction, share_weights: see `CoAttentionLayer`.
  """

  text: StreamSettings
  image: StreamSettings
  num_text_layers: int
  num_image_layers: int
  num_fusion_layers: int
  order: str = "cross_self_ffn"
  direction: str = "both"
  share_weights: bool = False

  @nn.compact
  def __call__(
      self, t: jax.Array, tm: jax.Array, v: jax.Array, vm: jax.Array, *, deterministic: bool
  ) -> tuple[jax.Array, jax.Array]:
    for i in range(self.num_text_layers):
      t = self.text.layer(f"text_layer_{i}")(t, tm, None, None, deterministic)
    for i in range(self.num_image_layers):
      v = self.image.layer(f"image_layer_{i}")(v, vm, None, None, deterministic)
    for i in range(self.num_fusion_layers):
      t, v = CoAttentionLayer(
          self.text, self.image, self.order, self.direction, self.share_weights,
          name=f"fusion_layer_{i}",
      )(t, tm, v, vm, deterministic=deterministic)
    return t, v


def build(model_config: Any) -> CoAttentionEncoder:
  return CoAttentionEncoder(
      text=StreamSettings.from_config(model_config, "text"),
      image=StreamSettings.from_config(model_config, "image"),
      num_text_layers=model_config.text.num_layers,
      num_image_layers=model_config.image.num_layers,
      num_fusion_layers=model_config.fusion_layers,
      order=model_config.cross.order,
      direction=model_config.cross.direction,
      share_weights=model_config.cross.share_weights,
      name="encoder",
  )
