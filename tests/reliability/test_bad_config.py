"""Settings that cost a run its checkpoints or crash deep inside JAX are refused first, naming the field."""

import os
import re
import subprocess
import sys

import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion import configuration, runtime
from vlfusion.training.setup import Setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("keep", [0, -1])
def test_keeping_fewer_than_one_checkpoint_is_refused(data_dir, keep):
  config = tiny_config(co_attention, data_dir, **{"train.keep_checkpoints": keep})
  with pytest.raises(configuration.ConfigError, match=rf"config.train.keep_checkpoints={keep} must be >= 1"):
    configuration.validate(config)


@pytest.mark.parametrize("field, value, message", [
    ("model.image.patch_size", 0, r"config.model.image.patch_size=0 must be a positive integer"),
    ("model.image.image_size", -64, r"config.model.image.image_size=-64 must be a positive integer"),
    ("model.text.vocab_size", 0, r"config.model.text.vocab_size=0 must be a positive integer"),
    ("data.max_text_len", 1, r"config.data.max_text_len=1 leaves no room .* must be >= 3"),
])
def test_sizes_are_checked_before_any_arithmetic(data_dir, field, value, message):
  config = tiny_config(co_attention, data_dir, **{field: value})
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


@pytest.mark.parametrize("overrides, names", [
    ({"model.text.num_heads": 2, "model.image.num_heads": 2}, (r"logical axis 'heads'", r"num_heads")),
    ({"model.text.vocab_size": 30522},
     (r"\(30522, logical axis 'vocab', from config.model.text.vocab_size\)",)),
])
def test_a_size_tensor_parallelism_cannot_split_is_named_before_the_state_exists(data_dir, overrides, names):
  config = tiny_config(co_attention, data_dir, **{"mesh.data": 2, "mesh.fsdp": 1, "mesh.tensor": 4},
                       **overrides)
  with pytest.raises(configuration.ConfigError) as error:
    Setup(config)
  message = str(error.value)
  assert "is not divisible by the 4 devices of mesh axes ('tensor',) (config.mesh.tensor=4)" in message
  for name in names:
    assert re.search(name, message), message


def test_an_override_of_a_field_that_does_not_exist_lists_the_fields():
  spec = "--config=configs/pretrain/co_attention.py:tiny"
  message = runtime.unknown_override(["train.py", spec, "--config.model.nonexistent=1"])
  assert message.startswith("--config.model.nonexistent: config.model has no field 'nonexistent'; "
                            "its fields: attention_dropout, cross,"), message
  assert runtime.unknown_override(["train.py", spec, "--config.model.fusion_layers=1"]) is None
  message = runtime.unknown_override(["train.py", spec, "--config.train.seed.x=1"])
  assert message == "--config.train.seed.x: config.train.seed has no field 'x' (config.train.seed is a value)"


@pytest.mark.slow
def test_train_py_names_an_unknown_field_and_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  proc = subprocess.run(
      [sys.executable, "train.py", "--config=configs/pretrain/co_attention.py:tiny", f"--workdir={workdir}",
       "--config.model.nonexistent=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert "FATAL Flags parsing error: --config.model.nonexistent: config.model has no field" in proc.stderr
  assert "Traceback" not in proc.stderr and not workdir.exists()


def test_eval_tasks_the_model_has_no_head_for_are_refused_by_training_too(data_dir):
  # With in-training evaluation off, train.py used to accept this and only eval.py refused it.
  config = tiny_config(co_attention, data_dir, **{"eval.tasks": ("vqa",), "eval.every_steps": 0})
  assert "vqa" not in config.model.heads
  with pytest.raises(configuration.ConfigError, match=r"config.eval.tasks=\('vqa',\): none is a head"):
    configuration.validate(config)
