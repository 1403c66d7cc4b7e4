"""No knob silently does nothing: a field the configured model or run would never read is refused by
`configuration.validate` (before anything is built), naming the field; so is a config argument that
would drop part of itself."""

import importlib
import os

import pytest

from configs.finetune import common, vqa
from configs.pretrain import albef, co_attention, dual_encoder, meter_merged, single_stream, vilbert
from vlfusion import configuration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    f"configs.{group}.{name[:-3]}" for group in ("pretrain", "finetune")
    for name in os.listdir(os.path.join(ROOT, "configs", group))
    if name.endswith(".py") and not name.startswith("_") and name != "common.py")


def _config(module, **overrides):
  config = module.get_config("tiny")
  config.unlock()
  return configuration.override(config, overrides)


# (config module, overrides, the field the error must name). Each of these was accepted before and
# changed nothing in the model or the run.
INERT = [
    (co_attention, {"model.cross.order": "self_cross_ffn", "model.cross.share_weights": True},
     "config.model.cross.share_weights"),
    (co_attention, {"model.cross.order": "coattn_ffn_self", "model.cross.share_weights": True},
     "config.model.cross.share_weights"),
    (co_attention, {"model.cross.direction": "text_to_image", "model.cross.share_weights": True},
     "config.model.cross.share_weights"),
    (single_stream, {"model.text.num_layers": 3}, "config.model.text.num_layers"),
    (single_stream, {"model.image.num_layers": 1}, "config.model.image.num_layers"),
    (single_stream, {"model.image.mlp_dim": 96}, "config.model.image.mlp_dim"),
    (single_stream, {"model.text.pre_norm": True}, "config.model.text.pre_norm"),
    (single_stream, {"model.cross.order": "self_cross_ffn"}, "config.model.cross.order"),
    (meter_merged, {"model.cross.direction": "text_to_image"}, "config.model.cross.direction"),
    (albef, {"model.cross.share_weights": True}, "config.model.cross.share_weights"),
    (dual_encoder, {"model.cross.hidden_size": 32}, "config.model.cross.hidden_size"),
    (vilbert, {"model.image.layer_norm_eps": 1e-6}, "config.model.image.layer_norm_eps"),
    (co_attention, {"model.image.patch_size": 16}, "config.model.image.patch_size"),
    (albef, {"model.image.num_regions": 20}, "config.model.image.num_regions"),
    (co_attention, {"data.randaugment_num_ops": 2}, "config.data.randaugment_num_ops"),
    (co_attention, {"data.mrm_probability": 0.3}, "config.data.mrm_probability"),
    (co_attention, {"data.shards": "*.tar"}, "config.data.shards"),
    (co_attention, {"data.shards_validation_share": 0.1}, "config.data.shards_validation_share"),
    (dual_encoder, {"model.heads": ("itc",), "objectives.mlm": 0.0, "objectives.itm": 0.0,
                    "data.mlm_whole_word": True}, "config.data.mlm_whole_word"),
    (co_attention, {"optimizer.weight_decay": 0.0, "optimizer.decay_embeddings": True},
     "config.optimizer.decay_embeddings"),
    (co_attention, {"train.best_mode": "min"}, "config.train.best_mode"),
    (co_attention, {"train.inject_nan_objective": "itm"}, "config.train.inject_nan_objective"),
    (co_attention, {"eval.retrieval_rerank_k": 4}, "config.eval.retrieval_rerank_k"),
    # The visual-entailment scenes have no questions; only the name's prefix is the shapes world's.
    (vqa, {"data.name": "shapes_world_ve/tiny", "data.question_type_weights": "relation:0"},
     "config.data.question_type_weights"),
]


@pytest.mark.parametrize("module,overrides,field", INERT,
                         ids=[f"{m.__name__.split('.')[-1]}:{f}" for m, _, f in INERT])
def test_a_field_that_would_do_nothing_is_refused(module, overrides, field):
  config = _config(module, **overrides)
  with pytest.raises(configuration.ConfigError, match=rf"{field}=.*does nothing"):
    configuration.validate(config)


@pytest.mark.parametrize("module,overrides", [
    (co_attention, {"model.cross.share_weights": True}),  # LXMERT's sharing, in its own order.
    (co_attention, {"model.cross.order": "coattn_ffn_self", "model.cross.direction": "text_to_image"}),
    (albef, {"model.cross.hidden_size": 32, "model.cross.num_heads": 2}),  # one-way cross-attention.
    (meter_merged, {"model.image.pre_norm": False}),  # the image stream has unimodal layers.
    (co_attention, {"train.best_metric": "itm_accuracy", "train.best_mode": "min",
                    "eval.every_steps": 100}),
    (co_attention, {"eval.tasks": ("itm", "retrieval"), "eval.retrieval_rerank_k": 4}),
])
def test_the_same_fields_where_they_act_are_accepted(module, overrides):
  configuration.validate(_config(module, **overrides))


@pytest.mark.parametrize("name", CONFIG_FILES)
@pytest.mark.parametrize("arg", ["size=small,fusion=co_attention", "tiny,size=small", "tiny,small",
                                 "small,family=lxmert,family=vilt"])
def test_no_config_argument_is_partly_dropped(name, arg):
  """Every config file's argument: an unknown key, or a key given twice, is an error naming it."""
  module = importlib.import_module(name)
  if "family" in arg and not hasattr(module, "finetune_config"):
    arg = "tiny,size=small"  # pretraining configs refuse `family` as an unknown key already.
  with pytest.raises(configuration.ConfigError, match=r"config argument .*(unknown key|twice)"):
    module.get_config(arg)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_every_shipped_config_passes(size):
  """The refusals leave every pretraining config, and its fine-tuning configs, valid."""
  for name in CONFIG_FILES:
    module = importlib.import_module(name)
    families = common.families() if name.startswith("configs.finetune") else [None]
    for family in families:
      if name.endswith(".vqa") and family == "visualbert" and size != "base":
        continue  # the VQA pixel recipe and VisualBERT's region embedding: refused before this change.
      arg = size if family is None else f"{size},family={family}"
      configuration.validate(module.get_config(arg))
