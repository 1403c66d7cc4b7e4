r"""Config file for the scaling tests: a tiny model (one layer per stream, width 32) on shapes-world data.

  python train.py --config=tests/scaling/small_configs.py:co_attention --workdir=/tmp/vlf_small

The argument names the fusion family. Importing it touches no JAX backend (train.py parses flags first).
"""

from configs.pretrain import co_attention, single_stream
from vlfusion import configuration

FAMILIES = {"co_attention": co_attention, "single_stream": single_stream}


def small_config(family: str = "co_attention", **overrides):
  """An unlocked config with 1-layer streams of width 32, batch 16; dotted-path `overrides` last."""
  config = FAMILIES[family].get_config("tiny")
  config.unlock()
  m = config.model
  for stream in (m.text, m.image):
    stream.hidden_size, stream.num_heads, stream.mlp_dim = 32, 4, 64
  if family == "co_attention":
    m.text.num_layers, m.image.num_layers = 1, 0
  m.fusion_layers = 1
  config.data.global_batch_size = 16
  config.optimizer.warmup_steps = 1
  config.train.num_steps = 10
  return configuration.override(config, overrides)


def get_config(arg=None):
  config = small_config(arg or "co_attention")
  config.lock()
  return config
