"""Every fusion family: padding invariance, who sees whom, and the co-attention knobs."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.model_fixtures import pad_batch, random_batch, random_params
from vlfusion import configuration
from vlfusion.models import build_model


def tiny_fusion_config(fusion, **model):
  """A tiny config of `fusion` with every head that reads regions on (so padding reaches them all)."""
  config = configuration.base_config()
  m = config.model
  m.fusion = fusion
  m.dropout = 0.0
  m.heads = ("mlm", "itm", "mrm", "itc", "vqa")
  m.mrm.num_labels = 5
  m.vqa.num_answers = 7
  m.itc.embed_dim = 16
  m.text.num_layers, m.image.num_layers, m.fusion_layers = 1, 1, 2
  if fusion == "dual_encoder":
    m.fusion_layers = 0
    m.pooler = "product"
  if fusion == "single_stream":  # one joint stack: unimodal depths would be refused as doing nothing.
    m.text.num_layers = m.image.num_layers = 0
  for dotted, value in model.items():
    node = m
    *parents, leaf = dotted.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  configuration.validate(config)
  return config


CASES = {
    "single_stream": tiny_fusion_config("single_stream"),
    # ViLBERT's shape: a wider image stream, co-attention at its own width and heads, ReLU product pooler.
    "co_attention_vilbert": tiny_fusion_config(
        "co_attention", cross__order="coattn_ffn_self", image__hidden_size=96, image__mlp_dim=96,
        cross__hidden_size=96, cross__num_heads=2, pooler="product"),
    "co_attention_lxmert_shared": tiny_fusion_config(
        "co_attention", cross__order="cross_self_ffn", cross__share_weights=True),
    "co_attention_meter": tiny_fusion_config(
        "co_attention", cross__order="self_cross_ffn", image__pre_norm=True, image__layer_norm_eps=1e-5,
        pooler="concat"),
    "merged_attention": tiny_fusion_config("merged_attention", image__pre_norm=True),
    "one_way": tiny_fusion_config("one_way", image__hidden_size=48, image__mlp_dim=96,
                             image__pre_norm=True),
    "dual_encoder": tiny_fusion_config("dual_encoder", pre_norm=True),
}


class Jitted:
  """model.apply under jax.jit with fixed parameters (one compile per input shape, cheaper than eager)."""

  def __init__(self, model, params):
    self.params = params
    self.fn = jax.jit(lambda p, b: model.apply({"params": p}, b))

  def apply(self, variables, batch):
    return self.fn(variables["params"], batch)


def init(config, batch):
  model = build_model(config.model)
  params = random_params(model, batch)
  return Jitted(model, params), params


# Padding cases: one per family. The other co-attention cases change no masking path: the ViLBERT case
# (product pooler, cross-attention between widths) covers co_attention; tests/models/test_model.py pads the
# LXMERT order.
@pytest.mark.parametrize("case", sorted(set(CASES) - {"co_attention_lxmert_shared", "co_attention_meter"}))
def test_padding_invariance(case):
  """Outputs at valid positions, and every head's output, do not depend on the amount of padding."""
  config = CASES[case]
  valid_text, valid_regions = (5, 8, 3), (3, 4, 2)
  batch = random_batch(config, 3, 8, 4, valid_text, valid_regions)
  padded = pad_batch(batch, extra_text=5, extra_regions=3)
  model, params = init(config, batch)
  a = model.apply({"params": params}, batch)
  b = model.apply({"params": params}, padded)
  for row, (lt, lr) in enumerate(zip(valid_text, valid_regions, strict=True)):
    np.testing.assert_allclose(a["text_hidden"][row, :lt], b["text_hidden"][row, :lt], atol=2e-5)
    np.testing.assert_allclose(a["image_hidden"][row, :lr], b["image_hidden"][row, :lr], atol=2e-5)
    np.testing.assert_allclose(a["mlm_logits"][row, :lt], b["mlm_logits"][row, :lt], atol=2e-5)
    for key in ("mrm_features", "mrm_logits"):
      np.testing.assert_allclose(a[key][row, :lr], b[key][row, :lr], atol=2e-5)
  for key in ("pooled", "itm_logits", "itc_logits", "vqa_logits"):
    np.testing.assert_allclose(a[key], b[key], atol=2e-5, err_msg=key)
  # The padding is garbage that changes the outputs once unmasked: the checks above can fail.
  unmasked = dict(padded, text_mask=np.ones_like(padded["text_mask"]))
  c = model.apply({"params": params}, unmasked)
  assert not np.allclose(a["pooled"], c["pooled"], atol=1e-4)
  assert not np.allclose(a["text_hidden"][0, :5], c["text_hidden"][0, :5], atol=1e-4)


def _changed_text(config, batch):
  return dict(batch, text_ids=(batch["text_ids"] + 7) % config.model.text.vocab_size)


def _changed_image(batch):
  regions = dict(batch["regions"], features=batch["regions"]["features"] + 1.0)
  return dict(batch, regions=regions)


@pytest.mark.parametrize("case,image_sees_text,text_sees_image", [
    ("one_way", False, True),
    ("dual_encoder", False, False),
    ("merged_attention", True, True),
])
def test_information_flow(case, image_sees_text, text_sees_image):
  """one_way never updates the image; the dual encoder's streams meet only in the pooler and heads."""
  config = CASES[case]
  batch = random_batch(config, 2, 6, 4, (6, 4), (4, 2))
  model, params = init(config, batch)
  base = model.apply({"params": params}, batch)
  text = model.apply({"params": params}, _changed_text(config, batch))
  image = model.apply({"params": params}, _changed_image(batch))
  assert (not np.allclose(base["image_hidden"], text["image_hidden"], atol=1e-6)) == image_sees_text
  assert (not np.allclose(base["text_hidden"], image["text_hidden"], atol=1e-6)) == text_sees_image
  # Every family's pooled output (hence ITM) depends on both modalities.
  assert not np.allclose(base["pooled"], image["pooled"], atol=1e-6)
  assert not np.allclose(base["pooled"], text["pooled"], atol=1e-6)


def test_parameter_layout_of_families():
  """Stage names stay stable: unrolled layers are `<stage>_<i>` children of the encoder."""
  batch = random_batch(CASES["single_stream"], 1, 4, 2, (4,), (2,))
  shapes = {}
  for case in ("merged_attention", "one_way", "co_attention_vilbert", "co_attention_meter"):
    model = build_model(CASES[case].model)
    shapes[case] = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"])
  merged = shapes["merged_attention"]["encoder"]
  assert {"text_layer_0", "image_layer_0", "image_layer_final_norm", "layer_0", "layer_1",
          "modality_type_embeddings"} <= set(merged)
  one_way = shapes["one_way"]["encoder"]
  assert {"text_layer_0", "image_layer_0", "fusion_layer_0", "fusion_layer_1"} <= set(one_way)
  # Text (64 wide) queries cross-attend into the 48-wide image: keys project 48 -> 64.
  cross = one_way["fusion_layer_0"]["cross_attention"]["attention"]
  assert cross["query"]["kernel"].shape == (64, 4, 16)
  assert cross["key"]["kernel"].shape == (48, 4, 16)
  assert "cross_attention" not in one_way["text_layer_0"]
  # ViLBERT: co-attention is 96 wide with 2 heads in both directions, outputs at each stream's width.
  vil = shapes["co_attention_vilbert"]["encoder"]["fusion_layer_0"]
  text_co = vil["text_coattention"]["cross_attention"]["attention"]
  assert text_co["query"]["kernel"].shape == (64, 2, 48)
  assert text_co["key"]["kernel"].shape == (96, 2, 48)
  assert text_co["out"]["kernel"].shape == (2, 48, 64)
  assert vil["image_coattention"]["cross_attention"]["attention"]["out"]["kernel"].shape == (2, 48, 96)
  assert "self_attention" not in vil["text_coattention"]
  # METER: a pre-LN image encoder ends with a LayerNorm; post-LN text and fusion layers do not.
  meter = shapes["co_attention_meter"]["encoder"]
  assert "image_layer_final_norm" in meter and "text_layer_final_norm" not in meter
  assert "text_final_norm" not in meter


def test_per_stream_norm_settings():
  """image.pre_norm / image.layer_norm_eps reach the image encoder only."""
  from vlfusion.models.stream import StreamSettings
  m = CASES["co_attention_meter"].model
  assert StreamSettings.from_config(m, "image").pre_norm is True
  assert StreamSettings.from_config(m, "image").layer_norm_eps == 1e-5
  assert StreamSettings.from_config(m, "image", own_norm=False).pre_norm is False
  assert StreamSettings.from_config(m, "text").pre_norm is False
  assert StreamSettings.from_config(m, "text").layer_norm_eps == 1e-12
