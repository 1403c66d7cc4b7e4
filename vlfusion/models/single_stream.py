"""Single-stream fusion (VisualBERT, UNITER, ViLT): one self-attention stack over [text; image]."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import default_kernel_init, partitioned
from vlfusion.models.stream import EncoderOutput, StreamSettings, unimodal_stack


class SingleStreamEncoder(nn.Module):
  """Concatenates text and image tokens, adds modality-type embeddings, runs one layer stack.

  Image tokens carry no 1-D position: adding text padding shifts them but changes nothing. With
  `num_text_layers`/`num_image_layers` > 0 each modality first runs its own layers (METER's merged
  attention, `merged_attention.py`); single_stream has none.

  Attributes:
    settings: settings of the joint stack (text and image share one width).
    num_layers: depth of the joint stack.
    num_modality_types: rows of the modality-type table (ViLT uses 3: text, image, second image).
    text_encoder, image_encoder: settings of the unimodal layers (default: `settings`).
    num_text_layers, num_image_layers: unimodal layers before the concatenation.
  """

  settings: StreamSettings
  num_layers: int
  num_modality_types: int = 2
  text_encoder: StreamSettings | None = None
  image_encoder: StreamSettings | None = None
  num_text_layers: int = 0
  num_image_layers: int = 0

  @nn.compact
  def __call__(
      self, text: jax.Array, text_mask: jax.Array, image: jax.Array, image_mask: jax.Array,
      *, deterministic: bool,
  ) -> EncoderOutput:
    """text [B,Lt,D], image [B,Li,D] and masks -> final and unimodal states."""
    s = self.settings
    text = unimodal_stack(self.text_encoder or s, "text_layer", self.num_text_layers, text, text_mask,
                          deterministic)
    image = unimodal_stack(self.image_encoder or s, "image_layer", self.num_image_layers, image,
                           image_mask, deterministic)
    types = nn.Embed(
        self.num_modality_types, s.hidden_size, dtype=s.dtype, param_dtype=s.param_dtype,
        embedding_init=partitioned(default_kernel_init, (None, "embed")),
        name="modality_type_embeddings",
    )
    lt = text.shape[1]
    x = jnp.concatenate([text + types(jnp.int32(0)), image + types(jnp.int32(1))], axis=1)
    mask = jnp.concatenate([text_mask, image_mask], axis=1)
    x = s.stack("layer", self.num_layers, x, mask, None, None, deterministic)
    x = s.final_norm(x, "final_norm")
    return EncoderOutput(x[:, :lt], x[:, lt:], text, image)


def build(model_config: Any) -> SingleStreamEncoder:
  text = StreamSettings.from_config(model_config, "text", own_norm=False)
  return SingleStreamEncoder(text, num_layers=model_config.fusion_layers, name="encoder")
