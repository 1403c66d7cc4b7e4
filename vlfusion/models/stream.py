"""Per-stream settings drawn from the model config, and `stack`, which builds every stack of layers."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlfusion.models.attention import compute_dtype
from vlfusion.models.layers import TransformerLayer, layer_class, layer_norm


def relative_grid(model_config: Any) -> tuple[int, int] | None:
  """The patch grid (h, w) of the image stream's 2-D relative position bias, or None without one.

  `model.image.relative_position`: "none" or "bias_2d" (patches only; `validate` refuses it for
  regions, which have no grid).
  """
  image = model_config.image
  kind = image.get("relative_position", "none")
  if kind == "none":
    return None
  if kind != "bias_2d" or image.input != "patches":
    raise ValueError(f"config.model.image.relative_position={kind!r} needs config.model.image.input="
                     f"'patches' and one of ('none', 'bias_2d')")
  side = image.image_size // image.patch_size
  return (side, side)


@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """What a transformer layer of one stream needs: width, heads, MLP width and shared knobs.

  `pre_norm` and `layer_norm_eps` are the stream's own when `model.<stream>.pre_norm` /
  `.layer_norm_eps` are set (ALBEF and METER pair a pre-LN ViT with a post-LN BERT), else the
  model-wide values. `cross_features`/`cross_num_heads` size the attention into the other stream.
  `relative_grid` is the image stream's patch grid when `model.image.relative_position='bias_2d'`:
  every self-attention of the stream's layers then adds a learned 2-D relative position bias.
  """

  hidden_size: int
  num_heads: int
  mlp_dim: int
  dropout: float
  attention_dropout: float
  pre_norm: bool
  layer_norm_eps: float
  remat_policy: str
  dtype: Any
  param_dtype: Any
  scan: bool = False
  cross_features: int | None = None
  cross_num_heads: int | None = None
  relative_grid: tuple[int, int] | None = None

  @classmethod
  def from_config(cls, model_config: Any, stream: str, own_norm: bool = True) -> StreamSettings:
    """Settings of `model_config.text` or `model_config.image` plus the model-wide knobs.

    With `own_norm=False` the stream's norm overrides are ignored (fusion layers use the model's).
    """
    m = model_config
    s = m[stream]
    pre_norm, eps = m.pre_norm, m.layer_norm_eps
    if own_norm and s.pre_norm is not None:
      pre_norm = s.pre_norm
    if own_norm and s.layer_norm_eps is not None:
      eps = s.layer_norm_eps
    cross = m.cross
    return cls(
        hidden_size=s.hidden_size,
        num_heads=s.num_heads,
        mlp_dim=s.mlp_dim,
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
        pre_norm=bool(pre_norm),
        layer_norm_eps=float(eps),
        remat_policy=m.remat_policy,
        dtype=jnp.dtype(compute_dtype(m.dtype)),
        param_dtype=jnp.dtype(m.param_dtype),
        scan=bool(m.scan_layers),
        cross_features=cross.hidden_size or None,
        cross_num_heads=cross.num_heads or None,
        relative_grid=relative_grid(m) if stream == "image" else None,
    )

  def layer_kwargs(self, **overrides: Any) -> dict[str, Any]:
    kwargs = dict(
        num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
        attention_dropout=self.attention_dropout, pre_norm=self.pre_norm,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
        cross_features=self.cross_features, cross_num_heads=self.cross_num_heads,
        relative_grid=self.relative_grid,
    )
    kwargs.update(overrides)
    return kwargs

  def layer(self, name: str, **overrides: Any) -> TransformerLayer:
    """A transformer layer of this stream (rematerialised as configured)."""
    return layer_class(self.remat_policy)(name=name, **self.layer_kwargs(**overrides))

  def stack(
      self, prefix: str, num_layers: int, x: jax.Array, mask: jax.Array,
      context: jax.Array | None = None, context_mask: jax.Array | None = None,
      deterministic: bool = True, **overrides: Any,
  ) -> jax.Array:
    """`num_layers` transformer layers of this stream over x [B,L,D] (see `stack`)."""
    return stack(layer_class(self.remat_policy), self.layer_kwargs(**overrides), num_layers, prefix,
                 self.scan, x, mask, context, context_mask, deterministic)

  def final_norm(self, x: jax.Array, name: str) -> jax.Array:
    """The LayerNorm a pre-LN stack ends with (ViT); identity for post-LN stacks."""
    if not self.pre_norm:
      return x
    return layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype, name=name)(x)


class ScanBody(nn.Module):
  """One layer in nn.scan's form: (carry, *broadcast) -> (new carry, None).

  Attributes:
    layer_cls: the layer class (possibly wrapped in nn.remat); its call maps (carry, *broadcast) to
      the new carry.
    layer_kwargs: its attributes, as sorted (name, value) pairs.
  """

  layer_cls: Any
  layer_kwargs: tuple[tuple[str, Any], ...]

  @nn.compact
  def __call__(self, carry: Any, *broadcast: Any) -> tuple[Any, None]:
    return self.layer_cls(name="layer", **dict(self.layer_kwargs))(carry, *broadcast), None


def stack(
    layer_cls: Any, layer_kwargs: dict[str, Any], num_layers: int, prefix: str, scan: bool,
    carry: Any, *broadcast: Any,
) -> Any:
  """Applies `num_layers` identical layers, carry -> layer(carry, *broadcast), inside a compact method.

  Unrolled (scan=False), the layers are the caller's children `<prefix>_0` .. `<prefix>_{n-1}`: the
  parameter paths that weight conversion maps onto. With scan=True one child `<prefix>_stack/layer`
  holds every layer's parameters with a leading axis of size n (logical name `layers`), and the stack
  runs under `nn.scan`, so the layer is traced and compiled once. Every stack of identical layers in
  vlfusion is built here, so `scan_layers` and `remat_policy` (already applied to `layer_cls`) reach all.
  """
  if num_layers <= 0:
    return carry
  if not scan:
    for i in range(num_layers):
      carry = layer_cls(name=f"{prefix}_{i}", **layer_kwargs)(carry, *broadcast)
    return carry
  scanned = nn.scan(
      ScanBody,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=nn.broadcast,
      length=num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
  )
  carry, _ = scanned(layer_cls, tuple(sorted(layer_kwargs.items())), name=f"{prefix}_stack")(
      carry, *broadcast)
  return carry


def unstack_params(params: Any, prefix: str, num_layers: int) -> Any:
  """Scanned parameters `<prefix>_stack/layer` -> unrolled `<prefix>_0..n-1` (same values)."""
  params = dict(params)
  stacked = params.pop(f"{prefix}_stack")["layer"]
  for i in range(num_layers):
    params[f"{prefix}_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return params


def stack_params(params: Any, prefix: str, num_layers: int) -> Any:
  """Unrolled `<prefix>_0..n-1` parameters -> the scanned layout `<prefix>_stack/layer`."""
  params = dict(params)
  layers = [params.pop(f"{prefix}_{i}") for i in range(num_layers)]
  params[f"{prefix}_stack"] = {"layer": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
  return params


class EncoderOutput(NamedTuple):
  """What a fusion encoder returns.

  text [B,Lt,Dt] and image [B,Li,Di]: the final states. text_unimodal / image_unimodal: the last states
  that have not seen the other modality (ITC reads these; for single_stream they are the embeddings).
  """

  text: jax.Array
  image: jax.Array
  text_unimodal: jax.Array
  image_unimodal: jax.Array


def unimodal_stack(
    s: StreamSettings, prefix: str, num_layers: int, x: jax.Array, mask: jax.Array,
    deterministic: bool,
) -> jax.Array:
  """A stream's own self-attention layers `<prefix>_i`, ending with `<prefix>_final_norm` if pre-LN."""
  if num_layers <= 0:
    return x
  x = s.stack(prefix, num_layers, x, mask, None, None, deterministic)
  return s.final_norm(x, f"{prefix}_final_norm")
