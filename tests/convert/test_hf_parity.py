"""Converted HF models (BERT, LXMERT, VisualBERT, ViLT) reproduce HF's outputs at valid positions.

Small random HF configs on CPU in float32, with padding in both the text and the image inputs.
"""

import jax
import numpy as np
import pytest
import torch

from vlfusion import configuration
from vlfusion.convert import from_huggingface
from vlfusion.models import build_model

transformers = pytest.importorskip("transformers")

TOL = 1e-4
SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, vocab_size=60,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
VALID_TEXT = (7, 4)  # row 1 has a padded tail.
VALID_REGIONS = (5, 3)


def _randomise(model, seed=0):
  """Weights far from HF's near-zero init, so that every parameter matters to the outputs."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 0.2)
  return model.eval()


def _text(seed=0, length=7, vocab=60):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (2, length)).astype(np.int32)
  mask = np.arange(length)[None, :] < np.asarray(VALID_TEXT)[:, None]
  return ids, mask


def _regions(feature_dim, seed=1, count=5):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(2, count, feature_dim)).astype(np.float32)
  boxes = rng.uniform(size=(2, count, 4)).astype(np.float32)
  mask = np.arange(count)[None, :] < np.asarray(VALID_REGIONS)[:, None]
  return feats, boxes, mask


def _run(model_config, params, batch):
  full = configuration.base_config()
  full.model = model_config.copy_and_resolve_references()
  full.model.heads = ("itm",)  # base models come without heads; a run adds the ones it trains.
  full.objectives.mlm = 0.0
  full.data.max_text_len = min(full.data.max_text_len, model_config.text.max_len)
  configuration.validate(full)  # the converted config is a valid run config.
  out = jax.jit(build_model(model_config).apply)({"params": params}, batch)
  return {k: np.asarray(v) for k, v in out.items()}


def _max_diff(pairs):
  return max(float(np.max(np.abs(a - b))) for a, b in pairs)


def _valid_rows(ours, theirs, valid):
  return [(ours[i, :n], theirs[i, :n]) for i, n in enumerate(valid)]


def test_bert_text_stream_matches_bert_model():
  hf = _randomise(transformers.BertModel(transformers.BertConfig(num_hidden_layers=2, **SMALL)))
  config, params, report = from_huggingface(hf, return_report=True)
  assert config.fusion == "co_attention" and config.fusion_layers == 0
  assert not any(n.startswith(("text_embeddings", "encoder", "pooler")) for n in report["fresh"])
  assert not report["unused"]
  ids, mask = _text()
  feats, boxes, rmask = _regions(config.image.feature_dim)
  ours = _run(config, params, {"text_ids": ids, "text_mask": mask,
                               "regions": {"features": feats, "boxes": boxes, "mask": rmask}})
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).long())
  diff = _max_diff(_valid_rows(ours["text_hidden"], ref.last_hidden_state.numpy(), VALID_TEXT)
                   + [(ours["pooled"], ref.pooler_output.numpy())])
  print(f"BERT max abs diff {diff:.2e}")
  assert diff < TOL


def test_lxmert_matches_hf():
  cfg = transformers.LxmertConfig(l_layers=2, r_layers=1, x_layers=2, visual_feat_dim=24,
                                  visual_pos_dim=4, **SMALL)
  hf = _randomise(transformers.LxmertModel(cfg))
  config, params, report = from_huggingface(hf, return_report=True)
  assert not report["unused"] and not report["fresh"]
  assert config.cross.share_weights and config.cross.order == "cross_self_ffn"
  ids, mask = _text()
  feats, boxes, rmask = _regions(24)
  ours = _run(config, params, {"text_ids": ids, "text_mask": mask,
                               "regions": {"features": feats, "boxes": boxes, "mask": rmask}})
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).long(),
             visual_feats=torch.tensor(feats), visual_pos=torch.tensor(boxes),
             visual_attention_mask=torch.tensor(rmask).long())
  diff = _max_diff(_valid_rows(ours["text_hidden"], ref.language_output.numpy(), VALID_TEXT)
                   + _valid_rows(ours["image_hidden"], ref.vision_output.numpy(), VALID_REGIONS)
                   + [(ours["pooled"], ref.pooled_output.numpy())])
  print(f"LXMERT max abs diff {diff:.2e}")
  assert diff < TOL


def test_visual_bert_from_directory_matches_hf(tmp_path):
  cfg = transformers.VisualBertConfig(num_hidden_layers=2, visual_embedding_dim=24, **SMALL)
  hf = _randomise(transformers.VisualBertModel(cfg))
  hf.save_pretrained(tmp_path, safe_serialization=True)
  config, params, report = from_huggingface(str(tmp_path), return_report=True)
  assert not report["unused"] and not report["fresh"]
  assert config.fusion == "single_stream" and config.image.embedding == "visualbert"
  ids, mask = _text()
  feats, boxes, rmask = _regions(24)
  ours = _run(config, params, {"text_ids": ids, "text_mask": mask,
                               "regions": {"features": feats, "boxes": boxes, "mask": rmask}})
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).long(),
             visual_embeds=torch.tensor(feats), visual_attention_mask=torch.tensor(rmask).long())
  hidden = ref.last_hidden_state.numpy()
  lt = ids.shape[1]
  diff = _max_diff(_valid_rows(ours["text_hidden"], hidden[:, :lt], VALID_TEXT)
                   + _valid_rows(ours["image_hidden"], hidden[:, lt:], VALID_REGIONS)
                   + [(ours["pooled"], ref.pooler_output.numpy())])
  print(f"VisualBERT max abs diff {diff:.2e}")
  assert diff < TOL


def test_vilt_matches_hf_with_padded_images():
  cfg = transformers.ViltConfig(num_hidden_layers=2, image_size=32, patch_size=8,
                                max_position_embeddings=16, **SMALL)
  hf = _randomise(transformers.ViltModel(cfg))
  config, params, report = from_huggingface(hf, return_report=True)
  assert not report["unused"] and not report["fresh"]
  assert config.pre_norm and config.image.input == "patches"
  ids, mask = _text()
  rng = np.random.default_rng(2)
  pixels = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  pixel_mask = np.ones((2, 32, 32), np.int64)
  pixel_mask[1, 24:, :] = 0  # row 1: a 24x16 image padded to 32x32 -> 3x2 of the 4x4 patches valid.
  pixel_mask[1, :, 16:] = 0
  ours = _run(config, params, {"text_ids": ids, "text_mask": mask, "image": pixels,
                               "image_mask": pixel_mask})
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).long(),
             pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
             pixel_mask=torch.tensor(pixel_mask))
  hidden = ref.last_hidden_state.numpy()
  lt = ids.shape[1]
  pairs = _valid_rows(ours["text_hidden"], hidden[:, :lt], VALID_TEXT)
  pairs.append((ours["pooled"], ref.pooler_output.numpy()))
  # HF visits patches in a random order (torch.multinomial) and appends randomly drawn padding patches:
  # match each valid HF image token to the nearest of our valid image tokens, one to one.
  valid_patches = (16, 6)
  for row, n in enumerate(valid_patches):
    theirs = hidden[row, lt:lt + 1 + n]  # [CLS] + the valid patches come first in HF's order.
    ours_valid = ours["image_hidden"][row][np.concatenate([[True], pixel_mask[row, ::8, ::8].ravel() > 0])]
    assert ours_valid.shape == theirs.shape
    dist = np.abs(theirs[:, None, :] - ours_valid[None, :, :]).max(-1)
    nearest = dist.argmin(1)
    assert len(set(nearest.tolist())) == len(nearest), "HF image tokens must match ours one to one"
    assert nearest[0] == 0  # the image [CLS] stays first.
    pairs.append((theirs, ours_valid[nearest]))
  diff = _max_diff(pairs)
  print(f"ViLT max abs diff {diff:.2e}")
  assert diff < TOL
