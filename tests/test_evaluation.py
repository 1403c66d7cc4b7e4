"""The evaluator's counts: what each reported accuracy means, on hand-made predictions."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import co_attention
from vlfusion.configuration import ConfigError
from vlfusion.data.questions import QUESTION_TYPES
from vlfusion.evaluation import evaluator


class _Fixed:
  """Stands in for the model: `apply` returns the given outputs whatever the parameters."""

  def __init__(self, outputs):
    self.outputs = outputs

  def apply(self, variables, batch, train=False):
    return self.outputs


def test_vqa_accuracy_is_the_soft_score_of_the_top_answer():
  scores = np.array([[0.0, 1.0, 0.3], [0.6, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  logits = np.array([[0, 5, 1], [4, 0, 1], [0, 3, 0], [0, 0, 9]], np.float32)  # picks 1, 0, 1, 2
  batch = {"vqa_scores": scores, "example_mask": np.array([1, 1, 1, 0], bool),  # last row is padding
           "vqa_question_type": np.array([0, 0, 1, 1], np.int32)}
  counts = evaluator._eval_counts(_Fixed({"vqa_logits": jnp.asarray(logits)}), None, batch)
  assert float(counts["vqa_correct"]) == pytest.approx(1.0 + 0.6 + 0.0)
  assert float(counts["vqa_total"]) == 3
  first, second = QUESTION_TYPES[0], QUESTION_TYPES[1]
  assert float(counts[f"vqa_{first}_correct"]) == pytest.approx(1.6)
  assert float(counts[f"vqa_{first}_total"]) == 2
  assert float(counts[f"vqa_{second}_correct"]) == 0.0 and float(counts[f"vqa_{second}_total"]) == 1


def test_pair_accuracy_counts_real_rows():
  logits = np.array([[2, 0], [0, 2], [0, 2], [0, 2]], np.float32)  # predicts 0, 1, 1, 1
  batch = {"pair_labels": np.array([0, 0, 1, 0], np.int32),
           "example_mask": np.array([1, 1, 1, 0], bool)}
  counts = evaluator._eval_counts(_Fixed({"pairs_logits": jnp.asarray(logits)}), None, batch)
  assert float(counts["pairs_correct"]) == 2 and float(counts["pairs_total"]) == 3


def test_no_evaluable_task_is_a_config_error():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.heads = ("mlm", "itm", "itc")
  config.eval.tasks = ("vqa",)
  with pytest.raises(ConfigError, match=r"config.eval.tasks=\('vqa',\): none is a head"):
    evaluator.Evaluator(types.SimpleNamespace(), config)


def test_recall_at_k_ranks_the_true_match():
  # query 0's match is best; query 1's is second; query 2's is third; query 3 ties its match (counts against).
  similarity = np.array([[0.9, 0.1, 0.2, 0.0],
                         [0.8, 0.7, 0.1, 0.0],
                         [0.6, 0.5, 0.4, 0.0],
                         [0.3, 0.0, 0.0, 0.3]])
  r = evaluator.recall_at_k(similarity, ks=(1, 2, 3))
  assert r == {"r1": 0.25, "r2": 0.75, "r3": 1.0}
