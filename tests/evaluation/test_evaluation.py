"""The evaluator's counts: what each reported accuracy means, on hand-made predictions."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import co_attention
from vlfusion.configuration import ConfigError
from vlfusion.data.questions import QUESTION_TYPES
from vlfusion.evaluation import batched, evaluators
from vlfusion.tasks import itc


class _Fixed:
  """Stands in for the model's predict_fn: the given outputs whatever the parameters."""

  def __init__(self, outputs):
    self.outputs = outputs

  def __call__(self, params, batch):
    return self.outputs


def test_vqa_accuracy_is_the_soft_score_of_the_top_answer():
  scores = np.array([[0.0, 1.0, 0.3], [0.6, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  logits = np.array([[0, 5, 1], [4, 0, 1], [0, 3, 0], [0, 0, 9]], np.float32)  # picks 1, 0, 1, 2
  batch = {"vqa_scores": scores, "example_mask": np.array([1, 1, 1, 0], bool),  # last row is padding
           "vqa_question_type": np.array([0, 0, 1, 1], np.int32),
           "vqa_prior_answer": np.array([2, 2, 0, 0], np.int32)}  # scores 0.3, 1.0, 1.0
  counts = batched.eval_counts(_Fixed({"vqa_logits": jnp.asarray(logits)}), None, batch)["vqa"]
  assert float(counts[""]["correct"]) == pytest.approx(1.0 + 0.6 + 0.0)
  assert float(counts[""]["prior"]) == pytest.approx(0.3 + 1.0 + 1.0)
  assert float(counts[""]["total"]) == 3
  first, second = QUESTION_TYPES[0], QUESTION_TYPES[1]
  assert float(counts[f"type:{first}"]["correct"]) == pytest.approx(1.6)
  assert float(counts[f"type:{first}"]["total"]) == 2
  assert float(counts[f"type:{second}"]["correct"]) == 0.0 and float(counts[f"type:{second}"]["total"]) == 1
  metrics = batched.metrics_from_counts({"vqa": jax.tree.map(float, counts)})
  assert metrics["vqa"]["accuracy"] == pytest.approx(1.6 / 3)
  assert metrics["vqa"]["text_prior_accuracy"] == pytest.approx(2.3 / 3)
  assert metrics["vqa"]["by_type"][first]["count"] == 2
  assert set(metrics["vqa"]["by_type"]) == {first, second}  # types without rows are left out.


def test_pair_accuracy_counts_real_rows():
  logits = np.array([[2, 0], [0, 2], [0, 2], [0, 2]], np.float32)  # predicts 0, 1, 1, 1
  batch = {"pair_labels": np.array([0, 0, 1, 0], np.int32),
           "example_mask": np.array([1, 1, 1, 0], bool)}
  counts = batched.eval_counts(_Fixed({"pairs_logits": jnp.asarray(logits)}), None, batch)["pairs"][""]
  assert float(counts["correct"]) == 2 and float(counts["total"]) == 3


def test_relation_captions_and_their_swaps_weigh_half_each():
  """A model that rejects every relation-form caption is right on every swap but wrong on every true
  relation caption: its balanced relation accuracy is 0.5, whatever share of the rows are swaps."""
  from vlfusion.data.scenes import CAPTION_KINDS, NEGATIVE_KINDS

  relation, describe = CAPTION_KINDS.index("relation"), CAPTION_KINDS.index("describe")
  swap, attribute = NEGATIVE_KINDS.index("relation"), NEGATIVE_KINDS.index("attribute")
  # rows: 1 true relation caption, 3 swaps, 1 true describe caption, 1 attribute negative, 1 padding.
  labels = np.array([1, 0, 0, 0, 1, 0, 0], np.int32)
  batch = {"itm_labels": labels, "example_mask": np.array([1, 1, 1, 1, 1, 1, 0], bool),
           "itm_negative_kind": np.array([0, swap, swap, swap, 0, attribute, 0], np.int32),
           "itm_caption_form": np.array([relation] * 4 + [describe] * 3, np.int32)}
  says_no_to_relations = np.array([[5, 0]] * 4 + [[0, 5], [5, 0], [0, 5]], np.float32)
  counts = batched.eval_counts(_Fixed({"itm_logits": jnp.asarray(says_no_to_relations)}), None, batch)
  metrics = batched.metrics_from_counts({"itm": jax.tree.map(float, counts["itm"])})["itm"]
  assert metrics["by_kind"]["relation"]["accuracy"] == 1.0  # the unbalanced column: every swap rejected.
  assert metrics["by_form"]["relation"] == {"accuracy": 0.75, "count": 4}
  balanced = metrics["relation_balanced"]
  assert balanced["accuracy"] == 0.5 and balanced["count"] == 4
  assert balanced["positive_accuracy"] == 0.0 and balanced["swap_accuracy"] == 1.0
  assert "itm_relation_balanced_accuracy" in evaluators.scalars({"itm": metrics})


class _ReadsImage:
  """Stands in for a model's predict_fn whose VQA answer is the answer index written in its image's
  first pixel."""

  def __call__(self, params, batch):
    return {"vqa_logits": jax.nn.one_hot(batch["image"][:, 0, 0, 0].astype(jnp.int32), 3)}


def test_a_model_that_reads_the_image_loses_accuracy_when_images_are_shuffled():
  image = np.zeros((4, 2, 2, 3), np.float32)
  image[:, 0, 0, 0] = [0, 1, 2, 1]  # the right answer of each row.
  batch = {"image": image, "vqa_scores": np.eye(3, dtype=np.float32)[[0, 1, 2, 1]],
           "example_mask": np.ones(4, bool), "shuffled_images": {"image": image[[1, 2, 1, 0]]}}
  counts = batched.eval_counts(_ReadsImage(), None, batch)["vqa"][""]
  assert float(counts["correct"]) == 4
  assert float(counts["shuffled"]) == 0  # row i is shown the image the batch holds for it: 1, 2, 1, 0.
  del batch["shuffled_images"]  # no image of another image (a one-image split): no shuffled figure.
  assert "shuffled" not in batched.eval_counts(_ReadsImage(), None, batch)["vqa"][""]


def test_no_evaluable_task_is_a_config_error():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.heads = ("mlm", "itm", "itc")
  config.eval.tasks = ("vqa",)
  with pytest.raises(ConfigError, match=r"config.eval.tasks=\('vqa',\): none is a head"):
    evaluators.Evaluator(types.SimpleNamespace(), config)


def test_recall_at_k_ranks_the_true_match():
  # query 0's match is best; query 1's is second; query 2's is third; query 3 ties its match (counts against).
  similarity = np.array([[0.9, 0.1, 0.2, 0.0],
                         [0.8, 0.7, 0.1, 0.0],
                         [0.6, 0.5, 0.4, 0.0],
                         [0.3, 0.0, 0.0, 0.3]])
  r = itc.recall_at_k(similarity, ks=(1, 2, 3))
  assert r == {"r1": 0.25, "r2": 0.75, "r3": 1.0}


def test_vqa_v2_rows_get_type_ids_and_text_prior_answers():
  from vlfusion.tasks import text_prior

  prior = text_prior.fit([("what color is the bus?", "what color is the", {"red": 1.0}),
                          ("is it raining?", "is it", {"no": 1.0}),
                          ("is it sunny?", "is it", {"yes": 0.3})], ["yes", "no", "red", "blue"])
  from vlfusion.tasks import EvalHost, vqa

  host = vqa.VqaHost(prior, ["yes", "no", "red", "blue"], named_types=True)
  assert host.question_types == ("is it", "what color is the")  # the types seen in training.
  hosts = {"vqa": EvalHost(keep_text=True, context=host.question_types, inputs=host)}
  local = {"text": np.array(["What color is the bus?", "is it cold?", "why?"]),
           "vqa_question_type_name": np.array(["what color is the", "is it", "why"]),
           "vqa_question_type": np.full(3, -1, np.int32)}
  out = batched.host_inputs(local, hosts)
  assert "text" not in out and "vqa_question_type_name" not in out  # host strings never reach devices.
  np.testing.assert_array_equal(out["vqa_question_type"], [1, 0, -1])
  # a seen question; an unseen one of a seen type ("is it": no 1.0 > yes 0.3); an unseen type: overall.
  np.testing.assert_array_equal(out["vqa_prior_answer"], [2, 1, 1])
