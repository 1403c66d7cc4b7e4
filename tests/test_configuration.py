"""Config validation fails before anything is built, with a message naming the field."""

import pytest

from configs.pretrain import co_attention, single_stream
from vlfusion import configuration
from vlfusion.configuration import ConfigError


def _config(**overrides):
  config = co_attention.get_config("tiny")
  config.unlock()
  return configuration.override(config, overrides)


@pytest.mark.parametrize("module", [co_attention, single_stream])
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_shipped_configs_are_valid(module, size):
  configuration.validate(module.get_config(size), num_devices=8)


@pytest.mark.parametrize(
    "overrides, num_devices, field",
    [
        ({"model.fusion": "late_everything"}, 1, "config.model.fusion"),
        ({"model.text.num_heads": 5}, 1, "config.model.text.num_heads"),
        ({"model.image.hidden_size": 62}, 1, "config.model.image.num_heads"),
        ({"mesh.data": 3}, 8, "config.mesh"),
        ({"mesh.data": -1, "mesh.fsdp": 3}, 8, "config.mesh"),
        ({"data.global_batch_size": 12}, 8, "config.data.global_batch_size"),
        ({"objectives.mlm": 0.0, "objectives.itm": 0.0}, 1, "config.objectives"),
        ({"objectives.vqa": 1.0}, 1, "config.objectives.vqa"),
        ({"data.max_text_len": 64}, 1, "config.data.max_text_len"),
        ({"model.cross.order": "sideways"}, 1, "config.model.cross.order"),
        ({"optimizer.schedule": "exponential"}, 1, "config.optimizer.schedule"),
    ],
)
def test_invalid_values_name_the_field(overrides, num_devices, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    configuration.validate(_config(**overrides), num_devices=num_devices)


def test_single_stream_needs_one_width():
  config = single_stream.get_config("tiny")
  config.unlock()
  config.model.image.hidden_size = 128
  with pytest.raises(ConfigError, match="config.model.image.hidden_size=128"):
    configuration.validate(config)


def test_mesh_resolves_the_rest_of_the_devices():
  config = _config(**{"mesh.data": -1, "mesh.fsdp": 2, "mesh.tensor": 2})
  assert configuration.resolve_mesh_shape(config.mesh, 8) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_config_is_locked_against_typos():
  config = co_attention.get_config("tiny")
  with pytest.raises(AttributeError):
    config.model.fusion_layer = 3  # a typo of fusion_layers


def test_size_argument_picks_widths():
  assert co_attention.get_config("small").model.text.hidden_size == 256
  with pytest.raises(ConfigError, match="unknown size"):
    co_attention.get_config("huge")
