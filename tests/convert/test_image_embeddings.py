"""Image embedding variants: padded patches and the model.image.embedding setting."""

import jax
import numpy as np
import pytest

from configs.pretrain import co_attention
from vlfusion import configuration
from vlfusion.models.embeddings import PatchEmbeddings, interpolate_positions


def test_padded_image_embeds_like_the_unpadded_one():
  """A 24x16 image padded to 32x32 gives the same valid tokens as the 24x16 image alone."""
  rng = np.random.default_rng(0)
  small = rng.normal(size=(1, 24, 16, 3)).astype(np.float32)
  padded = np.concatenate([np.zeros((1, 24, 16, 3), np.float32), rng.normal(size=(1, 24, 16, 3))], 2)
  padded = np.concatenate([padded, rng.normal(size=(1, 8, 32, 3))], 1).astype(np.float32)
  padded[:, :24, :16] = small
  pixel_mask = np.zeros((1, 32, 32), bool)
  pixel_mask[:, :24, :16] = True
  layer = PatchEmbeddings(hidden_size=8, patch_size=8, image_size=32)
  params = layer.init(jax.random.PRNGKey(0), padded, deterministic=True)
  a, mask_a = layer.apply(params, small, deterministic=True)
  b, mask_b = layer.apply(params, padded, pixel_mask, deterministic=True)
  assert mask_a.all() and int(mask_b.sum()) == 1 + 3 * 2
  np.testing.assert_allclose(a, np.asarray(b)[np.asarray(mask_b)][None], atol=1e-6)


def test_same_grid_interpolation_is_identity():
  table = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
  np.testing.assert_allclose(interpolate_positions(table, (4, 4))[0], table, atol=1e-6)


@pytest.mark.parametrize("embedding,input_,ok", [
    ("visualbert", "regions", True), ("lxmert", "regions", True), ("vilt", "patches", True),
    ("vilt", "regions", False), ("visualbert", "patches", False), ("uniter", "regions", False),
])
def test_image_embedding_is_validated(embedding, input_, ok):
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.image.input = input_
  config.model.image.embedding = embedding
  if ok:
    configuration.validate(config)
  else:
    with pytest.raises(configuration.ConfigError, match=r"config\.model\.image\.embedding"):
      configuration.validate(config)
