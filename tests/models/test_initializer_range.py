"""model.initializer_range sets the standard deviation every kernel and table is drawn with."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.pretrain import co_attention
from vlfusion import configuration
from vlfusion.models import build_model
from vlfusion.training.optimizer import param_path
from vlfusion.training.train_state import example_batch


def _kernel_stds(initializer_range):
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.initializer_range = initializer_range
  model = build_model(config.model)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), example_batch(config, 2))["params"]
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]
  return {param_path(p): float(np.std(x)) for p, x in flat
          if param_path(p).endswith(("kernel", "embedding")) and np.size(x) >= 1024}


def test_kernels_are_drawn_at_the_initializer_range():
  bert, wide = _kernel_stds(0.02), _kernel_stds(0.1)
  assert len(bert) >= 10 and bert.keys() == wide.keys()
  for name in bert:
    assert bert[name] == pytest.approx(0.02, rel=0.15), name
    assert wide[name] == pytest.approx(0.1, rel=0.15), name


def test_initializer_range_must_be_positive():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.initializer_range = 0.0
  with pytest.raises(configuration.ConfigError, match=r"config\.model\.initializer_range=0\.0"):
    configuration.validate(config)
