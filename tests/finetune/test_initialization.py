"""config.init: parameters restored by path and shape from a vlfusion checkpoint or an HF directory."""

import json
import os

import numpy as np
import pytest
from flax import traverse_util

from configs.finetune import pairs, vqa
from configs.pretrain import co_attention
from tests.finetune.checkpoints import random_like, save_random_checkpoint
from vlfusion import configuration
from vlfusion.configuration import ConfigError
from vlfusion.models.stream import unstack_params
from vlfusion.training import initialization
from vlfusion.training.trainer import Setup


def _config(module, arg="tiny", **overrides):
  config = module.get_config(arg)
  config.unlock()
  return configuration.override(config, overrides)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A workdir whose checkpoint (step 7) holds random co_attention parameters in the scanned layout."""
  workdir = str(tmp_path_factory.mktemp("pre"))
  config = _config(co_attention, **{"model.scan_layers": True})
  return workdir, config, save_random_checkpoint(workdir, config)


# The pretraining model reads regions, post-LN: these undo the from-scratch VQA recipe's pixel input and
# pre-LN, so that its checkpoint fits.
_PRETRAINED_MODEL = {"model.image.input": "regions", "model.image.stem": "linear",
                     "model.image.position_init": "normal", "model.pre_norm": False}


def _flat(params):
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_vqa_from_scanned_checkpoint_into_unrolled_model(pretrained, tmp_path):
  """Every encoder parameter comes back layer by layer; the new VQA head stays fresh; report written."""
  workdir, pre_config, pre_params = pretrained
  config = _config(vqa, "tiny,family=co_attention", **{
      "model.vqa.num_answers": 5, "init.checkpoint": workdir, **_PRETRAINED_MODEL})
  setup = Setup(config)
  fresh = random_like(setup.abstract_state.params, 1)
  source = initialization.load(config)
  assert source.resolved.endswith(os.path.join("checkpoints", "7"))
  params, report = initialization.restore(source, fresh, config, str(tmp_path))

  encoder = dict(pre_params["encoder"])
  for prefix, n in (("text_layer", 2), ("image_layer", 1), ("fusion_layer", 2)):
    encoder = unstack_params(encoder, prefix, n)
  want, got, before = _flat(dict(pre_params, encoder=encoder)), _flat(params), _flat(fresh)
  assert set(report.restored) == {k for k in got if not k.startswith("heads_")}
  for name in report.restored:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert report.fresh == sorted(k for k in got if k.startswith("heads_vqa/"))
  for name in report.fresh:
    np.testing.assert_array_equal(got[name], before[name], err_msg=name)
  assert report.unused == sorted(k for k in want if k.startswith(("heads_mlm/", "heads_itm/")))
  on_disk = json.load(open(tmp_path / initialization.REPORT_FILE))
  assert on_disk["restored"] == report.restored and on_disk["fresh"] == report.fresh
  assert on_disk["notes"] == []  # scan_layers changes the layout, not what the layers compute.


def test_unrolled_source_into_scanned_model_and_exclude(pretrained, tmp_path):
  """The other direction, one step directory named directly; `exclude` leaves a layer fresh."""
  workdir, _, pre_params = pretrained
  config = _config(pairs, "tiny,family=co_attention", **{
      "model.scan_layers": True, "init.checkpoint": os.path.join(workdir, "checkpoints", "7"),
      "init.exclude": "fusion_layer_1/"})
  setup = Setup(config)
  fresh = random_like(setup.abstract_state.params, 2)
  params, report = initialization.restore(initialization.load(config), fresh, config, None)
  stack = lambda p: p["encoder"]["fusion_layer_stack"]["layer"]["text_layer"]["mlp"]["norm"]["scale"]
  np.testing.assert_array_equal(np.asarray(stack(params))[0], stack(pre_params)[0])
  np.testing.assert_array_equal(np.asarray(stack(params))[1], stack(fresh)[1])
  assert "encoder/fusion_layer_1/text_layer/mlp/norm/scale" in report.excluded
  assert "encoder/fusion_layer_1/text_layer/mlp/norm/scale" in report.fresh
  assert "encoder/fusion_layer_0/text_layer/mlp/norm/scale" in report.restored


def test_shape_mismatch_names_the_parameter_and_both_shapes(pretrained):
  workdir, _, _ = pretrained
  config = _config(vqa, "tiny,family=co_attention", **{
      "model.vqa.num_answers": 5, "init.checkpoint": workdir, "model.text.mlp_dim": 96,
      **_PRETRAINED_MODEL})
  setup = Setup(config)
  fresh = random_like(setup.abstract_state.params, 1)
  with pytest.raises(ConfigError, match=r"encoder/text_layer_0/mlp/mlp/intermediate/kernel: "
                                        r"source \(64, 128\), model \(64, 96\)"):
    initialization.restore(initialization.load(config), fresh, config, None)
  # Excluding the text layers' MLPs leaves them fresh; the width still differs from the source's, which
  # allow_fresh accepts by naming them.
  config.init.exclude = r"text_layer(_\d+)?/mlp/mlp/"
  with pytest.raises(ConfigError, match=r"model.text.mlp_dim: 128 vs 96"):
    initialization.restore(initialization.load(config), fresh, config, None)
  config.init.allow_fresh = config.init.exclude
  params, report = initialization.restore(initialization.load(config), fresh, config, None)
  assert report.notes == ["model.text.mlp_dim: 128 vs 96 (accepted by config.init.allow_fresh)"]
  assert "encoder/text_layer_0/mlp/mlp/intermediate/kernel" in report.fresh
  assert "encoder/text_layer_0/self_attention/attention/query/kernel" in report.restored


def test_bad_sources_are_clear_errors(pretrained, tmp_path):
  workdir, _, _ = pretrained

  def load(**init):
    return initialization.load(_config(vqa, "tiny", **{f"init.{k}": v for k, v in init.items()}))

  with pytest.raises(ConfigError, match="config.init.checkpoint=.*no such file or directory"):
    load(checkpoint=str(tmp_path / "missing"))
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("x")
  with pytest.raises(ConfigError, match="config.init.checkpoint=.*is not a vlfusion checkpoint"):
    load(checkpoint=str(tmp_path / "notes"))
  # An HF directory of a model from_huggingface does not read (a ViT: an image stream only).
  from safetensors.numpy import save_file

  vit = tmp_path / "vit"
  vit.mkdir()
  (vit / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
  save_file({"vit.embeddings.cls_token": np.zeros((1, 1, 8), np.float32)}, str(vit / "model.safetensors"))
  with pytest.raises(ConfigError, match="config.init.huggingface=.*model_type='vit' is not supported"):
    load(huggingface=str(vit))
  with pytest.raises(ConfigError, match="looks like an HF checkpoint: set config.init.huggingface"):
    load(checkpoint=str(vit))
  with pytest.raises(ConfigError, match="config.init.huggingface=.*no such directory"):
    load(huggingface=str(tmp_path / "missing"))
  # An exclude regex that matches nothing (most likely a typo).
  config = _config(vqa, "tiny,family=co_attention", **{
      "model.vqa.num_answers": 5, "init.checkpoint": workdir, "init.exclude": "heads_vqq"})
  fresh = random_like(Setup(config).abstract_state.params, 1)
  with pytest.raises(ConfigError, match="config.init.exclude='heads_vqq' matches no parameter"):
    initialization.restore(initialization.load(config), fresh, config, None)


def test_init_config_is_validated():
  config = _config(vqa, "tiny", **{"init.checkpoint": "a", "init.huggingface": "b"})
  with pytest.raises(ConfigError, match="config.init.checkpoint='a' and config.init.huggingface='b'"):
    configuration.validate(config)
  config = _config(vqa, "tiny", **{"init.exclude": "x"})
  with pytest.raises(ConfigError, match="config.init.exclude='x' is set but neither"):
    configuration.validate(config)
  config = _config(vqa, "tiny", **{"init.checkpoint": "a", "init.exclude": "("})
  with pytest.raises(ConfigError, match="config.init.exclude='\\(' is not a regular expression"):
    configuration.validate(config)


def test_finetune_config_arguments():
  config = vqa.get_config("tiny,family=lxmert")
  assert config.model.cross.share_weights and config.model.heads == ("vqa",)
  assert config.objectives.vqa == 1.0 and config.objectives.mlm == 0.0
  assert vqa.get_config("base,family=vilt").data.name == "vqa_v2/images"
  assert vqa.get_config("base").optimizer.lr_multipliers == "heads_vqa:10"
  for size, recipe in vqa.RECIPES.items():
    config = vqa.get_config(size)
    for dotted, value in recipe.items():
      node = config
      for part in dotted.split("."):
        node = node[part]
      assert node == value, (size, dotted)
  with pytest.raises(ConfigError, match="unknown key 'famly'"):
    vqa.get_config("tiny,famly=lxmert")
  with pytest.raises(ConfigError, match="family='nope' is not a config in configs/pretrain"):
    pairs.get_config("tiny,family=nope")
  with pytest.raises(ConfigError, match="unknown key 'fusion'"):
    co_attention.get_config("tiny,fusion=x")
