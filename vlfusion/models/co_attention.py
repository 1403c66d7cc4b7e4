"""Two-stream co-attention fusion (LXMERT, METER, ViLBERT): streams that attend to each other."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vlfusion.models.layers import Residual
from vlfusion.models.stream import EncoderOutput, StreamSettings, stack, unimodal_stack


class CoAttentionLayer(nn.Module):
  """One fusion layer: each stream attends to the other, then to itself, then its MLP.

  `order` picks the published arrangement; every cross-attention reads the layer's inputs:
    cross_self_ffn (LXMERT): cross -> self -> MLP per stream; `share_weights` uses one cross-attention
      module for both directions, as LXMERT does.
    self_cross_ffn (METER): self -> cross -> MLP per stream.
    coattn_ffn_self (ViLBERT): co-TRM (cross -> MLP) then a self-attention layer (self -> MLP).
  With `direction="text_to_image"` only text attends to the image; the image stream runs self-layers.
  The cross-attention's inner width and heads are `cross.hidden_size`/`cross.num_heads` when set
  (ViLBERT: 1024 wide, 8 heads between a 768 text and a 1024 image stream), else the query stream's.

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

  def cross(self, s: StreamSettings, name: str) -> Residual:
    return Residual(
        kind="attention", num_heads=s.cross_num_heads or s.num_heads,
        qkv_features=s.cross_features or s.hidden_size, dropout=s.dropout,
        attention_dropout=s.attention_dropout, pre_norm=s.pre_norm,
        layer_norm_eps=s.layer_norm_eps, dtype=s.dtype, param_dtype=s.param_dtype, name=name,
    )

  @nn.compact
  def __call__(
      self, tv: tuple[jax.Array, jax.Array], tm: jax.Array, vm: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array]:
    """tv = (text [B,Lt,Dt], image [B,Li,Di]), masks bool -> the new (text, image).

    The pair is one argument so that layers stack under `nn.scan` with it as the carry.
    """
    t, v = tv
    both = self.direction == "both"
    d = deterministic
    if self.order == "cross_self_ffn":
      text_cross = self.cross(self.text, "text_cross")
      image_cross = text_cross if self.share_weights else self.cross(self.image, "image_cross")
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
    text, image: per-stream settings of the fusion layers (widths may differ).
    text_encoder, image_encoder: settings of the unimodal layers (default: `text`, `image`); they differ
      where a stream keeps its own norm (METER's pre-LN CLIP image encoder).
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
  text_encoder: StreamSettings | None = None
  image_encoder: StreamSettings | None = None

  @nn.compact
  def __call__(
      self, t: jax.Array, tm: jax.Array, v: jax.Array, vm: jax.Array, *, deterministic: bool
  ) -> EncoderOutput:
    t = unimodal_stack(self.text_encoder or self.text, "text_layer", self.num_text_layers, t, tm,
                       deterministic)
    v = unimodal_stack(self.image_encoder or self.image, "image_layer", self.num_image_layers, v, vm,
                       deterministic)
    t_uni, v_uni = t, v
    layer_kwargs = dict(text=self.text, image=self.image, order=self.order, direction=self.direction,
                        share_weights=self.share_weights)
    t, v = stack(CoAttentionLayer, layer_kwargs, self.num_fusion_layers, "fusion_layer",
                 self.text.scan, (t, v), tm, vm, deterministic)
    t = self.text.final_norm(t, "text_final_norm")
    v = self.image.final_norm(v, "image_final_norm")
    return EncoderOutput(t, v, t_uni, v_uni)


def build(model_config: Any) -> CoAttentionEncoder:
  return CoAttentionEncoder(
      text=StreamSettings.from_config(model_config, "text", own_norm=False),
      image=StreamSettings.from_config(model_config, "image", own_norm=False),
      text_encoder=StreamSettings.from_config(model_config, "text"),
      image_encoder=StreamSettings.from_config(model_config, "image"),
      num_text_layers=model_config.text.num_layers,
      num_image_layers=model_config.image.num_layers,
      num_fusion_layers=model_config.fusion_layers,
      order=model_config.cross.order,
      direction=model_config.cross.direction,
      share_weights=model_config.cross.share_weights,
      name="encoder",
  )
