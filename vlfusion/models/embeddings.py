"""Input embeddings: BERT-style text, detector regions (LXMERT or VisualBERT style) and ViLT-style patches."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlfusion.config_fields import DEFAULT_IMAGE_EMBEDDING, IMAGE_STEMS
from vlfusion.models.attention import compute_dtype, default_kernel_init, partitioned
from vlfusion.models.layers import dense, layer_norm

Dtype = Any


class TextEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout (BERT).

  `attend` projects hidden states onto the word embeddings, for an MLM decoder tied to them.

  Attributes:
    vocab_size: size of the word table.
    hidden_size: width D.
    max_len: rows of the position table.
    type_vocab_size: rows of the token-type table.
  """

  vocab_size: int
  hidden_size: int
  max_len: int
  type_vocab_size: int = 2
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    def table(num: int, names: tuple[str, str]) -> nn.Embed:
      return nn.Embed(
          num, self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
          embedding_init=partitioned(default_kernel_init, names),
      )

    self.word_embeddings = table(self.vocab_size, ("vocab", "embed"))
    self.position_embeddings = table(self.max_len, (None, "embed"))
    self.token_type_embeddings = table(self.type_vocab_size, (None, "embed"))
    self.norm = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype)
    self.drop = nn.Dropout(self.dropout)

  def __call__(
      self, ids: jax.Array, token_types: jax.Array | None = None, *, deterministic: bool
  ) -> jax.Array:
    """ids int [B,Lt] -> [B,Lt,D]."""
    if ids.shape[1] > self.max_len:
      raise ValueError(f"text length {ids.shape[1]} exceeds the position table max_len={self.max_len}")
    positions = jnp.arange(ids.shape[1])[None, :]
    if token_types is None:
      token_types = jnp.zeros_like(ids)
    x = (
        self.word_embeddings(ids)
        + self.position_embeddings(positions)
        + self.token_type_embeddings(token_types)
    )
    x = self.drop(self.norm(x), deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  def attend(self, x: jax.Array) -> jax.Array:
    """x [..., D] -> logits [..., vocab] against the word table."""
    return self.word_embeddings.attend(x)


class RegionEmbeddings(nn.Module):
  """Detector regions as LXMERT embeds them: (LN(W_f feature) + LN(W_b box)) / 2, then dropout.

  Attributes:
    hidden_size: width D.
  """

  hidden_size: int
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, boxes: jax.Array, *, deterministic: bool) -> jax.Array:
    """features [B,R,F], boxes [B,R,4] (x1,y1,x2,y2 in [0,1]) -> [B,R,D]."""
    def branch(x: jax.Array, name: str) -> jax.Array:
      h = dense(self.hidden_size, (None, "embed"), self.dtype, self.param_dtype, name=f"{name}_proj")(x)
      return layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name=f"{name}_norm")(h)

    x = (branch(features, "feature") + branch(boxes, "box")) / 2
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class VisualBertRegionEmbeddings(nn.Module):
  """Detector regions as VisualBERT embeds them: LN(W_f feature + type + position), then dropout.

  VisualBERT adds its visual token-type row 1 and visual position row 0 to every region (no box input)
  and normalises with the LayerNorm it also applies to text; here the LayerNorm is the image side's own
  (a converted checkpoint copies the text one into it, so the two start equal and may drift apart in
  fine-tuning).

  Attributes:
    hidden_size: width D.
  """

  hidden_size: int
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self, features: jax.Array, boxes: jax.Array | None = None, *, deterministic: bool
  ) -> jax.Array:
    """features [B,R,F] -> [B,R,D]; `boxes` is accepted for a uniform signature and ignored."""
    del boxes
    x = dense(self.hidden_size, (None, "embed"), self.dtype, self.param_dtype, name="feature_proj")(
        features)
    d = self.hidden_size
    type_row = self.param("type_embedding", partitioned(default_kernel_init, ("embed",)), (d,),
                          self.param_dtype)
    position_row = self.param("position_embedding", partitioned(default_kernel_init, ("embed",)), (d,),
                              self.param_dtype)
    x = x + (type_row + position_row).astype(x.dtype)
    x = layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name="norm")(x)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def _bilinear_weights(valid: jax.Array, size: int, side: int) -> jax.Array:
  """[B,size,side] weights resizing `side` rows to the first `valid[b]` of `size` rows; zero beyond.

  Bilinear with align_corners=True, as ViLT's `F.interpolate` call: output row i reads source position
  i*(side-1)/(valid-1). `valid` may be traced, so every image of a batch gets its own grid.
  """
  i = jnp.arange(size, dtype=jnp.float32)[None, :]
  valid = valid.astype(jnp.float32)[:, None]
  scale = jnp.where(valid > 1, (side - 1) / jnp.maximum(valid - 1, 1.0), 0.0)
  src = i * scale
  lo = jnp.clip(jnp.floor(src), 0, side - 1)
  frac = src - lo
  hi = jnp.minimum(lo + 1, side - 1)
  w = (jax.nn.one_hot(lo.astype(jnp.int32), side) * (1 - frac)[..., None]
       + jax.nn.one_hot(hi.astype(jnp.int32), side) * frac[..., None])
  return jnp.where((i < valid)[..., None], w, 0.0)


def interpolate_positions(
    table: jax.Array, grid: tuple[int, int], valid_rows: jax.Array | None = None,
    valid_cols: jax.Array | None = None,
) -> jax.Array:
  """Resizes a square [h*w, D] position table onto each image's valid patch grid, as ViLT does.

  The table is resized (bilinear, align_corners) to the `valid_rows[b] x valid_cols[b]` top-left part of
  a `grid` of patches; positions outside it are zero (they are masked). Without valid sizes the whole
  grid is valid. Returns [B, grid_h*grid_w, D] (B = 1 without valid sizes).
  """
  side = int(round(table.shape[0] ** 0.5))
  gh, gw = grid
  if valid_rows is None:
    valid_rows, valid_cols = jnp.array([gh]), jnp.array([gw])
  square = table.reshape(side, side, -1).astype(jnp.float32)
  wy = _bilinear_weights(valid_rows, gh, side)
  wx = _bilinear_weights(valid_cols, gw, side)
  out = jnp.einsum("bis,bjt,std->bijd", wy, wx, square, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(out.shape[0], gh * gw, -1).astype(table.dtype)


def patch_grid_mask(pixel_mask: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of a pixel mask [B,H,W] to the patch grid (ViLT's `F.interpolate`)."""
  h, w = pixel_mask.shape[1:3]
  rows = np.floor(np.arange(grid[0]) * (h / grid[0])).astype(np.int32)
  cols = np.floor(np.arange(grid[1]) * (w / grid[1])).astype(np.int32)
  return pixel_mask[:, rows][:, :, cols].astype(bool)


def sincos_position_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """A [1+N, D] position table started at 2-D sine-cosine positions (row 0, the [CLS], at zero).

  A quarter of the channels each carry sin(y w), cos(y w), sin(x w), cos(x w) of the patch row y and
  column x, for frequencies w = 10000^(-k/(D/4)) (as MAE's fixed table). The table stays learnable;
  it only starts out knowing which patches are neighbours and which lie left of which, something a
  normal(0, std) table has to learn first.
  """
  del key
  rows, d = shape
  side = int(round((rows - 1) ** 0.5))
  if side * side != rows - 1 or d % 4:
    raise ValueError(f"sincos positions need 1 + a square number of rows and a width divisible by 4, "
                     f"got {shape}")
  omega = 1.0 / 10000 ** (np.arange(d // 4) / (d // 4))
  y, x = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
  angles_y, angles_x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega
  table = np.concatenate([np.sin(angles_y), np.cos(angles_y), np.sin(angles_x), np.cos(angles_x)], 1)
  return jnp.asarray(np.concatenate([np.zeros((1, d)), table]), dtype)


class ConvStem(nn.Module):
  """Pixels to a patch grid through stride-2 3x3 convolutions (Xiao et al., 2021, "Early convolutions
  help transformers see better"), each followed by GroupNorm and ReLU, then a 1x1 convolution to the
  model width.

  log2(patch_size) stride-2 convolutions bring [B,H,W,3] to the [B,H/p,W/p,D] grid a linear patch
  projection would give, so positions, [CLS] and masks are the same for both stems. Channels double at
  every stage (at least 16) and reach D at the last 3x3 convolution; a LayerNorm puts the tokens at the
  scale of the text embeddings. Small objects (a few pixels) then become
  local features before attention, which a linear projection of raw 8x8 patches learns slowly.

  With `blocks` > 0, each stride-2 convolution is followed by that many residual blocks (3x3 convolution,
  GroupNorm, ReLU, added to their input) at the same resolution: a deeper stem with a wider receptive
  field on the same grid, as a CNN's stages have.

  Attributes:
    hidden_size: output width D.
    patch_size: a power of two: the total stride.
    blocks: residual blocks after each stride-2 convolution.
  """

  hidden_size: int
  patch_size: int
  blocks: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _group_norm(self, channels: int, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=max(channels // 8, 1), epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
        scale_init=partitioned(nn.initializers.ones, ("stem",)),
        bias_init=partitioned(nn.initializers.zeros, ("stem",)), name=name)

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    """pixels [B,H,W,C] -> [B,H/p,W/p,D]."""
    stages = int(round(np.log2(self.patch_size)))
    x = pixels
    for i in range(stages):
      channels = max(self.hidden_size // 2 ** (stages - 1 - i), 16)
      x = nn.Conv(
          channels, (3, 3), strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype,
          param_dtype=self.param_dtype,
          kernel_init=partitioned(nn.initializers.he_normal(), (None, None, None, "stem")),
          name=f"conv_{i}",
      )(x)
      # GroupNorm (per image, over space and groups of 8 channels) keeps the spatial contrast a
      # shape is made of; a per-pixel LayerNorm would scale a flat patch like an edge.
      x = self._group_norm(channels, f"norm_{i}")(x)
      x = nn.relu(x)
      for j in range(self.blocks):
        y = nn.Conv(
            channels, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=partitioned(nn.initializers.he_normal(), (None, None, None, "stem")),
            name=f"block_{i}_{j}",
        )(x)
        y = self._group_norm(channels, f"block_{i}_{j}_norm")(y)
        x = x + nn.relu(y)
    x = nn.Conv(
        self.hidden_size, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=partitioned(default_kernel_init, (None, None, "stem", "embed")),
        bias_init=partitioned(nn.initializers.zeros, ("embed",)), name="proj",
    )(x)
    # Tokens at the scale of the (LayerNorm-ed) text embeddings, as region embeddings are.
    return layer_norm(1e-6, self.dtype, self.param_dtype, name="norm")(x)


class PatchEmbeddings(nn.Module):
  """Image pixels cut into patches, an image [CLS] token and position embeddings.

  `stem` turns pixels into patch tokens: "linear" (ViT/ViLT: one strided convolution, a linear map of
  each patch) or "conv" (`ConvStem`: a small strided CNN down to the same grid). `position_init` starts
  the position table at normal(0, initializer_range) ("normal") or at 2-D sine-cosine positions
  ("sincos", `sincos_position_init`).

  The position table is learned for `image_size`; images of another size, or padded images (a pixel
  mask), get it resized to their valid patch grid (bilinear, align_corners, as ViLT). Patches outside
  the valid region are masked out. Unlike HF's ViLT, patches stay in raster order (HF samples them in a
  random order).

  Attributes:
    hidden_size: width D.
    patch_size: side of a square patch in pixels.
    image_size: side of the pretraining image, which sizes the position table.
  """

  hidden_size: int
  patch_size: int
  image_size: int
  stem: str = "linear"
  stem_blocks: int = 0
  position_init: str = "normal"
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self, pixels: jax.Array, pixel_mask: jax.Array | None = None, *, deterministic: bool
  ) -> tuple[jax.Array, jax.Array]:
    """pixels [B,H,W,C], pixel_mask [B,H,W] (1 = real pixel) -> (tokens [B,1+N,D], mask bool [B,1+N])."""
    p = self.patch_size
    if self.stem == "conv":
      x = ConvStem(self.hidden_size, p, self.stem_blocks, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="conv_stem")(pixels)
    elif self.stem == "linear":
      x = nn.Conv(
          self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
          param_dtype=self.param_dtype,
          kernel_init=partitioned(default_kernel_init, (None, None, None, "embed")),
          bias_init=partitioned(nn.initializers.zeros, ("embed",)), name="patch_proj",
      )(pixels)
    else:
      raise ValueError(f"config.model.image.stem={self.stem!r} must be one of {IMAGE_STEMS}")
    b, gh, gw, d = x.shape
    x = x.reshape(b, gh * gw, d)
    cls = self.param("cls", partitioned(nn.initializers.zeros, (None, "embed")), (1, d),
                     self.param_dtype)
    n = (self.image_size // p) ** 2
    position_init = {"normal": default_kernel_init, "sincos": sincos_position_init}[self.position_init]
    pos = self.param(
        "position_embeddings", partitioned(position_init, (None, "embed")), (n + 1, d),
        self.param_dtype,
    )
    if pixel_mask is None:
      grid_mask = jnp.ones((b, gh, gw), bool)
      patch_pos = interpolate_positions(pos[1:], (gh, gw))
    else:
      grid_mask = patch_grid_mask(pixel_mask, (gh, gw))
      # Valid rows/columns counted along the first column/row, as ViLT does (a top-left rectangle).
      patch_pos = interpolate_positions(pos[1:], (gh, gw), grid_mask[:, :, 0].sum(1),
                                        grid_mask[:, 0, :].sum(1))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    patch_pos = jnp.broadcast_to(patch_pos, (b, gh * gw, d))
    x = x + jnp.concatenate([jnp.broadcast_to(pos[:1], (b, 1, d)), patch_pos], axis=1).astype(x.dtype)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    mask = jnp.concatenate([jnp.ones((b, 1), bool), grid_mask.reshape(b, gh * gw)], axis=1)
    return x, mask


# model.image.embedding -> (input it serves, module); "" picks the input's default.
IMAGE_EMBEDDINGS = {
    "lxmert": ("regions", RegionEmbeddings),
    "visualbert": ("regions", VisualBertRegionEmbeddings),
    "vilt": ("patches", PatchEmbeddings),
}


def image_embedding_name(image_config: Any) -> str:
  """The embedding variant `model.image` asks for, resolving "" to the input's default."""
  return image_config.embedding or DEFAULT_IMAGE_EMBEDDING[image_config.input]


def build_image_embeddings(model_config: Any) -> nn.Module:
  """The image embedding module named by `model.image.embedding` (regions or patches)."""
  c = model_config
  dtype, param_dtype = jnp.dtype(compute_dtype(c.dtype)), jnp.dtype(c.param_dtype)
  _, cls = IMAGE_EMBEDDINGS[image_embedding_name(c.image)]
  if cls is PatchEmbeddings:
    return PatchEmbeddings(
        hidden_size=c.image.hidden_size, patch_size=c.image.patch_size, image_size=c.image.image_size,
        stem=c.image.stem, stem_blocks=c.image.stem_blocks, position_init=c.image.position_init,
        dropout=c.dropout, dtype=dtype, param_dtype=param_dtype,
    )
  return cls(hidden_size=c.image.hidden_size, dropout=c.dropout, layer_norm_eps=c.layer_norm_eps,
             dtype=dtype, param_dtype=param_dtype)
