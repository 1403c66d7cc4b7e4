"""Model outputs: shapes, padding invariance, and the two attention paths agreeing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import co_attention, single_stream
from tests.model_fixtures import pad_batch, random_batch
from vlfusion.models import build_model
from vlfusion.models.attention import MultiHeadAttention, explicit_attention

CONFIGS = {
    "single_stream": single_stream.get_config("tiny"),
    "co_attention": co_attention.get_config("tiny"),
}


def _init_and_apply(config, batch):
  model = build_model(config.model)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
  return model, params


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_output_shapes(family):
  config = CONFIGS[family]
  batch = random_batch(config, batch_size=3, text_len=7, num_regions=5,
                       valid_text=(7, 4, 2), valid_regions=(5, 1, 3))
  model, params = _init_and_apply(config, batch)
  out = model.apply({"params": params}, batch)
  d, v = config.model.text.hidden_size, config.model.text.vocab_size
  assert out["text_hidden"].shape == (3, 7, d)
  assert out["image_hidden"].shape == (3, 5, config.model.image.hidden_size)
  assert out["pooled"].shape == (3, d)
  assert out["mlm_logits"].shape == (3, 7, v)
  assert out["itm_logits"].shape == (3, 2)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in out.values())


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_padding_invariance(family):
  """Outputs at valid positions do not change when text and regions get more padding."""
  config = CONFIGS[family]
  batch = random_batch(config, text_len=8, num_regions=4, valid_text=(5, 8), valid_regions=(3, 4))
  padded = pad_batch(batch, extra_text=6, extra_regions=5)
  model, params = _init_and_apply(config, batch)
  a = model.apply({"params": params}, batch)
  b = model.apply({"params": params}, padded)
  for row, (lt, lr) in enumerate([(5, 3), (8, 4)]):
    np.testing.assert_allclose(a["text_hidden"][row, :lt], b["text_hidden"][row, :lt], atol=1e-5)
    np.testing.assert_allclose(a["image_hidden"][row, :lr], b["image_hidden"][row, :lr], atol=1e-5)
  np.testing.assert_allclose(a["pooled"], b["pooled"], atol=1e-5)
  np.testing.assert_allclose(a["itm_logits"], b["itm_logits"], atol=1e-5)
  # And the padding really is read as garbage when unmasked: the check above is not vacuous.
  unmasked = dict(padded, text_mask=np.ones_like(padded["text_mask"]))
  c = model.apply({"params": params}, unmasked)
  assert not np.allclose(a["pooled"], c["pooled"], atol=1e-5)


def test_attention_paths_agree():
  """jax.nn.dot_product_attention and the explicit softmax path agree with dropout off."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, s, 4, 8)), jnp.float32) for s in (5, 7, 7))
  mask = jnp.asarray(np.arange(7)[None, :] < np.array([[4], [7]]))[:, None, None, :]
  fast = jax.nn.dot_product_attention(q, k, v, mask=mask)
  slow = explicit_attention(q, k, v, mask, dropout=None, deterministic=True)
  np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_attention_dropout_path_is_used_in_training():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 16)), jnp.float32)
  mask = jnp.ones((2, 6), bool)
  layer = MultiHeadAttention(num_heads=2, attention_dropout=0.5)
  params = layer.init(jax.random.PRNGKey(0), x, x, mask, deterministic=True)
  eval_out = layer.apply(params, x, x, mask, deterministic=True)
  no_drop = MultiHeadAttention(num_heads=2, attention_dropout=0.0)
  np.testing.assert_allclose(
      eval_out, no_drop.apply(params, x, x, mask, deterministic=True), atol=1e-6)
  train_out = layer.apply(params, x, x, mask, deterministic=False,
                          rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(eval_out, train_out, atol=1e-4)


@pytest.mark.parametrize("order", ["cross_self_ffn", "self_cross_ffn", "coattn_ffn_self"])
@pytest.mark.parametrize("direction", ["both", "text_to_image"])
def test_co_attention_variants(order, direction):
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.cross.order = order
  config.model.cross.direction = direction
  batch = random_batch(config)
  model, params = _init_and_apply(config, batch)
  out = model.apply({"params": params}, batch)
  assert out["text_hidden"].shape[-1] == config.model.text.hidden_size
  # With text_to_image, the image stream never sees text: changing text leaves it unchanged.
  changed = dict(batch, text_ids=(batch["text_ids"] + 1) % config.model.text.vocab_size)
  out2 = model.apply({"params": params}, changed)
  same_image = np.allclose(out["image_hidden"], out2["image_hidden"], atol=1e-6)
  assert same_image == (direction == "text_to_image")


def test_shared_cross_attention_has_one_module():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.cross.share_weights = True
  batch = random_batch(config)
  _, params = _init_and_apply(config, batch)
  layer = params["encoder"]["fusion_layer_0"]
  assert "text_cross" in layer and "image_cross" not in layer
