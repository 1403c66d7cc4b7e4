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


def image_summary(hidden: jax.Array, mask: jax.Array, image_input: str) -> jax.Array:
  """One vector per image: the [CLS] token of patches, or the mean of the valid regions.

  Regions have no [CLS]; their masked mean is independent of how many padded slots follow.
  hidden [B,Li,D], mask bool [B,Li] -> [B,D].
  """
  if image_input == "patches":
    return hidden[:, 0]
  w = mask.astype(hidden.dtype)[..., None]
  return jnp.sum(hidden * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


POOLERS = ("text", "concat", "product")


class Pooler(nn.Module):
  """The pooled output the ITM, VQA and pairs heads read, by `mode`.

  text (BERT, LXMERT, UNITER, ViLT, ALBEF): tanh(Dense(D)) on the text [CLS] -> [B,Dt].
  concat (METER): tanh poolers on the text [CLS] and on the image summary, concatenated -> [B,Dt+Di].
  product (ViLBERT; the dual encoder): ReLU(Dense(Di)) of each, multiplied element-wise -> [B,Di]; a
    linear head on a product can score agreement, which a late-fusion model needs.

  Attributes:
    hidden_size: text width Dt (`text` and `concat`).
    mode: one of POOLERS.
    image_size: image width Di (`concat` and `product`).
    image_input: "regions" or "patches", which picks the image summary.
  """

  hidden_size: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  mode: str = "text"
  image_size: int = 0
  image_input: str = "regions"

  @nn.compact
  def __call__(self, hidden: jax.Array, image: jax.Array | None = None,
               image_mask: jax.Array | None = None) -> jax.Array:
    """hidden [B,Lt,Dt] (and image [B,Li,Di], image_mask [B,Li]) -> pooled [B,P]."""
    def project(width: int, x: jax.Array, name: str) -> jax.Array:
      return dense(width, ("embed", "mlp"), self.dtype, self.param_dtype, name=name)(x)

    if self.mode == "text":
      return jnp.tanh(project(self.hidden_size, hidden[:, 0], "dense"))
    v = image_summary(image, image_mask, self.image_input)
    if self.mode == "concat":
      return jnp.concatenate([jnp.tanh(project(self.hidden_size, hidden[:, 0], "dense")),
                              jnp.tanh(project(self.image_size, v, "image_dense"))], axis=-1)
    if self.mode == "product":
      return (jax.nn.relu(project(self.image_size, hidden[:, 0], "dense"))
              * jax.nn.relu(project(self.image_size, v, "image_dense")))
    raise ValueError(f"unknown pooler mode {self.mode!r}")


class MlmHead(nn.Module):
  """Masked language modelling: Dense -> GELU -> LayerNorm -> decoder tied to the word table + bias.

  `features` (the transform) and `decode` (the tied decoder) are also called apart: the train step
  decodes only the masked positions, where the decoder's [.., vocab] output is needed
  (`losses.mlm_loss`).

  Attributes:
    vocab_size: output classes.
    hidden_size: width D of the hidden states it reads.
    decoder: the tied decoder, hidden [..., D] -> logits [..., vocab] (the word table's `attend`).
  """

  vocab_size: int
  hidden_size: int
  decoder: Callable[[jax.Array], jax.Array]
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.transform = dense(self.hidden_size, ("embed", "mlp"), self.dtype, self.param_dtype)
    self.norm = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype)
    self.bias = self.param("bias", partitioned(nn.initializers.zeros, ("vocab",)), (self.vocab_size,),
                           self.param_dtype)

  def features(self, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> the decoder's input [..., D]."""
    return self.norm(gelu(self.transform(hidden)))

  def decode(self, x: jax.Array) -> jax.Array:
    """features [..., D] -> logits float32 [..., vocab]."""
    return (self.decoder(x) + self.bias).astype(jnp.float32)

  def __call__(self, hidden: jax.Array) -> jax.Array:
    """hidden [B,Lt,D] -> logits float32 [B,Lt,vocab]."""
    logits = self.decode(self.features(hidden))
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class ItmHead(nn.Module):
  """Image-text matching: Dense(2) on the pooled output (label 1 = the caption matches)."""

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    """pooled [B,P] -> logits float32 [B,2]."""
    return dense(2, ("mlp", None), self.dtype, self.param_dtype, name="classifier")(
        pooled).astype(jnp.float32)


class MlpClassifier(nn.Module):
  """Dense(hidden) -> GELU -> LayerNorm -> Dense(num_classes) (the LXMERT/UNITER VQA and NLVR2 heads).

  Attributes:
    hidden: width of the hidden layer (2x the input width in LXMERT/UNITER).
    num_classes: outputs.
  """

  hidden: int
  num_classes: int
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B,P] -> logits float32 [B,num_classes]."""
    h = dense(self.hidden, ("embed", "mlp"), self.dtype, self.param_dtype, name="dense")(x)
    h = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name="norm")(gelu(h))
    return dense(self.num_classes, ("mlp", None), self.dtype, self.param_dtype, name="classifier")(
        h).astype(jnp.float32)


class MrmHead(nn.Module):
  """Masked region modelling on the image states: Dense -> GELU -> LayerNorm, then feature regression
  (Dense(F), `regression`) and object-label classification (Dense(num_labels), when num_labels > 0).

  Attributes:
    feature_dim: F, the width of the region features to reconstruct.
    num_labels: object classes (0: no classification).
    regression: whether to predict the features.
  """

  feature_dim: int
  num_labels: int = 0
  regression: bool = True
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> dict[str, jax.Array]:
    """image [B,R,Di] -> {mrm_features [B,R,F], mrm_logits [B,R,num_labels]} (float32)."""
    d = image.shape[-1]
    h = dense(d, ("embed", "mlp"), self.dtype, self.param_dtype, name="transform")(image)
    h = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name="norm")(gelu(h))
    out = {}
    if self.regression:
      out["mrm_features"] = dense(self.feature_dim, ("mlp", None), self.dtype, self.param_dtype,
                                  name="feature")(h).astype(jnp.float32)
    if self.num_labels > 0:
      out["mrm_logits"] = dense(self.num_labels, ("mlp", None), self.dtype, self.param_dtype,
                                name="label")(h).astype(jnp.float32)
    return out


class ItcHead(nn.Module):
  """Image-text contrastive embeddings (ALBEF): Dense(embed_dim) on the text [CLS] and on the image
  summary, L2-normalised, and the similarity logits over the batch divided by a learned temperature.

  The temperature is stored as its log (so it stays positive) and clipped to [min_temperature,
  max_temperature] (ALBEF clamps it to [0.001, 0.5]; clipping stops its gradient outside the range).
  The batch is the global batch (a jax.Array sharded over the data axes inside jax.jit), so the
  [B,B] similarity already compares every text with every image on all data-parallel devices: XLA
  gathers the embeddings, with no explicit all-gather in the model.

  Attributes:
    embed_dim: E, the shared embedding width.
    temperature: initial temperature.
    min_temperature, max_temperature: the clip range.
    image_input: which image summary to use (see `image_summary`).
  """

  embed_dim: int
  temperature: float = 0.07
  min_temperature: float = 0.001
  max_temperature: float = 0.5
  image_input: str = "regions"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text: jax.Array, image: jax.Array, image_mask: jax.Array) -> dict[str, jax.Array]:
    """text [B,Lt,Dt], image [B,Li,Di], image_mask [B,Li] -> embeddings [B,E], logits [B,B]."""
    def embed(x: jax.Array, name: str) -> jax.Array:
      e = dense(self.embed_dim, ("embed", None), self.dtype, self.param_dtype, name=name)(x)
      e = e.astype(jnp.float32)
      return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

    t = embed(text[:, 0], "text_projection")
    v = embed(image_summary(image, image_mask, self.image_input), "image_projection")
    log_t = self.param("log_temperature", nn.initializers.constant(jnp.log(self.temperature)), (),
                       jnp.float32)
    temperature = jnp.exp(jnp.clip(log_t, jnp.log(self.min_temperature),
                                   jnp.log(self.max_temperature)))
    return {"itc_text_embeds": t, "itc_image_embeds": v, "itc_temperature": temperature,
            "itc_logits": (t @ v.T) / temperature}
