"""The MLM decoder over the masked positions only gives the full decoder's loss, accuracy and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.model_fixtures import add_targets, random_batch, random_params
from vlfusion import configuration
from vlfusion.models import build_model
from vlfusion.training import losses

WEIGHTS = {"mlm": 1.0, "itm": 1.0}


@functools.cache
def _model_and_batch():
  config = configuration.base_config()
  config.model.text.vocab_size = 100
  model = build_model(config.model)
  batch = random_batch(config, batch_size=2, text_len=12, valid_text=(9, 12))
  return model, add_targets(config, batch), random_params(model, batch)


def _loss(params, model, batch, chunk):
  """The total loss and metrics with the full decoder (chunk None) or the masked one."""
  if chunk is None:
    outputs = model.apply({"params": params}, batch)
    return losses.total_loss(outputs, batch, WEIGHTS)
  outputs = model.apply({"params": params}, batch, decode_mlm=False)
  assert "mlm_logits" not in outputs and outputs["mlm_features"].shape == (2, 12, 64)
  decode = lambda x: model.apply({"params": params}, x, method="decode_mlm_features")
  return losses.total_loss(outputs, batch, WEIGHTS, mlm_decode=decode, mlm_chunk=chunk)


# 24 positions, about 10 of them masked: the reserved rows hold them (16), overflow (4), or cover all (40).
@pytest.mark.parametrize("chunk", [4, 16, 40])
def test_masked_decoder_matches_the_full_decoder(chunk):
  model, batch, params = _model_and_batch()
  assert 4 < batch["mlm_weights"].sum() <= 16
  grad = jax.jit(jax.grad(_loss, has_aux=True), static_argnums=(1, 3))
  full_grads, full = grad(params, model, batch, None)
  masked_grads, masked = grad(params, model, batch, chunk)
  for key in ("loss", "mlm_loss", "mlm_accuracy", "itm_loss"):
    np.testing.assert_allclose(masked[key], full[key], rtol=1e-6, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), masked_grads,
               full_grads)
  word_grad = masked_grads["text_embeddings"]["word_embeddings"]["embedding"]
  assert np.abs(word_grad).sum() > 0  # the tied decoder's gradient reaches the word table.


def test_no_masked_position_is_a_zero_loss():
  model, batch, params = _model_and_batch()
  batch = dict(batch, mlm_weights=np.zeros_like(batch["mlm_weights"]))
  _, metrics = jax.jit(_loss, static_argnums=(1, 3))(params, model, batch, 8)
  assert float(metrics["mlm_loss"]) == 0.0 and float(metrics["mlm_accuracy"]) == 0.0


def test_chunk_size_covers_the_expected_masked_positions():
  assert losses.mlm_chunk_size(160, 0.15) == 40  # 24 expected + 3 standard deviations (13.5).
  assert losses.mlm_chunk_size(10, 0.15) == 8
  assert losses.mlm_chunk_size(4, 0.5) == 4  # never more rows than positions.
  assert jnp.asarray(losses.mlm_chunk_size(8 * 40, 0.15)) % 8 == 0
