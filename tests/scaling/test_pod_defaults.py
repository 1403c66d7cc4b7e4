"""What a pod run gets without extra flags: bfloat16 compute on accelerators (float32 on CPU), and
base configs that name real data and stop, before compiling, with the flag to set."""

import jax
import jax.numpy as jnp
import pytest

from configs.pretrain import co_attention, single_stream
from tests.scaling.common import small_config, synthetic_batch
from vlfusion.configuration import ConfigError
from vlfusion.data import pipeline
from vlfusion.models import build_model
from vlfusion.models.attention import compute_dtype


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpu():
  assert co_attention.get_config("base").model.dtype == "auto"
  assert compute_dtype("auto", "tpu") == compute_dtype("auto", "gpu") == "bfloat16"
  assert compute_dtype("auto", "cpu") == "float32"
  assert compute_dtype("float16", "tpu") == "float16"  # a named dtype is kept on any backend.
  # On this (CPU) backend the model built from "auto" computes in float32.
  config = small_config("single_stream", **{"model.dtype": "auto"})
  model = build_model(config.model)
  batch = synthetic_batch(config, 0)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch)["params"])
  outputs = jax.eval_shape(lambda p: model.apply({"params": p}, batch), params)
  assert jax.default_backend() != "cpu" or outputs["text_hidden"].dtype == jnp.float32


@pytest.mark.parametrize("module", [co_attention, single_stream])
def test_base_configs_name_real_data_and_the_flags_it_needs(module, tmp_path):
  config = module.get_config("base")
  assert config.data.name == "coco_captions/regions"
  assert config.model.text.vocab_size == 30522
  assert (config.model.image.feature_dim, config.model.image.num_regions) == (2048, 36)
  config.unlock()
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match=r"--config\.data\.vocab_path="):
    pipeline.make_batch_source(config, "train")
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
  config.data.vocab_path = str(vocab)
  with pytest.raises(ConfigError, match=r"--config\.data\.manual_dir="):
    pipeline.make_batch_source(config, "train")
