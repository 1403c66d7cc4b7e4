"""One-way fusion (ALBEF, BLIP's encoder): text layers attend into the image; the image is not updated."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vlfusion.models.stream import EncoderOutput, StreamSettings, unimodal_stack


class OneWayEncoder(nn.Module):
  """Image layers; text-only layers; then text layers with cross-attention into the final image states.

  ALBEF-base: a 12-layer ViT, then BERT layers 0-5 text only (`num_text_layers`=6) and layers 6-11 with
  cross-attention between self-attention and the MLP (`num_fusion_layers`=6).

  Attributes:
    text: settings of the fusion (cross-attending) text layers.
    text_encoder, image_encoder: settings of the unimodal layers.
    num_text_layers, num_image_layers, num_fusion_layers: depths of the three stages.
  """

  text: StreamSettings
  text_encoder: StreamSettings
  image_encoder: StreamSettings
  num_text_layers: int
  num_image_layers: int
  num_fusion_layers: int

  @nn.compact
  def __call__(
      self, t: jax.Array, tm: jax.Array, v: jax.Array, vm: jax.Array, *, deterministic: bool
  ) -> EncoderOutput:
    v = unimodal_stack(self.image_encoder, "image_layer", self.num_image_layers, v, vm, deterministic)
    t = unimodal_stack(self.text_encoder, "text_layer", self.num_text_layers, t, tm, deterministic)
    t_uni = t
    t = self.text.stack("fusion_layer", self.num_fusion_layers, t, tm, v, vm, deterministic,
                        cross_attention=True)
    t = self.text.final_norm(t, "text_final_norm")
    return EncoderOutput(t, v, t_uni, v)


def build(model_config: Any) -> OneWayEncoder:
  return OneWayEncoder(
      text=StreamSettings.from_config(model_config, "text", own_norm=False),
      text_encoder=StreamSettings.from_config(model_config, "text"),
      image_encoder=StreamSettings.from_config(model_config, "image"),
      num_text_layers=model_config.text.num_layers,
      num_image_layers=model_config.image.num_layers,
      num_fusion_layers=model_config.fusion_layers,
      name="encoder",
  )
