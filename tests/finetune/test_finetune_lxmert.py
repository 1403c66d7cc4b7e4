"""A VQA fine-tuning run from an HF LXMERT directory (random weights) trains, evaluates and resumes."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs.finetune import vqa
from vlfusion import configuration, experiment
from vlfusion.convert import from_huggingface
from vlfusion.data import questions
from vlfusion.training import trainer

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def _lxmert_dir(path):
  hf = transformers.LxmertConfig(
      vocab_size=512, hidden_size=32, num_attention_heads=4, intermediate_size=48, l_layers=1,
      r_layers=1, x_layers=1, max_position_embeddings=40, visual_feat_dim=64, visual_pos_dim=4)
  torch.manual_seed(0)
  transformers.LxmertModel(hf).eval().save_pretrained(path)
  return str(path)


def test_vqa_from_converted_lxmert_trains_and_evaluates(data_dir, tmp_path):
  hf_dir = _lxmert_dir(tmp_path / "lxmert")
  workdir = str(tmp_path / "vqa")
  config = vqa.get_config("tiny,family=lxmert")  # co_attention with LXMERT's shared cross-attention.
  config.unlock()
  config.data.data_dir = data_dir
  configuration.override(config, {
      "model.text.num_layers": 1, "model.image.num_layers": 1, "model.fusion_layers": 1,
      "model.text.mlp_dim": 48, "model.image.mlp_dim": 48, "model.text.hidden_size": 32,
      "model.image.hidden_size": 32, "train.num_steps": 3, "train.log_every_steps": 1,
      "eval.every_steps": 3, "optimizer.warmup_steps": 1, "init.huggingface": hf_dir,
      # LXMERT reads detector regions: undo the from-scratch recipe's pixel input.
      "model.image.input": "regions", "model.image.stem": "linear", "model.image.position_init": "normal",
      "model.pre_norm": False, "data.name": "shapes_world/tiny"})  # LXMERT is post-LN; tiny's scenes.

  # The initial parameters are the converted model's, the VQA head aside.
  setup = trainer.Setup(config)
  assert config.model.vqa.num_answers == len(questions.ANSWERS)  # 0 in the config: the shapes world's.
  os.makedirs(workdir)
  start = traverse_util.flatten_dict(jax.device_get(setup.initial_state(workdir).params))
  report = json.load(open(os.path.join(workdir, "init_report.json")))
  assert report["fresh"] == sorted("/".join(p) for p in start if p[0] == "heads_vqa")
  assert report["unused"] == [] and len(report["restored"]) == len(start) - len(report["fresh"])
  _, converted = from_huggingface(hf_dir)
  converted = traverse_util.flatten_dict(converted)
  for name in report["restored"]:
    path = tuple(name.split("/"))
    np.testing.assert_allclose(start[path], converted[path], err_msg=name)

  state = experiment.train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["vqa_loss"] for r in records if "vqa_loss" in r]
  assert len(losses) == 3 and np.isfinite(losses).all()
  accuracy = [r["eval/default/vqa_accuracy"] for r in records if "eval/default/vqa_accuracy" in r]
  assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["vqa"]["num_answers"] == len(questions.ANSWERS)
  assert saved["init"]["huggingface"] == hf_dir

  # Resuming reads the run's own checkpoint: the HF directory is no longer needed.
  shutil.rmtree(hf_dir)
  config.model.vqa.num_answers = 0
  resumed = experiment.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state.params, resumed.params)
