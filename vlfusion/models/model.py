"""The vision-language model: embeddings, a fusion encoder chosen by config, pooler and heads."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlfusion.models import co_attention, single_stream
from vlfusion.models.embeddings import TextEmbeddings, build_image_embeddings
from vlfusion.models.heads import ItmHead, MlmHead, Pooler

# fusion family -> module whose `build(model_config)` returns the encoder.
ENCODERS = {
    "single_stream": single_stream,
    "co_attention": co_attention,
}


class VisionLanguageModel(nn.Module):
  """Embeds text and image, fuses them, pools, and applies the heads named in `config.heads`.

  `apply({'params': p}, batch, train=False, rngs=...)` returns a dict: `text_hidden` [B,Lt,D],
  `image_hidden` [B,Li,D], `pooled` [B,D], and `<head>_logits` for each head (DESIGN.md section 2).
  Training with dropout needs `rngs={'dropout': key}`.

  Attributes:
    config: the model config (`config.model` of a run), frozen.
  """

  config: ml_collections.FrozenConfigDict

  def setup(self):
    c = self.config
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    self.text_embeddings = TextEmbeddings(
        vocab_size=c.text.vocab_size, hidden_size=c.text.hidden_size, max_len=c.text.max_len,
        type_vocab_size=c.text.type_vocab_size, dropout=c.dropout,
        layer_norm_eps=c.layer_norm_eps, dtype=dtype, param_dtype=param_dtype,
    )
    self.image_embeddings = build_image_embeddings(c)  # by model.image.embedding
    self.encoder = ENCODERS[c.fusion].build(c)
    self.pooler = Pooler(c.text.hidden_size, dtype=dtype, param_dtype=param_dtype)
    heads = {}
    if "mlm" in c.heads:
      heads["mlm"] = MlmHead(
          c.text.vocab_size, decode=self.text_embeddings.attend, layer_norm_eps=c.layer_norm_eps,
          dtype=dtype, param_dtype=param_dtype,
      )
    if "itm" in c.heads:
      heads["itm"] = ItmHead(dtype=dtype, param_dtype=param_dtype)
    self.heads = heads

  def embed_image(self, batch: dict[str, Any], deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """The image side of `batch` as tokens [B,Li,Di] and a mask [B,Li].

    Padded images may come with `image_mask` [B,H,W] (1 = real pixel); their padding patches are masked.
    """
    if self.config.image.input == "regions":
      regions = batch["regions"]
      x = self.image_embeddings(regions["features"], regions["boxes"], deterministic=deterministic)
      return x, regions["mask"].astype(bool)
    return self.image_embeddings(batch["image"], batch.get("image_mask"), deterministic=deterministic)

  def __call__(self, batch: dict[str, Any], train: bool = False) -> dict[str, jax.Array]:
    deterministic = not train
    text_mask = batch["text_mask"].astype(bool)
    text = self.text_embeddings(batch["text_ids"], deterministic=deterministic)
    image, image_mask = self.embed_image(batch, deterministic)
    text_hidden, image_hidden = self.encoder(
        text, text_mask, image, image_mask, deterministic=deterministic)
    pooled = self.pooler(text_hidden)
    outputs = {"text_hidden": text_hidden, "image_hidden": image_hidden, "pooled": pooled}
    if "mlm" in self.heads:
      outputs["mlm_logits"] = self.heads["mlm"](text_hidden)
    if "itm" in self.heads:
      outputs["itm_logits"] = self.heads["itm"](pooled)
    return outputs


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Returns the linen module that `model_config` (a run's `config.model`) describes."""
  if model_config.fusion not in ENCODERS:
    raise ValueError(
        f"config.model.fusion={model_config.fusion!r} is not implemented; "
        f"available: {sorted(ENCODERS)}"
    )
  return VisionLanguageModel(ml_collections.FrozenConfigDict(model_config))
