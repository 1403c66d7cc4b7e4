"""The convolutional image stem (model.image.stem='conv'): same token grid as the linear patch
projection, usable by every family, parameters named for sharding, validated before compilation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import albef, co_attention, dual_encoder, meter_merged, single_stream
from tests.model_fixtures import patches_config
from vlfusion import configuration, partitioning
from vlfusion.models import build_model
from vlfusion.models.embeddings import ConvStem, PatchEmbeddings
from vlfusion.training import trainer
from vlfusion.training.optimizer import param_path
from vlfusion.training.train_state import example_batch


def test_conv_stem_gives_the_linear_grid_and_sees_its_pixels():
  pixels = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  linear = PatchEmbeddings(hidden_size=16, patch_size=8, image_size=32)
  conv = PatchEmbeddings(hidden_size=16, patch_size=8, image_size=32, stem="conv")
  out = {}
  for name, layer in (("linear", linear), ("conv", conv)):
    params = layer.init(jax.random.PRNGKey(0), pixels, deterministic=True)
    out[name] = layer.apply(params, pixels, deterministic=True)
  assert out["conv"][0].shape == out["linear"][0].shape == (2, 1 + 16, 16)
  np.testing.assert_array_equal(out["conv"][1], out["linear"][1])
  # log2(8) = 3 stride-2 convolutions, channels doubling (at least 16) up to D, then a 1x1 projection.
  stem = ConvStem(hidden_size=64, patch_size=8)
  variables = stem.init(jax.random.PRNGKey(0), pixels)
  kernels = {k: v["kernel"].value.shape for k, v in variables["params"].items() if "kernel" in v}
  assert kernels == {"conv_0": (3, 3, 3, 16), "conv_1": (3, 3, 16, 32), "conv_2": (3, 3, 32, 64),
                     "proj": (1, 1, 64, 64)}
  # A token sees its own part of the image: changing one 8x8 cell changes the token over it several
  # times more than tokens two or more cells away (which only feel the GroupNorm statistics).
  changed = pixels.copy()
  changed[:, 8:16, 8:16] = 0.0
  a, b = stem.apply(variables, pixels), stem.apply(variables, changed)
  delta = np.abs(np.asarray(a) - np.asarray(b)).sum(-1)[0]
  far = [delta[i, j] for i in range(4) for j in range(4) if max(abs(i - 1), abs(j - 1)) >= 2]
  assert delta[1, 1] > 3 * np.mean(far)


def test_stem_blocks_deepen_the_stem_on_the_same_grid():
  pixels = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 64, 64, 3)), jnp.float32)
  deep = ConvStem(hidden_size=64, patch_size=8, blocks=1)
  variables = deep.init(jax.random.PRNGKey(0), pixels)
  names = {k for k in variables["params"] if k.startswith("block_")}
  assert names == {f"block_{i}_0{n}" for i in range(3) for n in ("", "_norm")}
  shallow = {"params": {k: v for k, v in variables["params"].items() if k not in names}}
  a = deep.apply(variables, pixels)
  b = ConvStem(hidden_size=64, patch_size=8).apply(shallow, pixels)
  assert a.shape == b.shape == (1, 8, 8, 64)
  assert float(jnp.abs(a - b).max()) > 0.1  # the blocks are on the path, between the same other weights.
  # Their parameters shard by the model's logical axis rules like the rest of the stem.
  config = co_attention.get_config("tiny")
  mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
  specs = nn.get_partition_spec(variables)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, partitioning.logical_rules(config.mesh))
  assert set(shardings["params"]) == set(variables["params"])


@pytest.mark.parametrize("module", [single_stream, co_attention, meter_merged, albef, dual_encoder])
def test_every_family_takes_the_conv_stem(module):
  config = patches_config(module)
  configuration.validate(config)
  model = build_model(config.model)
  batch = example_batch(config, batch_size=2)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))["params"]
  stem = params["image_embeddings"]["conv_stem"]
  assert "patch_proj" not in params["image_embeddings"]
  assert stem["proj"]["kernel"].value.shape[-1] == config.model.image.hidden_size


def test_conv_stem_parameters_carry_logical_names_in_the_rules():
  config = patches_config(single_stream, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  setup = trainer.Setup(config)
  rule_names = {name for name, _ in setup.rules}
  boxed = jax.eval_shape(setup.init_fn, jax.random.PRNGKey(0)).params
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  stem = [(param_path(p), leaf) for p, leaf in leaves if "conv_stem" in param_path(p)]
  assert len(stem) == 3 * 3 + 4  # 3 x (conv kernel, norm scale, bias) + projection kernel, bias + norm.
  for name, leaf in stem:
    assert isinstance(leaf, nn.LogicallyPartitioned), f"{name} carries no logical axis names"
    assert len(leaf.names) == leaf.value.ndim, name
    assert {n for n in leaf.names if n is not None} <= rule_names, f"{name}: {leaf.names}"


@pytest.mark.parametrize("overrides,match", [
    ({"model.image.stem": "resnet"}, r"config\.model\.image\.stem='resnet'"),
    ({"model.image.patch_size": 4, "model.image.image_size": 36}, None),
    ({"model.image.patch_size": 6, "model.image.image_size": 36}, r"power of two"),
    # 68 wide: stages of 17, 34, 68 channels, which GroupNorm's groups of 8 do not divide.
    ({"model.image.hidden_size": 68, "model.text.hidden_size": 68}, r"hidden_size=68.*GroupNorm"),
    ({"model.image.hidden_size": 96, "model.text.hidden_size": 96}, None),
    ({"model.image.input": "regions"}, r"config\.model\.image\.stem=.conv. applies to pixels"),
    ({"model.image.position_init": "sincos", "model.image.stem": "linear"}, None),
    ({"model.image.position_init": "fourier"}, r"config\.model\.image\.position_init=.fourier."),
])
def test_conv_stem_settings_are_validated(overrides, match):
  config = patches_config(co_attention, **overrides)
  if match is None:
    configuration.validate(config)
  else:
    with pytest.raises(configuration.ConfigError, match=match):
      configuration.validate(config)


def test_sincos_positions_start_ordered_and_stay_learnable():
  from vlfusion.models.embeddings import sincos_position_init

  table = np.asarray(sincos_position_init(None, (1 + 16, 8)))
  np.testing.assert_array_equal(table[0], 0.0)  # the [CLS] row.
  grid = table[1:].reshape(4, 4, 8)
  # Neighbouring patches are closer than distant ones, along rows and along columns.
  dist = lambda a, b: float(np.linalg.norm(a - b))
  assert dist(grid[0, 0], grid[0, 1]) < dist(grid[0, 0], grid[0, 3])
  assert dist(grid[0, 0], grid[1, 0]) < dist(grid[0, 0], grid[3, 0])
  layer = PatchEmbeddings(hidden_size=8, patch_size=8, image_size=32, position_init="sincos")
  params = layer.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), deterministic=True)
  np.testing.assert_allclose(params["params"]["position_embeddings"].value, table, atol=1e-6)
  with pytest.raises(ValueError, match="square number of rows"):
    sincos_position_init(None, (1 + 15, 8))
