"""Single-stream fusion (VisualBERT, UNITER, ViLT): one self-attention stack over [text; image]."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import default_kernel_init, partitioned
from vlfusion.models.layers import layer_norm
from vlfusion.models.stream import StreamSettings


class SingleStreamEncoder(nn.Module):
  """Concatenates text and image tokens, adds modality-type embeddings, runs one layer stack.

  Image tokens carry no 1-D position: adding text padding shifts them but changes nothing.

  Attributes:
    settings: stream settings (text and image share one width).
    num_layers: depth of the joint stack.
    num_modality_types: rows of the modality-type table (ViLT uses 3: text, image, second image).
  """

  settings: StreamSettings
  num_layers: int
  num_modality_types: int = 2

  @nn.compact
  def __call__(
      self, text: jax.Array, text_mask: jax.Array, image: jax.Array, image_mask: jax.Array,
      *, deterministic: bool,
  ) -> tuple[jax.Array, jax.Array]:
    """text [B,Lt,D], image [B,Li,D] and masks -> (text_hidden [B,Lt,D], image_hidden [B,Li,D])."""
    s = self.settings
    types = nn.Embed(
        self.num_modality_types, s.hidden_size, dtype=s.dtype, param_dtype=s.param_dtype,
        embedding_init=partitioned(default_kernel_init, (None, "embed")),
        name="modality_type_embeddings",
    )
    lt = text.shape[1]
    x = jnp.concatenate([text + types(jnp.int32(0)), image + types(jnp.int32(1))], axis=1)
    mask = jnp.concatenate([text_mask, image_mask], axis=1)
    for i in range(self.num_layers):
      x = s.layer(f"layer_{i}")(x, mask, None, None, deterministic)
    if s.pre_norm:
      x = layer_norm(s.layer_norm_eps, s.dtype, s.param_dtype, name="final_norm")(x)
    return x[:, :lt], x[:, lt:]


def build(model_config: Any) -> SingleStreamEncoder:
  text = StreamSettings.from_config(model_config, "text")
  return SingleStreamEncoder(text, num_layers=model_config.fusion_layers, name="encoder")
