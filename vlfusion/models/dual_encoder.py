"""Dual encoder (CLIP, ALIGN): two unimodal stacks and no cross-modal attention, the late-fusion control."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vlfusion.models.stream import EncoderOutput, StreamSettings, unimodal_stack


class DualEncoder(nn.Module):
  """Text layers and image layers that never see each other; they meet only in the pooler and heads.

  `image_hidden` is returned (the image encoder's states) so that every family has the same outputs;
  nothing in it depends on the text. `fusion_layers` is unused (validation requires 0).

  Attributes:
    text, image: per-stream settings.
    num_text_layers, num_image_layers: depths of the two encoders.
  """

  text: StreamSettings
  image: StreamSettings
  num_text_layers: int
  num_image_layers: int

  @nn.compact
  def __call__(
      self, t: jax.Array, tm: jax.Array, v: jax.Array, vm: jax.Array, *, deterministic: bool
  ) -> EncoderOutput:
    t = unimodal_stack(self.text, "text_layer", self.num_text_layers, t, tm, deterministic)
    v = unimodal_stack(self.image, "image_layer", self.num_image_layers, v, vm, deterministic)
    return EncoderOutput(t, v, t, v)


def build(model_config: Any) -> DualEncoder:
  return DualEncoder(
      text=StreamSettings.from_config(model_config, "text"),
      image=StreamSettings.from_config(model_config, "image"),
      num_text_layers=model_config.text.num_layers,
      num_image_layers=model_config.image.num_layers,
      name="encoder",
  )
