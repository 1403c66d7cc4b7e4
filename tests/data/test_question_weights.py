"""config.data.question_type_weights: training rows of the shapes world's VQA ask question types in
proportion to their weights, phase by phase; evaluation rows do not change; bad weights are refused,
naming the field."""

import collections

import numpy as np
import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion import configuration
from vlfusion.data import pipeline, questions

VQA = {"objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.vqa": 1.0, "model.heads": ("vqa",),
       "model.vqa.num_answers": len(questions.ANSWERS)}


def _type_counts(source, steps):
  counts = collections.Counter()
  for step in steps:
    for t in source.get_batch(step)["vqa_question_type"]:
      counts[questions.QUESTION_TYPES[int(t)]] += 1
  return counts


def test_training_rows_follow_the_weights_and_evaluation_rows_do_not(data_dir):
  plain = tiny_config(co_attention, data_dir, **VQA)
  weighted = tiny_config(co_attention, data_dir, **VQA,
                         **{"data.question_type_weights": "relation:0,direction:4"})
  configuration.validate(weighted)
  before = _type_counts(pipeline.make_batch_source(plain, "train"), range(10))
  after = _type_counts(pipeline.make_batch_source(weighted, "train"), range(10))
  rows = sum(before.values())
  assert before["relation"] > 0.08 * rows and after["relation"] == 0
  # A scene asking all six types asks direction 4/9 of the time instead of 1/6.
  assert after["direction"] > 2 * before["direction"]
  assert after["colour"] < before["colour"]  # the other types give way.
  # Evaluation draws as before, so figures stay comparable across training mixes.
  a = next(pipeline.make_batch_source(plain, "validation").eval_batches(64))
  b = next(pipeline.make_batch_source(weighted, "validation").eval_batches(64))
  for key in ("text_ids", "vqa_scores", "vqa_question_type"):
    np.testing.assert_array_equal(a[key], b[key])


def test_each_phase_of_a_schedule_weighs_the_rows_of_its_steps(data_dir):
  schedule = tiny_config(co_attention, data_dir, **VQA, **{
      "data.question_type_weights": "relation:0,direction:4; 5=direction:0; 8="})
  configuration.validate(schedule)
  source = pipeline.make_batch_source(schedule, "train")
  first, second = _type_counts(source, range(5)), _type_counts(source, range(5, 8))
  assert first["relation"] == 0 and first["direction"] > 0.2 * sum(first.values())
  assert second["direction"] == 0 and second["relation"] > 0
  # The last, empty phase is the uniform draw: its rows are the unweighted run's rows.
  plain = pipeline.make_batch_source(tiny_config(co_attention, data_dir, **VQA), "train")
  for step in (8, 9):
    np.testing.assert_array_equal(source.get_batch(step)["text_ids"], plain.get_batch(step)["text_ids"])


@pytest.mark.parametrize("weights,overrides,match", [
    ("colour:1,where:2", VQA, r"'where:2' is not"),
    ("direction", VQA, r"'direction' is not <question type>:<weight>"),
    ("direction:-1", VQA, r"the weight of 'direction' must be given once"),
    ("direction:2,direction:3", VQA, r"the weight of 'direction' must be given once"),
    (",".join(f"{t}:0" for t in questions.QUESTION_TYPES), VQA, r"gives every question type weight 0"),
    ("direction:4", {}, r"does nothing.*objectives\.vqa=0"),
    ("direction:4; relation:0", VQA, r"phase 'relation:0' must start with '<step>='"),
    ("direction:4; 300=relation:0; 200=", VQA, r"phase '200=' must start .* steps increasing"),
    ("100=direction:4", VQA, r"phase '100=direction:4' must start .* from 0"),
    ("direction:4; 90000=", VQA, r"last phase starts at step 90000, after .*num_steps=2000"),
])
def test_bad_weights_are_refused_before_anything_is_built(data_dir, weights, overrides, match):
  config = tiny_config(co_attention, data_dir, **overrides, **{"data.question_type_weights": weights})
  with pytest.raises(configuration.ConfigError, match=r"config\.data\.question_type_weights=.*" + match):
    configuration.validate(config)
