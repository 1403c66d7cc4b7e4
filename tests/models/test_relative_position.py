"""The image stream's 2-D relative position bias (model.image.relative_position='bias_2d'): off by
default with the parameter tree unchanged, a per-head (dy, dx) table only in self-attention over patch
tokens, translation-equivariant, and refused by `validate` where nothing would read it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.pretrain import albef, co_attention, dual_encoder, meter_merged, single_stream
from tests.model_fixtures import patches_config
from vlfusion import configuration
from vlfusion.models import build_model
from vlfusion.models.attention import (
  MultiHeadAttention,
  explicit_attention,
  initializer_range,
  relative_position_bias,
)
from vlfusion.training.train_state import example_batch

TABLE = "relative_position_bias"


def _leaves(params):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _init(config):
  configuration.validate(config)
  model = build_model(config.model)
  batch = example_batch(config, batch_size=2)
  batch["image"] = np.random.default_rng(0).normal(size=batch["image"].shape).astype(np.float32)
  params = model.init(jax.random.PRNGKey(0), batch)["params"]
  params = nn.meta.unbox(params)
  return model, batch, params


def _encode(model, params, batch):
  out = model.apply({"params": params}, batch)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])


@pytest.mark.parametrize("module", [co_attention, albef, meter_merged, dual_encoder])
def test_default_is_unchanged_and_bias_adds_only_self_attention_tables(module):
  base = patches_config(module)
  # One table per self-attention over image tokens: the image layers, and co-attention's fusion layers.
  tables = base.model.image.num_layers + (base.model.fusion_layers if module is co_attention else 0)
  assert base.model.image.relative_position == "none"
  model, batch, params = _init(base)
  biased_model, _, biased = _init(patches_config(module, **{"model.image.relative_position": "bias_2d"}))
  plain, extra = _leaves(params), _leaves(biased)
  added = {k: v for k, v in extra.items() if k not in plain}
  assert not [k for k in plain if TABLE in k]
  assert {k: v.shape for k, v in extra.items() if k in plain} == {k: v.shape for k, v in plain.items()}
  assert len(added) == tables
  heads = base.model.image.num_heads
  for name, value in added.items():
    assert name.endswith(f"self_attention/attention/{TABLE}") and "text" not in name, name
    assert value.shape == (49, heads) and not value.any()  # starts at zero: the model starts as without.
  # The plain model's weights with zero tables compute its outputs; nonzero tables change them.
  def with_tables(fill):
    flat = traverse_util.flatten_dict(biased, sep="/")
    plain_flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {k: fill(v) if k in added else plain_flat[k] for k, v in flat.items()}, sep="/")
  np.testing.assert_allclose(_encode(biased_model, with_tables(lambda x: x), batch),
                             _encode(model, params, batch), rtol=1e-5, atol=1e-5)
  rng = np.random.default_rng(1)
  moved = with_tables(lambda x: jnp.asarray(rng.normal(size=x.shape) * 2.0, x.dtype))
  assert np.abs(_encode(biased_model, moved, batch) - _encode(model, params, batch)).max() > 1e-2


def test_bias_is_a_function_of_the_offset_and_leaves_cls_alone():
  grid, heads = (3, 4), 2
  table = jnp.asarray(np.random.default_rng(0).normal(size=((2 * 3 - 1) * (2 * 4 - 1), heads)))
  bias = np.asarray(relative_position_bias(table, grid, prefix=1))
  assert bias.shape == (heads, 1 + 12, 1 + 12)
  assert not bias[:, 0, :].any() and not bias[:, :, 0].any()
  by_offset = {}
  for i in range(12):
    for j in range(12):
      offset = (i // 4 - j // 4, i % 4 - j % 4)
      by_offset.setdefault(offset, []).append(bias[:, 1 + i, 1 + j])
  assert len(by_offset) == 5 * 7  # every (dy, dx) has its own row of the table ...
  for values in by_offset.values():  # ... shared by every pair of patches at that offset.
    np.testing.assert_array_equal(np.stack(values), np.broadcast_to(values[0], np.shape(values)))
  distinct = {tuple(v[0]) for v in by_offset.values()}
  assert len(distinct) == len(by_offset)


def test_shifting_the_content_by_one_patch_shifts_the_biased_attention():
  """A background of identical patches and one distinct patch (the object), a table nonzero only for
  offsets within one patch: moving the object one patch right moves what every interior query sees
  one patch right, so the output at query q with the object at p equals the output at q+1 with the
  object at p+1. Without the bias the queries around the object could not tell its side apart."""
  side, d, heads = 6, 16, 2
  grid = (side, side)
  rng = np.random.default_rng(0)
  background, obj, cls = (rng.normal(size=d).astype(np.float32) for _ in range(3))

  def image(row, col):
    x = np.tile(background, (1 + side * side, 1))
    x[0] = cls
    x[1 + row * side + col] = obj
    return jnp.asarray(x[None])

  attention = MultiHeadAttention(num_heads=heads, relative_grid=grid)
  mask = jnp.ones((1, 1 + side * side), bool)
  with initializer_range(0.5):  # projections large enough that the output is far from zero.
    params = attention.init(jax.random.PRNGKey(0), image(2, 2), image(2, 2), mask, deterministic=True)
  dy, dx = np.meshgrid(np.arange(-(side - 1), side), np.arange(-(side - 1), side), indexing="ij")
  near = ((np.abs(dy) <= 1) & (np.abs(dx) <= 1)).reshape(-1, 1)
  table = rng.normal(size=((2 * side - 1) ** 2, heads)) * 3.0 * near
  params = {"params": dict(params["params"])}
  params["params"][TABLE] = jnp.asarray(table, jnp.float32)

  def out(x, table_scale=1.0):
    p = dict(params["params"])
    p[TABLE] = p[TABLE] * table_scale
    return np.asarray(attention.apply({"params": p}, x, x, mask, deterministic=True))[0]

  def token(row, col):
    return 1 + row * side + col

  before, after = out(image(2, 2)), out(image(2, 3))
  for row in range(1, side - 1):
    for col in range(1, side - 2):
      np.testing.assert_allclose(after[token(row, col + 1)], before[token(row, col)], rtol=1e-5,
                                 atol=1e-5)
  # The bias is what tells the queries left and right of the object apart; without it they agree.
  plain = out(image(2, 2), table_scale=0.0)
  np.testing.assert_allclose(plain[token(2, 1)], plain[token(2, 3)], rtol=1e-5, atol=1e-5)
  assert np.abs(before[token(2, 1)] - before[token(2, 3)]).max() > 0.05 * np.abs(before).max()


def test_a_sequence_off_the_grid_is_refused():
  attention = MultiHeadAttention(num_heads=2, relative_grid=(2, 2))
  x = jnp.zeros((1, 4, 8))
  with pytest.raises(ValueError, match="2x2 grid needs 5 tokens"):
    attention.init(jax.random.PRNGKey(0), x, x, jnp.ones((1, 4), bool), deterministic=True)


@pytest.mark.parametrize("module,overrides,match", [
    (co_attention, None,
     r"config\.model\.image\.relative_position='bias_2d' does nothing: only config\.model\.image\.input"),
    (single_stream, {}, r"relative_position='bias_2d' does nothing: 'single_stream' has no self-attention"),
    (albef, {"model.image.num_layers": 0}, r"relative_position='bias_2d' does nothing"),
    (co_attention, {"model.image.relative_position": "rotary"}, r"relative_position='rotary' must be"),
])
def test_inert_or_unknown_relative_position_is_refused_before_building(module, overrides, match):
  if overrides is None:  # the family's own regions model.
    config = configuration.override(module.get_config("tiny"), {"model.image.relative_position": "bias_2d"})
  else:
    config = patches_config(module, **{"model.image.relative_position": "bias_2d", **overrides})
  with pytest.raises(configuration.ConfigError, match=match):
    configuration.validate(config)


def test_both_attention_paths_add_the_bias_alike():
  """The explicit softmax path (attention dropout in training) and `jax.nn.dot_product_attention`."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 5, 2, 4)), jnp.float32) for _ in range(3))
  table = jnp.asarray(rng.normal(size=(9, 2)) * 2.0, jnp.float32)
  bias = relative_position_bias(table, (2, 2), prefix=1)[None]
  mask = jnp.asarray([[True] * 5, [True] * 4 + [False]])[:, None, None, :]
  explicit = explicit_attention(q, k, v, mask, None, True, bias)
  fused = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
  np.testing.assert_allclose(explicit, fused, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(explicit) - np.asarray(explicit_attention(q, k, v, mask, None, True))).max() > 0.1
