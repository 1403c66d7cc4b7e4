"""The optimizer: weight decay by parameter name, per-module learning-rate multipliers, schedules,
clipping, and the ConfigErrors that name the field."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.scaling.small_configs import small_config
from vlfusion import configuration
from vlfusion.configuration import ConfigError
from vlfusion.training import optimizer, trainer


def _params():
  return {
      "encoder": {"text_layer_0": {"mlp": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
                                   "norm": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))}}},
      "image_embeddings": {"feature_proj": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}},
      "text_embeddings": {"word_embeddings": {"embedding": jnp.ones((8, 4))}},
  }


def _opt_config(**overrides):
  config = small_config("co_attention")
  for k, v in {"weight_decay": 0.1, "warmup_steps": 0, "schedule": "constant", **overrides}.items():
    config.optimizer[k] = v
  return config.optimizer


def _one_update(opt_config, grads_scale=0.0):
  tx, _ = optimizer.make_optimizer(opt_config, 10)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, grads_scale), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_weight_decay_applies_to_kernels_by_name(decay_embeddings):
  # Zero gradients: the only update is weight decay.
  updates = _one_update(_opt_config(decay_embeddings=decay_embeddings))
  layer = updates["encoder"]["text_layer_0"]
  assert float(layer["mlp"]["kernel"][0, 0]) < 0
  for leaf in (layer["mlp"]["bias"], layer["norm"]["scale"], layer["norm"]["bias"]):
    assert float(jnp.max(jnp.abs(leaf))) == 0.0
  table = updates["text_embeddings"]["word_embeddings"]["embedding"]
  assert (float(table[0, 0]) < 0) == decay_embeddings


def test_decay_mask_of_the_real_model_names_every_leaf():
  setup = trainer.Setup(small_config("co_attention", **{"mesh.data": 1}), devices=jax.devices()[:1])
  paths = {optimizer.param_path(p): m for p, m in
           jax.tree_util.tree_flatten_with_path(optimizer.decay_mask(setup.abstract_state.params))[0]}
  assert all(m for p, m in paths.items() if p.endswith("/kernel"))
  assert not any(m for p, m in paths.items() if p.endswith(("/bias", "/scale", "/embedding")))
  assert sum(paths.values()) >= 10


def test_lr_multipliers_scale_the_update_of_matching_modules():
  base = _one_update(_opt_config(), grads_scale=1.0)
  scaled = _one_update(_opt_config(lr_multipliers="text_layer:0.1, image:0"), grads_scale=1.0)
  ratio = lambda a, b: float(a.ravel()[0] / b.ravel()[0])
  assert ratio(scaled["encoder"]["text_layer_0"]["mlp"]["kernel"],
               base["encoder"]["text_layer_0"]["mlp"]["kernel"]) == pytest.approx(0.1)
  assert float(jnp.max(jnp.abs(scaled["image_embeddings"]["feature_proj"]["kernel"]))) == 0.0
  assert ratio(scaled["text_embeddings"]["word_embeddings"]["embedding"],
               base["text_embeddings"]["word_embeddings"]["embedding"]) == pytest.approx(1.0)


def test_lr_multipliers_string_and_pairs_parse_alike():
  assert optimizer.parse_lr_multipliers("text:0.1,image/.*:0.5") == (("text", 0.1), ("image/.*", 0.5))
  assert optimizer.parse_lr_multipliers((("text", 0.1),)) == (("text", 0.1),)
  assert optimizer.parse_lr_multipliers("") == ()


@pytest.mark.parametrize("value", ["text", "text:abc", "(:0.1", "text:-1", ":2", "text:nan"])
def test_bad_lr_multipliers_name_the_field(value):
  config = small_config("co_attention", **{"optimizer.lr_multipliers": value})
  with pytest.raises(ConfigError, match="config.optimizer.lr_multipliers"):
    configuration.validate(config)


def test_lr_multiplier_matching_no_parameter_is_an_error():
  config = small_config("co_attention", **{"optimizer.lr_multipliers": "txet_layer:0.1",
                                           "mesh.data": 1})
  with pytest.raises(ConfigError, match="'txet_layer' matches no parameter"):
    trainer.Setup(config, devices=jax.devices()[:1])


@pytest.mark.parametrize("field,value", [("weight_decay", -0.1), ("grad_clip_norm", -1.0),
                                         ("schedule", "exponential"), ("grad_accum_steps", 0)])
def test_bad_optimizer_fields_name_the_field(field, value):
  config = small_config("co_attention", **{f"optimizer.{field}": value})
  with pytest.raises(ConfigError, match=f"config.optimizer.{field}"):
    configuration.validate(config)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warmup_then_decay_to_zero(schedule):
  fn = optimizer.learning_rate_schedule(_opt_config(schedule=schedule, warmup_steps=10,
                                                    learning_rate=1.0), 110)
  assert float(fn(0)) == 0.0 and float(fn(5)) == pytest.approx(0.5)
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(60)) == pytest.approx(0.5, abs=1e-6)  # halfway: both decays are at 1/2 here.
  assert float(fn(35)) == pytest.approx(0.75 if schedule == "linear" else np.cos(np.pi / 8) ** 2,
                                        abs=1e-6)
  assert float(fn(110)) == pytest.approx(0.0, abs=1e-7)


def test_gradients_are_clipped_to_the_global_norm():
  tx, _ = optimizer.make_optimizer(_opt_config(grad_clip_norm=1.0, b1=0.0), 10)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)
  state = tx.update(grads, tx.init(params), params)[1]
  mu = state[1][0].mu  # b1=0: the first moment is the clipped gradient itself.
  assert float(optax.tree.norm(mu)) == pytest.approx(1.0, rel=1e-5)


def test_resume_with_new_num_steps_says_what_the_schedule_does():
  """Extending a cosine run from 3000 to 6000 steps re-stretches the schedule unless schedule_steps
  keeps it; the warning names the two rates and the flag."""
  opt = _opt_config(schedule="cosine", warmup_steps=100, learning_rate=1e-3)
  note = optimizer.explain_schedule_change(opt, 3000, 6000, 3000)
  stretched = float(optimizer.learning_rate_schedule(opt, 6000)(3000))
  assert stretched > 4e-4  # the rate jumps from ~0 back up.
  assert f"from 0 to {stretched:.3g}" in note and "--config.optimizer.schedule_steps=3000" in note
  assert optimizer.explain_schedule_change(opt, 3000, 3000, 3000) is None
  opt.schedule_steps = 3000  # the user keeps the old schedule: nothing jumps.
  kept = optimizer.learning_rate_schedule(opt, 6000)
  assert float(kept(1500)) == pytest.approx(
      float(optimizer.learning_rate_schedule(_opt_config(schedule="cosine", warmup_steps=100,
                                                         learning_rate=1e-3), 3000)(1500)))
  assert float(kept(3000)) == pytest.approx(0.0, abs=1e-9) and float(kept(4500)) == pytest.approx(0.0)
  assert "keeps config.optimizer.schedule_steps=3000" in optimizer.explain_schedule_change(
      opt, 3000, 6000, 3000)
  opt.schedule_steps = -1
  with pytest.raises(ConfigError, match="config.optimizer.schedule_steps=-1"):
    optimizer.make_optimizer(opt, 10)
