"""Named evaluators during training, and image-dependence of a model trained on the shapes world."""

import json
import os

import pytest

from configs.pretrain import single_stream
from tests.conftest import tiny_config
from vlfusion import configuration, experiment
from vlfusion.data import questions

pytestmark = pytest.mark.slow

STEPS = 250
VQA = {"objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.vqa": 1.0, "model.heads": ("vqa",),
       "model.vqa.num_answers": len(questions.ANSWERS)}


def test_a_model_trained_on_vqa_reports_and_loses_accuracy_with_shuffled_images(data_dir, tmp_path):
  config = tiny_config(single_stream, data_dir, **VQA, **{
      "train.num_steps": STEPS, "train.log_every_steps": STEPS, "train.checkpoint_every_steps": STEPS,
      "eval.every_steps": STEPS, "optimizer.warmup_steps": 20, "model.dropout": 0.0,
      # initializer_range 0.1: the recipes' init, which leaves the text prior sooner.
      "model.pooler": "concat", "model.initializer_range": 0.1})
  config.evals = {"val": {"data": {"split": "validation"}, "tasks": ("vqa",), "batch_size": 128},
                  "test": {"data": {"split": "test"}, "tasks": ("vqa", "itm"), "batch_size": 256}}
  workdir = str(tmp_path / "vqa")
  experiment.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", f"step_{STEPS}.json")) as f:
    result = json.load(f)
  assert result["step"] == STEPS and result["config_digest"] == configuration.digest(config)
  assert {k for k, v in result.items() if isinstance(v, dict)} == {"val", "test"}
  assert (result["val"]["split"], result["test"]["split"]) == ("validation", "test")
  assert set(result["test"]) == {"dataset", "split", "vqa"}  # itm is not a head of this model.
  for name in ("val", "test"):
    vqa = result[name]["vqa"]
    assert vqa["count"] == 512 and sum(t["count"] for t in vqa["by_type"].values()) == 512
    assert set(vqa["by_type"]) == set(questions.QUESTION_TYPES)
    for metrics in (vqa, *vqa["by_type"].values()):
      assert {"accuracy", "accuracy_shuffled_images", "text_prior_accuracy", "count"} <= set(metrics)
    # The trained model uses the image: another scene's image costs it accuracy.
    assert vqa["accuracy"] > vqa["accuracy_shuffled_images"] + 0.05, vqa
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = {k: v for line in f for k, v in json.loads(line).items()}
  assert logged["eval/val/vqa_accuracy"] == pytest.approx(result["val"]["vqa"]["accuracy"])
  assert logged["eval/test/vqa_by_type/colour_accuracy_shuffled_images"] == pytest.approx(
      result["test"]["vqa"]["by_type"]["colour"]["accuracy_shuffled_images"])


def test_evaluators_are_validated_before_anything_is_built(data_dir):
  config = tiny_config(single_stream, data_dir, **VQA)
  config.evals = {"val": {"data": {"split": "validation", "nme": "x"}}}
  with pytest.raises(configuration.ConfigError, match=r"config.evals.val.data.nme is neither"):
    configuration.validate(config)
  config.evals = {"val": {"tasks": ("itm", "mlm")}}
  with pytest.raises(configuration.ConfigError,
                     match=r"config.evals.val.tasks=\('itm', 'mlm'\): none is a head"):
    configuration.validate(config)
  config.evals = {"val": {"batch_size": 12}}
  with pytest.raises(configuration.ConfigError, match=r"config.evals.val.batch_size=12 must be a positive "
                     "multiple of the data-parallel size"):
    configuration.validate(config, num_devices=8)
