"""Configuration errors for the model fields name the field at fault."""

import pytest

from configs.pretrain import albef, co_attention, lxmert, vilbert
from vlfusion import configuration
from vlfusion.configuration import ConfigError


def _set(config, dotted, value):
  node = config
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("module,changes,field", [
    (albef, {"model.itc.embed_dim": 0}, "config.model.itc.embed_dim"),
    (albef, {"model.itc.temperature": 0.9}, "config.model.itc.temperature"),
    (lxmert, {"model.heads": ("mlm", "itm", "mrm", "vqa"), "model.vqa.num_answers": -1},
     "config.model.vqa.num_answers"),
    (lxmert, {"model.heads": ("mlm", "itm", "mrm"), "model.mrm.num_labels": 0,
              "model.mrm.regression": False}, "config.model.mrm.regression"),
    (albef, {"model.heads": ("mlm", "itm", "itc", "mrm")}, "config.model.image.input"),
    (vilbert, {"model.cross.share_weights": True}, "config.model.cross.share_weights"),
    (co_attention, {"model.cross.order": "sideways"}, "config.model.cross.order"),
    (co_attention, {"model.cross.direction": "image_to_text"}, "config.model.cross.direction"),
    (co_attention, {"model.cross.hidden_size": 30}, "config.model.cross.num_heads"),
    (co_attention, {"model.pooler": "mean"}, "config.model.pooler"),
    (co_attention, {"model.heads": ("mlm", "itm", "ocr")}, "config.model.heads"),
    (co_attention, {"model.image.layer_norm_eps": 0.0}, "config.model.image.layer_norm_eps"),
    (co_attention, {"objectives.itc": 1.0}, "config.objectives.itc"),
    (co_attention, {"model.fusion": "dual_encoder"}, "config.model.fusion_layers"),
    (co_attention, {"model.fusion": "dual_encoder", "model.fusion_layers": 0},
     "config.model.pooler"),
])
def test_model_errors_name_the_field(module, changes, field):
  config = module.get_config("tiny")
  configuration.validate(config)  # valid as shipped.
  config.unlock()
  for dotted, value in changes.items():
    _set(config, dotted, value)
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    configuration.validate(config)
