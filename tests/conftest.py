"""Test setup: simulated CPU devices must be requested before JAX is imported."""

import os

# 8 simulated CPU devices; XLA:CPU's LLVM optimisation turned down, which makes every compile (the
# bulk of the suite's time) about 3x faster and changes no program the tests check.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_XLA}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from vlfusion import configuration  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data dir for the whole session, so each dataset is prepared at most once."""
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(module, data_dir, **overrides):
  """`module.get_config('tiny')` unlocked, pointed at `data_dir`, with dotted-path overrides."""
  config = module.get_config("tiny")
  config.unlock()
  config.data.data_dir = data_dir
  return configuration.override(config, overrides)
