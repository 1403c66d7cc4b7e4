"""The vision-language model: embeddings, a fusion encoder chosen by config, pooler and heads."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlfusion import tasks
from vlfusion.models import co_attention, dual_encoder, merged_attention, one_way, single_stream
from vlfusion.models.attention import compute_dtype, initializer_range
from vlfusion.models.embeddings import TextEmbeddings, build_image_embeddings
from vlfusion.models.heads import Pooler
from vlfusion.tasks.base import Fused, HeadParts

# fusion family -> module whose `build(model_config)` returns the encoder.
ENCODERS = {
    "single_stream": single_stream,
    "co_attention": co_attention,
    "merged_attention": merged_attention,
    "one_way": one_way,
    "dual_encoder": dual_encoder,
}


class VisionLanguageModel(nn.Module):
  """Embeds text and image, fuses them, pools, and applies the heads named in `config.heads`.

  Each head, and the outputs it adds, is its task's (`vlfusion.tasks`): the heads of today's tasks
  give the outputs below, and a registered task adds its own.

  `apply({'params': p}, batch, train=False, rngs=...)` returns a dict: `text_hidden` [B,Lt,Dt],
  `image_hidden` [B,Li,Di] (every family, the dual encoder included), `pooled` [B,P], and for each
  head in `config.heads`: `mlm_logits` [B,Lt,V], `itm_logits` [B,2], `mrm_features` [B,R,F] /
  `mrm_logits` [B,R,C], `itc_logits` [B,B] (+ `itc_text_embeds`, `itc_image_embeds`,
  `itc_temperature`), `vqa_logits` [B,A], `pairs_logits` [B,2]. A head exists and runs exactly when it
  is named in `config.heads`; `config.objectives` only weights the losses (a weight > 0 needs its head).
  The pairs head encodes the text a second time with `pair_regions`/`pair_image` and runs only when
  the batch has them (at init the first image stands in). Training with dropout needs
  `rngs={'dropout': key}`.

  Attributes:
    config: the model config (`config.model` of a run), frozen.
  """

  config: ml_collections.FrozenConfigDict

  def setup(self):
    c = self.config
    dtype, param_dtype = jnp.dtype(compute_dtype(c.dtype)), jnp.dtype(c.param_dtype)
    self.text_embeddings = TextEmbeddings(
        vocab_size=c.text.vocab_size, hidden_size=c.text.hidden_size, max_len=c.text.max_len,
        type_vocab_size=c.text.type_vocab_size, dropout=c.dropout,
        layer_norm_eps=c.layer_norm_eps, dtype=dtype, param_dtype=param_dtype,
    )
    self.image_embeddings = build_image_embeddings(c)  # by model.image.embedding
    self.encoder = ENCODERS[c.fusion].build(c)
    self.pooler = Pooler(c.text.hidden_size, dtype=dtype, param_dtype=param_dtype, mode=c.pooler,
                         image_size=c.image.hidden_size, image_input=c.image.input)
    pooled_size = {"text": c.text.hidden_size, "concat": c.text.hidden_size + c.image.hidden_size,
                   "product": c.image.hidden_size}[c.pooler]
    parts = HeadParts(dtype=dtype, param_dtype=param_dtype, pooled_size=pooled_size,
                      text_embeddings=self.text_embeddings)
    # Each head's parameters live under `heads_<name>`, whatever the order of config.heads.
    heads = {}
    for name in c.heads:
      task = tasks.get(name)
      if task.head is None:
        raise ValueError(f"config.model.heads has {name!r}, a task without a head of its own")
      heads[name] = task.head(c, parts)
    self.heads = heads

  def embed_image(self, batch: dict[str, Any], deterministic: bool, prefix: str = ""
                  ) -> tuple[jax.Array, jax.Array]:
    """The image side of `batch` (`<prefix>regions` or `<prefix>image`) as tokens [B,Li,Di], mask [B,Li].

    Padded images may come with `<prefix>image_mask` [B,H,W] (1 = real pixel); their padding patches
    are masked.
    """
    if self.config.image.input == "regions":
      regions = batch[f"{prefix}regions"]
      x = self.image_embeddings(regions["features"], regions["boxes"], deterministic=deterministic)
      return x, regions["mask"].astype(bool)
    return self.image_embeddings(batch[f"{prefix}image"], batch.get(f"{prefix}image_mask"),
                                 deterministic=deterministic)

  def encode(self, batch: dict[str, Any], deterministic: bool, prefix: str = ""):
    """Embeds and fuses the text with the image `<prefix>regions`/`<prefix>image`.

    Returns (EncoderOutput, image mask [B,Li], pooled [B,P]).
    """
    text_mask = batch["text_mask"].astype(bool)
    text = self.text_embeddings(batch["text_ids"], deterministic=deterministic)
    image, image_mask = self.embed_image(batch, deterministic, prefix)
    enc = self.encoder(text, text_mask, image, image_mask, deterministic=deterministic)
    pooled = self.pooler(enc.text, enc.image, image_mask)
    return enc, image_mask, pooled

  def __call__(self, batch: dict[str, Any], train: bool = False, decode_mlm: bool = True
               ) -> dict[str, jax.Array]:
    """The outputs named in the class docstring. With `decode_mlm=False` the MLM head stops before its
    decoder: `mlm_features` [B,Lt,Dt] replaces `mlm_logits`, and `decode_mlm_features` turns any of
    those rows into logits (the train step decodes only the masked positions)."""
    # Parameters are created inside this call (at init): draw them at the model's initializer range.
    with initializer_range(self.config.initializer_range):
      return self._outputs(batch, train, decode_mlm)

  def decode_mlm_features(self, features: jax.Array) -> jax.Array:
    """MLM features [..., Dt] (`decode_mlm=False`) -> logits float32 [..., vocab]."""
    return self.heads["mlm"].decode(features)

  def _outputs(self, batch: dict[str, Any], train: bool, decode_mlm: bool) -> dict[str, jax.Array]:
    deterministic = not train
    enc, image_mask, pooled = self.encode(batch, deterministic)
    outputs = {"text_hidden": enc.text, "image_hidden": enc.image, "pooled": pooled}
    fused = Fused(enc, image_mask, pooled, deterministic, decode_mlm)
    for name, head in self.heads.items():
      outputs.update(tasks.get(name).forward(self, head, batch, fused))
    return outputs


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Returns the linen module that `model_config` (a run's `config.model`) describes."""
  if model_config.fusion not in ENCODERS:
    raise ValueError(
        f"config.model.fusion={model_config.fusion!r} is not implemented; "
        f"available: {sorted(ENCODERS)}"
    )
  return VisionLanguageModel(ml_collections.FrozenConfigDict(model_config))
