"""Attention maps: probabilities as the model computes them, one PNG per fusion layer, by family."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs.finetune import vqa
from tests.conftest import tiny_config
from tests.finetune.checkpoints import save_random_checkpoint
from vlfusion.analysis import attention_maps
from vlfusion.data import questions


def test_probabilities_reproduce_dot_product_attention():
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(2, n, 4, 8)).astype(np.float32) for n in (5, 7, 7))
  mask = np.arange(7)[None] < np.array([[7], [4]])
  p = attention_maps.probabilities(q, k, mask, mean_heads=False)
  want = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
  np.testing.assert_allclose(np.einsum("bhqk,bkhd->bqhd", p, v), want, atol=1e-5)
  assert np.all(p[1, :, :, 4:] == 0)
  np.testing.assert_allclose(attention_maps.probabilities(q, k, mask), p.mean(1))


def test_cross_modal_attention_is_found_by_shape():
  """Text-over-image cross-attention kept whole; joint attention cut to text rows and image columns;
  text self-attention and image-over-text attention left out."""
  rng = np.random.default_rng(1)
  qk = lambda lq, lk: ((rng.normal(size=(1, lq, 2, 4)),), (rng.normal(size=(1, lk, 2, 4)),))
  text_mask, image_mask = np.array([[True] * 4 + [False]]), np.array([[True, True, False]])
  maps = attention_maps.cross_modal_maps(
      {("cross",): qk(5, 3), ("joint",): qk(8, 8), ("text_self",): qk(5, 5), ("image_cross",): qk(3, 5)},
      text_mask=text_mask, image_mask=image_mask)
  assert sorted(maps) == ["cross", "joint"]
  cross, cross_share = maps["cross"]
  np.testing.assert_allclose(cross.sum(-1), 1.0)
  assert np.all(cross[..., 2] == 0) and np.all(cross_share == 1)
  joint, joint_share = maps["joint"]
  assert joint.shape == (1, 5, 3) and np.all(joint[..., 2] == 0)
  assert np.all((joint_share > 0) & (joint_share < 1))
  np.testing.assert_allclose(joint.sum(-1), joint_share)
  # The text padding key takes no attention: with it masked the text and image keys sum to 1.
  q, k = qk(8, 8)
  full = attention_maps.probabilities(q[0], k[0], np.array([[True] * 4 + [False] + [True, True, False]]))
  got = attention_maps.cross_modal_maps({("joint",): (q, k)}, text_mask, image_mask)["joint"]
  np.testing.assert_allclose(got[0], full[:, :5, 5:])
  np.testing.assert_allclose(got[1], full[:, :5, 5:].sum(-1))


@pytest.mark.parametrize("family,layers", [
    ("co_attention", ["encoder__fusion_layer_0__text_cross__attention",
                      "encoder__fusion_layer_1__text_cross__attention"]),
    ("vilt", ["encoder__layer_0__self_attention__attention",
              "encoder__layer_1__self_attention__attention"]),
])
def test_one_png_per_fusion_layer(data_dir, tmp_path, family, layers):
  """Regions (co_attention, saved scanned) and patches (ViLT's single stream): a sheet per layer."""
  workdir = str(tmp_path / family)
  answers = len(questions.ANSWERS)
  config = tiny_config(vqa, data_dir, **{"model.scan_layers": True, "model.vqa.num_answers": answers,
                                         "data.name": "shapes_world/tiny"})  # not the recipe's 40k scenes.
  config.unlock()
  fam = vqa.get_config(f"tiny,family={family}")
  config.model = fam.model
  config.model.unlock()
  config.model.update({"scan_layers": True, "vqa": {"num_answers": answers}})
  save_random_checkpoint(workdir, config)
  paths = attention_maps.attention_maps(workdir, example=3)
  assert [os.path.basename(p)[:-4] for p in paths] == layers
  for path in paths:  # a grid of token panels, several to a row.
    image = Image.open(path)
    assert image.height > attention_maps.PANEL and image.width > 4 * attention_maps.PANEL
