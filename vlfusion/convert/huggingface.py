"""`from_huggingface`: an HF BertModel, LxmertModel, VisualBertModel or ViltModel as a vlfusion model.

Each converter returns a run-style `config.model` (built from `configuration.base_config()`) and the
parameters it implies. How each architecture maps (docs/design.md, "Conversion"):

  bert        -> co_attention with the BERT layers as the text stream and no image or fusion layers, so
                 `text_hidden` and `pooled` are BertModel's outputs; the (unused) image embedding is fresh.
  lxmert      -> co_attention, order cross_self_ffn, share_weights=True (one `visual_attention` serves both
                 directions), l/r/x layers as text/image/fusion layers, image.embedding="lxmert".
  visual_bert -> single_stream over regions, image.embedding="visualbert", modality-type rows zero
                 (VisualBERT has none; its visual type/position rows live in the region embedding).
  vilt        -> single_stream over patches, pre_norm, final LayerNorm, image.embedding="vilt".
"""

from __future__ import annotations

import logging
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from vlfusion import configuration
from vlfusion.convert import layouts
from vlfusion.convert.hf_files import CheckpointError, HfCheckpoint, load
from vlfusion.convert.layouts import Params, prefixed

log = logging.getLogger(__name__)


def _check_activation(hf: dict[str, Any], source: str, key: str = "hidden_act") -> None:
  act = hf.get(key, "gelu")
  if act != "gelu":
    raise CheckpointError(
        f"{source}: {key}={act!r} is not supported; vlfusion layers use exact (erf) GELU ('gelu')")


def _model_config(hf: dict[str, Any], source: str) -> ml_collections.ConfigDict:
  """The defaults, with the text stream and the shared knobs read from a BERT-like HF config."""
  _check_activation(hf, source)
  position = hf.get("position_embedding_type", "absolute")
  if position != "absolute":
    raise CheckpointError(f"{source}: position_embedding_type={position!r} is not supported (absolute only)")
  m = configuration.base_config().model
  d, heads, mlp = hf["hidden_size"], hf["num_attention_heads"], hf["intermediate_size"]
  m.heads = ()
  m.text.update(hidden_size=d, num_heads=heads, mlp_dim=mlp, vocab_size=hf["vocab_size"],
                max_len=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2))
  m.image.update(hidden_size=d, num_heads=heads, mlp_dim=mlp)
  m.dropout = float(hf.get("hidden_dropout_prob", 0.1))
  m.attention_dropout = float(hf.get("attention_probs_dropout_prob", 0.1))
  m.layer_norm_eps = float(hf.get("layer_norm_eps", 1e-12))
  return m


def _bert(ck: HfCheckpoint) -> tuple[ml_collections.ConfigDict, Params]:
  hf = ck.config
  m = _model_config(hf, ck.source)
  m.fusion = "co_attention"
  n = hf["num_hidden_layers"]
  m.text.num_layers, m.image.num_layers, m.fusion_layers = n, 0, 0
  heads = m.text.num_heads
  p = prefixed(("text_embeddings",), layouts.bert_text_embeddings(ck))
  for i in range(n):
    p.update(prefixed(("encoder", f"text_layer_{i}"), layouts.bert_layer(ck, f"encoder.layer.{i}", heads)))
  if "pooler.dense.weight" in ck.tensors:
    p.update(prefixed(("pooler", "dense"), layouts.dense(ck, "pooler.dense")))
  return m, p


def _lxmert(ck: HfCheckpoint) -> tuple[ml_collections.ConfigDict, Params]:
  hf = ck.config
  m = _model_config(hf, ck.source)
  m.layer_norm_eps = 1e-12  # HF's LXMERT hard-codes it.
  m.fusion = "co_attention"
  m.text.num_layers, m.image.num_layers, m.fusion_layers = hf["l_layers"], hf["r_layers"], hf["x_layers"]
  m.cross.update(order="cross_self_ffn", share_weights=True, direction="both")
  m.image.update(input="regions", embedding="lxmert", feature_dim=hf["visual_feat_dim"],
                 box_dim=hf["visual_pos_dim"])
  h = m.text.num_heads
  p = prefixed(("text_embeddings",), layouts.bert_text_embeddings(ck))
  v = "encoder.visn_fc"
  p.update(prefixed(("image_embeddings", "feature_proj"), layouts.dense(ck, f"{v}.visn_fc")))
  p.update(prefixed(("image_embeddings", "feature_norm"), layouts.layer_norm(ck, f"{v}.visn_layer_norm")))
  p.update(prefixed(("image_embeddings", "box_proj"), layouts.dense(ck, f"{v}.box_fc")))
  p.update(prefixed(("image_embeddings", "box_norm"), layouts.layer_norm(ck, f"{v}.box_layer_norm")))
  for i in range(m.text.num_layers):
    p.update(prefixed(("encoder", f"text_layer_{i}"), layouts.bert_layer(ck, f"encoder.layer.{i}", h)))
  for i in range(m.image.num_layers):
    p.update(prefixed(("encoder", f"image_layer_{i}"), layouts.bert_layer(ck, f"encoder.r_layers.{i}", h)))
  for i in range(m.fusion_layers):
    x, ours = f"encoder.x_layers.{i}", ("encoder", f"fusion_layer_{i}")
    p.update(prefixed((*ours, "text_cross"), layouts.attention_sublayer(
        ck, f"{x}.visual_attention.att.query", f"{x}.visual_attention.att.key",
        f"{x}.visual_attention.att.value", f"{x}.visual_attention.output.dense",
        f"{x}.visual_attention.output.LayerNorm", h)))
    for stream, lang in (("text_layer", "lang"), ("image_layer", "visn")):
      p.update(prefixed((*ours, stream, "self_attention"),
                        layouts.bert_attention(ck, f"{x}.{lang}_self_att", h)))
      p.update(prefixed((*ours, stream, "mlp"), layouts.mlp_sublayer(
          ck, f"{x}.{lang}_inter.dense", f"{x}.{lang}_output.dense", f"{x}.{lang}_output.LayerNorm")))
  p.update(prefixed(("pooler", "dense"), layouts.dense(ck, "pooler.dense")))
  return m, p


def _visual_bert(ck: HfCheckpoint) -> tuple[ml_collections.ConfigDict, Params]:
  hf = ck.config
  if hf.get("bypass_transformer"):
    raise CheckpointError(
        f"{ck.source}: bypass_transformer=True (VisualBERT's text-only path) is not supported")
  m = _model_config(hf, ck.source)
  m.fusion = "single_stream"
  m.text.num_layers, m.image.num_layers, m.fusion_layers = 0, 0, hf["num_hidden_layers"]
  m.image.update(input="regions", embedding="visualbert", feature_dim=hf["visual_embedding_dim"])
  d = m.text.hidden_size
  p = prefixed(("text_embeddings",), layouts.bert_text_embeddings(ck))
  e = "embeddings"
  p.update(prefixed(("image_embeddings", "feature_proj"), layouts.dense(ck, f"{e}.visual_projection")))
  p[("image_embeddings", "type_embedding")] = ck.get(f"{e}.visual_token_type_embeddings.weight")[1]
  p[("image_embeddings", "position_embedding")] = ck.get(f"{e}.visual_position_embeddings.weight")[0]
  p.update(prefixed(("image_embeddings", "norm"), layouts.layer_norm(ck, f"{e}.LayerNorm")))
  p[("encoder", "modality_type_embeddings", "embedding")] = np.zeros((2, d), np.float32)
  for i in range(m.fusion_layers):
    p.update(prefixed(("encoder", f"layer_{i}"), layouts.bert_layer(ck, f"encoder.layer.{i}",
                                                                    m.text.num_heads)))
  p.update(prefixed(("pooler", "dense"), layouts.dense(ck, "pooler.dense")))
  return m, p


def _vilt(ck: HfCheckpoint) -> tuple[ml_collections.ConfigDict, Params]:
  hf = ck.config
  if hf.get("num_channels", 3) != 3:
    raise CheckpointError(f"{ck.source}: num_channels={hf['num_channels']}; vlfusion images are RGB")
  m = _model_config(hf, ck.source)
  m.fusion = "single_stream"
  m.pre_norm = True
  m.text.num_layers, m.image.num_layers, m.fusion_layers = 0, 0, hf["num_hidden_layers"]
  m.image.update(input="patches", embedding="vilt", image_size=hf["image_size"],
                 patch_size=hf["patch_size"])
  d = m.text.hidden_size
  e = "embeddings"
  p = prefixed(("text_embeddings",), layouts.bert_text_embeddings(ck, f"{e}.text_embeddings"))
  p.update(prefixed(("image_embeddings", "patch_proj"), layouts.conv(
      ck.get(f"{e}.patch_embeddings.projection.weight"), ck.get(f"{e}.patch_embeddings.projection.bias"))))
  p[("image_embeddings", "cls")] = ck.get(f"{e}.cls_token").reshape(1, d)
  p[("image_embeddings", "position_embeddings")] = ck.get(f"{e}.position_embeddings").reshape(-1, d)
  types = ck.get(f"{e}.token_type_embeddings.weight")
  if types.shape[0] > 2:
    log.warning("%s: modality-type rows beyond text/image (%d) are dropped: vlfusion's single_stream "
                "has two (the second-image row of NLVR2 fine-tuning is not represented)", ck.source,
                types.shape[0])
  p[("encoder", "modality_type_embeddings", "embedding")] = types[:2]
  for i in range(m.fusion_layers):
    p.update(prefixed(("encoder", f"layer_{i}"), layouts.vit_layer(ck, f"encoder.layer.{i}",
                                                                   m.text.num_heads)))
  p.update(prefixed(("encoder", "final_norm"), layouts.layer_norm(ck, "layernorm")))
  p.update(prefixed(("pooler", "dense"), layouts.dense(ck, "pooler.dense")))
  return m, p


CONVERTERS = {"bert": _bert, "lxmert": _lxmert, "visual_bert": _visual_bert, "vilt": _vilt}

# The image-text matching head of the pretraining models (LxmertForPreTraining,
# VisualBertForPreTraining): a Linear(D, 2) on the pooled output, as vlfusion's ITM head, and which of
# its two outputs means "the text matches the image" (vlfusion's label 1). VisualBERT's label 0 is a
# match, so its rows are swapped.
ITM_HEADS = {"lxmert": ("cls.seq_relationship", 1), "visual_bert": ("cls.seq_relationship", 0)}


def itm_head(ck: HfCheckpoint) -> Params:
  """The ITM head of a pretraining checkpoint as `heads_itm` parameters; empty when it has none."""
  if ck.model_type not in ITM_HEADS:
    return {}
  name, match = ITM_HEADS[ck.model_type]
  weight, bias = ck.head_tensors.get(f"{name}.weight"), ck.head_tensors.get(f"{name}.bias")
  if weight is None or bias is None:
    return {}
  order = [1 - match, match]  # vlfusion's (no match, match).
  return {("heads_itm", "classifier", "kernel"): weight[order].T,
          ("heads_itm", "classifier", "bias"): bias[order]}


def dummy_batch(model_config: Any, batch_size: int = 1) -> dict[str, np.ndarray]:
  """The smallest batch that initialises `build_model(model_config)`."""
  batch = {"text_ids": np.zeros((batch_size, 2), np.int32), "text_mask": np.ones((batch_size, 2), bool)}
  im = model_config.image
  if im.input == "regions":
    batch["regions"] = {
        "features": np.zeros((batch_size, 1, im.feature_dim), np.float32),
        "boxes": np.zeros((batch_size, 1, im.box_dim), np.float32),
        "mask": np.ones((batch_size, 1), bool),
    }
  else:
    batch["image"] = np.zeros((batch_size, im.image_size, im.image_size, 3), np.float32)
  return batch


def init_params(model_config: Any, seed: int = 0, only: set[tuple[str, ...]] | None = None) -> Any:
  """Freshly initialised, unboxed parameters of `build_model(model_config)`, as a flat {path: array}.

  With `only`, just those paths: the jitted init then keeps only their random draws, which compiles
  in a fraction of the time a whole model takes.
  """
  from vlfusion.models import build_model

  model = build_model(model_config)
  batch = dummy_batch(model_config)

  def init(rng: jax.Array) -> dict[tuple[str, ...], jax.Array]:
    flat = traverse_util.flatten_dict(nn.unbox(model.init(rng, batch)["params"]))
    return {"/".join(k): v for k, v in flat.items() if only is None or k in only}

  out = jax.jit(init)(jax.random.PRNGKey(seed))
  return {tuple(k.split("/")): v for k, v in out.items()}


def abstract_params(model_config: Any) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Shapes and dtypes of `build_model(model_config)`'s parameters (nothing is computed)."""
  from vlfusion.models import build_model

  model = build_model(model_config)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy_batch(model_config))
  return traverse_util.flatten_dict(nn.unbox(variables["params"]))


def _shape(leaf: Any) -> tuple[int, ...]:
  return tuple((leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf).shape)


def _replace(leaf: Any, value: np.ndarray) -> Any:
  """`value` in the place of `leaf`, keeping its box (logical names), dtype and sharding."""
  if isinstance(leaf, nn.meta.AxisMetadata):
    return leaf.replace_boxed(_replace(leaf.unbox(), value))
  value = np.asarray(value).astype(leaf.dtype)
  if isinstance(leaf, jax.Array):
    return jax.device_put(value, leaf.sharding)
  return jax.numpy.asarray(value)


def place(params: Any, converted: Params, source: str, field: str = "") -> tuple[Any, list[str]]:
  """Returns `params` with the `converted` leaves put in; fails on a name or shape that does not fit.

  `params` may be plain, boxed with logical names, or sharded: each leaf keeps its kind. Also returns
  the '/'-joined names of the parameters left as they were. `field` names the config setting in errors.
  """
  flat = traverse_util.flatten_dict(params)
  where = f"{field}={source!r}" if field else source
  for path, value in converted.items():
    name = "/".join(path)
    if path not in flat:
      raise CheckpointError(f"{where}: converted parameter {name} does not exist in the vlfusion model")
    if _shape(flat[path]) != tuple(value.shape):
      raise CheckpointError(
          f"{where}: parameter {name} has shape {tuple(value.shape)} in the checkpoint but "
          f"{_shape(flat[path])} in the vlfusion model")
    flat[path] = _replace(flat[path], value)
  untouched = sorted("/".join(p) for p in flat if p not in converted)
  return traverse_util.unflatten_dict(flat), untouched


def from_huggingface(
    model_or_dir: Any, *, seed: int = 0, return_report: bool = False
) -> tuple[ml_collections.ConfigDict, Any] | tuple[ml_collections.ConfigDict, Any, dict[str, list[str]]]:
  """Converts an HF BertModel, LxmertModel, VisualBertModel or ViltModel into vlfusion.

  `model_or_dir` is a transformers model object or a local directory holding config.json and
  *.safetensors (pickled weights are never read). Returns `(model_config, params)`: `model_config` is a
  full `config.model` (`build_model(model_config)` accepts it; `heads` is empty, as the HF base models
  have none, or `("itm",)` for an LXMERT / VisualBERT pretraining checkpoint, whose image-text matching
  head converts: `ITM_HEADS`) and `params` plain arrays for `apply({'params': params}, batch)`.
  Parameters the checkpoint does not hold (e.g. BERT's unused image embedding) stay freshly initialised
  from `seed`; they are logged, and with `return_report=True` a third value {'loaded': [...], 'fresh':
  [...], 'unused': [...]} lists them and the checkpoint tensors left out (task heads other than ITM are
  dropped beforehand).
  """
  ck = load(model_or_dir)
  if ck.model_type not in CONVERTERS:
    raise CheckpointError(
        f"{ck.source}: model_type={ck.model_type!r} cannot be converted; supported: {sorted(CONVERTERS)}")
  model_config, converted = CONVERTERS[ck.model_type](ck)
  itm = itm_head(ck)
  if itm:
    model_config.heads = ("itm",)
    converted.update(itm)
  abstract = abstract_params(model_config)
  missing = {p for p in abstract if p not in converted}
  fresh_values = init_params(model_config, seed, only=missing) if missing else {}
  params, fresh = place(traverse_util.unflatten_dict({**abstract, **fresh_values}), converted, ck.source)
  if fresh:
    log.info("from_huggingface(%s): %d parameters not in the checkpoint stay freshly initialised: %s",
             ck.source, len(fresh), ", ".join(fresh))
  if return_report:
    return model_config, params, {"loaded": sorted("/".join(p) for p in converted), "fresh": fresh,
                                  "unused": ck.unused()}
  return model_config, params
