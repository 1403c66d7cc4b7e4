"""`model.text.init_from` / `model.image.init_from`: start a stream from a pretrained unimodal checkpoint.

`apply(config, params)` runs after the model is initialised. The text stream of any family is loaded from
a BERT checkpoint directory, the image stream from a ViT (`ViTModel`) or CLIP vision (`CLIPVisionModel`)
one; every other parameter keeps its fresh value. What counts as a stream's layers (docs/convert.md):

  text  BERT embeddings -> text_embeddings; BERT layer i -> encoder/text_layer_i (the families with a
        text stack), or -> encoder/layer_i of a post-LN joint stack (single_stream, as VisualBERT and UNITER
        start from BERT); the BERT pooler -> pooler. Longer BERT position tables are cut to `text.max_len`.
  image ViT/CLIP patch conv, [CLS] and position table -> image_embeddings (the table resized to the patch
        grid when it differs); layer i -> encoder/image_layer_i, or -> encoder/layer_i (+ the final
        LayerNorm from ViT) of a pre-LN joint stack (single_stream with pre_norm, as ViLT starts from ViT).
        Needs `image.input='patches'`.

Extra checkpoint layers are left out and missing ones stay fresh; the report says which.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vlfusion.configuration import ConfigError
from vlfusion.convert import layouts
from vlfusion.convert.hf_files import CheckpointError, HfCheckpoint, load_directory
from vlfusion.convert.huggingface import place
from vlfusion.convert.layouts import Params, prefixed

log = logging.getLogger(__name__)


@dataclasses.dataclass
class InitReport:
  """What `apply` did.

  Attributes:
    loaded: config field ("model.text.init_from") -> the vlfusion parameters it set ('/'-joined).
    fresh: vlfusion parameters no checkpoint set (they keep their initial values).
    unused: config field -> checkpoint tensors that were not used.
    notes: where the loaded weights compute something other than the checkpoint did, or were adapted.
  """

  loaded: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  fresh: list[str] = dataclasses.field(default_factory=list)
  unused: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    lines = [f"{field}: loaded {len(names)} parameters, left out {len(self.unused.get(field, []))} "
             "checkpoint tensors" for field, names in self.loaded.items()]
    lines.append(f"freshly initialised: {len(self.fresh)} parameters")
    lines += [f"note: {n}" for n in self.notes]
    return "\n".join(lines)


def _error(field: str, path: str, message: str) -> ConfigError:
  return ConfigError(f"config.{field}={path!r}: {message}")


def _expect(field: str, path: str, source: str, theirs: Any, ours_field: str, ours: Any) -> None:
  if theirs != ours:
    raise _error(field, path, f"{source} has {theirs}, but config.{ours_field}={ours}")


def _layers_for(encoder_names: list[str], pattern: str) -> list[str]:
  """The encoder's layer names matching `pattern`, in depth order."""
  names = [k for k in encoder_names if re.fullmatch(pattern, k)]
  return sorted(names, key=lambda k: int(re.search(r"(\d+)$", k).group(1)))


def _text(m: Any, encoder_names: list[str], ck: HfCheckpoint, path: str,
          notes: list[str]) -> Params:
  field, t = "model.text.init_from", m.text
  hf = ck.config
  for theirs, ours in (("hidden_size", "hidden_size"), ("num_attention_heads", "num_heads"),
                       ("intermediate_size", "mlp_dim"), ("vocab_size", "vocab_size"),
                       ("type_vocab_size", "type_vocab_size")):
    _expect(field, path, f"{ck.source} {theirs}", hf[theirs], f"model.text.{ours}", t[ours])
  if hf.get("hidden_act", "gelu") != "gelu":
    notes.append(f"{field}: the checkpoint's hidden_act={hf['hidden_act']!r}; vlfusion uses exact GELU")
  emb = layouts.bert_text_embeddings(ck)
  table = emb[("position_embeddings", "embedding")]
  if table.shape[0] < t.max_len:
    raise _error(field, path, f"{ck.source} has {table.shape[0]} positions (max_position_embeddings), "
                 f"fewer than config.model.text.max_len={t.max_len}")
  if table.shape[0] > t.max_len:
    emb[("position_embeddings", "embedding")] = table[:t.max_len]
    notes.append(f"{field}: position table cut from {table.shape[0]} to model.text.max_len={t.max_len} rows")
  out = prefixed(("text_embeddings",), emb)
  targets = _layers_for(encoder_names, r"text_layer_\d+")
  if not targets and m.fusion in ("single_stream", "merged_attention") and not m.pre_norm:
    targets = _layers_for(encoder_names, r"layer_\d+")
  n = hf["num_hidden_layers"]
  for i, name in enumerate(targets[:n]):
    out.update(prefixed(("encoder", name), layouts.bert_layer(ck, f"encoder.layer.{i}", t.num_heads)))
  if n != len(targets):
    notes.append(f"{field}: the checkpoint has {n} layers and the text stream {len(targets)}; "
                 f"loaded {min(n, len(targets))}")
  if "pooler.dense.weight" in ck.tensors:
    out.update(prefixed(("pooler", "dense"), layouts.dense(ck, "pooler.dense")))
  return out


def _image(m: Any, encoder_names: list[str], ck: HfCheckpoint, path: str,
           notes: list[str]) -> Params:
  field, im = "model.image.init_from", m.image
  hf = ck.config
  clip = ck.model_type == "clip_vision_model"
  for theirs, ours in (("hidden_size", "hidden_size"), ("num_attention_heads", "num_heads"),
                       ("intermediate_size", "mlp_dim"), ("patch_size", "patch_size")):
    _expect(field, path, f"{ck.source} {theirs}", hf[theirs], f"model.image.{ours}", im[ours])
  if hf.get("num_channels", 3) != 3:
    raise _error(field, path, f"{ck.source} has num_channels={hf['num_channels']}; images are RGB")
  d = im.hidden_size
  e = "embeddings"
  if clip:
    patch = layouts.conv(ck.get(f"{e}.patch_embedding.weight"), None)
    cls = ck.get(f"{e}.class_embedding").reshape(1, d)
    table = ck.get(f"{e}.position_embedding.weight").reshape(-1, d)
    notes.append(f"{field}: CLIP's patch conv has no bias (set to zero); its pre_layrnorm (before the "
                 "first layer) has no place in vlfusion and is left out; its layers use quick_gelu where "
                 "vlfusion uses exact GELU, so the loaded stream is a starting point, not CLIP's function")
  else:
    patch = layouts.conv(ck.get(f"{e}.patch_embeddings.projection.weight"),
                         ck.get(f"{e}.patch_embeddings.projection.bias"))
    cls = ck.get(f"{e}.cls_token").reshape(1, d)
    table = ck.get(f"{e}.position_embeddings").reshape(-1, d)
    if hf.get("hidden_act", "gelu") != "gelu":
      notes.append(f"{field}: the checkpoint's hidden_act={hf['hidden_act']!r}; vlfusion uses exact GELU")
  grid = im.image_size // im.patch_size
  if table.shape[0] != grid * grid + 1:
    from vlfusion.models.embeddings import interpolate_positions

    old = int(round((table.shape[0] - 1) ** 0.5))
    resized = np.asarray(interpolate_positions(jnp.asarray(table[1:]), (grid, grid))[0])
    table = np.concatenate([table[:1], resized], axis=0)
    notes.append(f"{field}: position table resized from a {old}x{old} to a {grid}x{grid} patch grid "
                 "(bilinear, align_corners)")
  out = {("image_embeddings", "patch_proj", k[0]): v for k, v in patch.items()}
  out[("image_embeddings", "cls")] = cls
  out[("image_embeddings", "position_embeddings")] = table
  targets = _layers_for(encoder_names, r"image_layer_\d+")
  joint = not targets and m.fusion in ("single_stream", "merged_attention") and m.pre_norm
  if joint:
    targets = _layers_for(encoder_names, r"layer_\d+")
  if targets and not m.pre_norm:
    notes.append(f"{field}: ViT/CLIP layers are pre-LN but model.pre_norm=False: the loaded layers run "
                 "post-LN")
  n = hf["num_hidden_layers"]
  layer = layouts.clip_layer if clip else layouts.vit_layer
  prefix = "encoder.layers" if clip else "encoder.layer"
  for i, name in enumerate(targets[:n]):
    out.update(prefixed(("encoder", name), layer(ck, f"{prefix}.{i}", im.num_heads)))
  if n != len(targets):
    notes.append(f"{field}: the checkpoint has {n} layers and the image stream {len(targets)}; "
                 f"loaded {min(n, len(targets))}")
  if joint and not clip and "final_norm" in encoder_names and n <= len(targets):
    out.update(prefixed(("encoder", "final_norm"), layouts.layer_norm(ck, "layernorm")))
  return out


def _load(field: str, path: str, kinds: tuple[str, ...]) -> HfCheckpoint:
  try:
    ck = load_directory(path, field=f"config.{field}")
  except CheckpointError as e:
    raise ConfigError(str(e)) from e
  if ck.model_type not in kinds:
    raise _error(field, path, f"{ck.source} is a {ck.model_type!r} checkpoint; expected one of {kinds}")
  return ck


def apply(config: Any, params: Any) -> tuple[Any, InitReport]:
  """Loads `config.model.text.init_from` and `config.model.image.init_from` (when set) into `params`.

  `config` is a run config (or its `model`); `params` the model's parameters, plain, boxed with logical
  names or sharded (each leaf keeps its kind). Returns the new parameters and an `InitReport`, whose
  summary is also logged. Raises `ConfigError` naming the field for a missing directory, a checkpoint of
  the wrong kind or shapes that do not fit the config.
  """
  m = config.model if "model" in config else config
  report = InitReport()
  encoder = params.get("encoder", {}) if hasattr(params, "get") else {}
  encoder_names = list(encoder)
  converted: Params = {}
  for field, path, kinds, convert in (
      ("model.text.init_from", m.text.init_from, ("bert",), _text),
      ("model.image.init_from", m.image.init_from, ("vit", "clip_vision_model"), _image),
  ):
    if not path:
      continue
    if field == "model.image.init_from" and m.image.input != "patches":
      raise _error(field, path, f"a ViT/CLIP checkpoint initialises patch inputs, but "
                   f"config.model.image.input={m.image.input!r}")
    ck = _load(field, path, kinds)
    part = convert(m, encoder_names, ck, path, report.notes)
    try:
      params, _ = place(params, part, ck.source, field=f"config.{field}")
    except CheckpointError as e:
      raise ConfigError(str(e)) from e
    report.loaded[field] = sorted("/".join(k) for k in part)
    report.unused[field] = ck.unused()
    converted.update(part)
  flat = traverse_util.flatten_dict(params)
  report.fresh = sorted("/".join(k) for k in flat if k not in converted)
  if report.loaded:
    log.info("init_from:\n%s\nloaded: %s\nfresh: %s", report.summary(), report.loaded, report.fresh)
  return params, report
