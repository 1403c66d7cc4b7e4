"""Reading HF transformers checkpoints: a model object or a local directory of config.json + safetensors.

Only safetensors files are read (never pickles / `torch.load`). Tensors come back as numpy float arrays
under their HF names, with the task-head wrapper prefix (`bert.`, `vilt.`, `vision_model.`, ...) removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import numpy as np


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or converted; the message names the file or the field."""


@dataclasses.dataclass
class HfCheckpoint:
  """An HF checkpoint as plain data.

  Attributes:
    model_type: HF `config.model_type` ("bert", "lxmert", "visual_bert", "vilt", "vit", "clip_vision_model").
    config: the HF config as a dict (for CLIP, its vision config).
    tensors: HF parameter name (wrapper prefix removed) -> float numpy array.
    source: where it came from, for messages.
    used: the names `get` has read.
    head_tensors: the tensors outside the wrapper prefix of a task model (its heads, e.g. LXMERT's
      `cls.seq_relationship.*`), by their saved names; empty for a base model.
  """

  model_type: str
  config: dict[str, Any]
  tensors: dict[str, np.ndarray]
  source: str
  used: set[str] = dataclasses.field(default_factory=set)
  head_tensors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` (recorded as used, so that `unused()` lists what a conversion left out)."""
    self.used.add(name)
    if name not in self.tensors:
      raise CheckpointError(
          f"{self.source}: tensor {name!r} is missing from the {self.model_type} checkpoint")
    return self.tensors[name]

  def unused(self) -> list[str]:
    return sorted(set(self.tensors) - self.used)


# Wrapper prefixes of task-head models (BertForMaskedLM saves "bert.embeddings...", and so on).
PREFIXES = {
    "bert": ("bert.",),
    "lxmert": ("lxmert.",),
    "visual_bert": ("visual_bert.",),
    "vilt": ("vilt.",),
    "vit": ("vit.",),
    "clip_vision_model": ("vision_model.",),
    "clip": ("vision_model.",),
}

# transformers 5 ViT modules are named differently from the checkpoints it writes; map the module names
# onto the (saved) checkpoint names so a model object and its saved directory read alike.
_VIT_MODULE_NAMES = (
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
)


def _strip_prefix(tensors: dict[str, np.ndarray], model_type: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(the base model's tensors without the wrapper prefix, the task model's other tensors)."""
  for prefix in PREFIXES.get(model_type, ()):
    if any(k.startswith(prefix) for k in tensors):
      return ({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
              {k: v for k, v in tensors.items() if not k.startswith(prefix)})
  return tensors, {}


def _normalise_names(tensors: dict[str, np.ndarray], model_type: str) -> dict[str, np.ndarray]:
  if model_type != "vit":
    return tensors
  out = {}
  for name, value in tensors.items():
    for pattern, repl in _VIT_MODULE_NAMES:
      new = re.sub(pattern, repl, name)
      if new != name:
        name = new
        break
    out[name] = value
  return out


def _finish(model_type: str, config: dict[str, Any], tensors: dict[str, np.ndarray],
            source: str) -> HfCheckpoint:
  if model_type == "clip":  # a full CLIPModel: keep its vision tower.
    config = dict(config.get("vision_config") or {})
    model_type = "clip_vision_model"
  # bfloat16 (an ml_dtypes type, not a numpy floating type) is widened to float32; integer buffers
  # (position_ids) are dropped.
  tensors = {k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in tensors.items()}
  tensors = {k: v for k, v in tensors.items() if np.issubdtype(v.dtype, np.floating)}
  tensors, heads = _strip_prefix(tensors, model_type)
  return HfCheckpoint(model_type, config, _normalise_names(tensors, model_type), source, head_tensors=heads)


def _load_bfloat16(file: str) -> dict[str, np.ndarray]:
  from safetensors import safe_open

  out = {}
  with safe_open(file, framework="flax") as f:
    for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping.
      x = np.asarray(f.get_tensor(key))
      out[key] = x.astype(np.float32) if x.dtype.name == "bfloat16" else x
  return out


def load_directory(path: str, field: str = "checkpoint directory") -> HfCheckpoint:
  """Reads `path`/config.json and every `path`/*.safetensors; `field` names the setting in errors."""
  from safetensors.numpy import load_file

  if not os.path.isdir(path):
    raise CheckpointError(f"{field}={path!r}: no such directory")
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise CheckpointError(f"{field}={path!r}: {config_path} is missing (an HF checkpoint needs config.json)")
  with open(config_path) as f:
    config = json.load(f)
  files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not files:
    pickles = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    hint = ""
    if pickles:
      hint = f" (found {pickles}: pickled weights are not read; re-save with safe_serialization)"
    raise CheckpointError(f"{field}={path!r}: no *.safetensors file in the directory{hint}")
  tensors: dict[str, np.ndarray] = {}
  for name in files:
    file = os.path.join(path, name)
    try:
      tensors.update(load_file(file))
    except TypeError:  # numpy has no bfloat16: read through JAX's dtypes, then widen to float32.
      tensors.update(_load_bfloat16(file))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named.
      raise CheckpointError(f"{field}={path!r}: cannot read {file}: {e}") from e
  model_type = config.get("model_type", "")
  if not model_type:
    raise CheckpointError(f"{field}={path!r}: {config_path} has no model_type")
  return _finish(model_type, config, tensors, config_path)


def load_model(model: Any) -> HfCheckpoint:
  """Reads an HF `PreTrainedModel` object's config and state dict (weights copied to numpy float32)."""
  config = model.config.to_dict()
  tensors = {
      k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
      for k, v in model.state_dict().items()
  }
  return _finish(model.config.model_type, config, tensors, type(model).__name__)


def load(model_or_dir: Any, field: str = "checkpoint directory") -> HfCheckpoint:
  """A checkpoint from an HF model object or a local directory path."""
  if isinstance(model_or_dir, (str, os.PathLike)):
    return load_directory(os.fspath(model_or_dir), field)
  if hasattr(model_or_dir, "state_dict") and hasattr(model_or_dir, "config"):
    return load_model(model_or_dir)
  raise CheckpointError(
      f"expected an HF transformers model or a checkpoint directory, got {type(model_or_dir).__name__}")
