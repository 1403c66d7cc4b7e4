"""The VQA text-only baseline on hand-made training questions."""

import numpy as np

from vlfusion.data import questions
from vlfusion.tasks import text_prior

VOCAB = ["no", "yes", "red", "blue", "2", "3"]


def test_most_frequent_answer_per_question_then_per_type_then_overall():
  training = [
      ("Is there a dog?", "is there", {"yes": 1.0}),
      ("is there a  dog?", "is there", {"yes": 1.0}),  # the same question string (case, spaces).
      ("is there a dog?", "is there", {"no": 1.0}),
      ("is there a cat?", "is there", {"no": 1.0}),
      ("what colour is it?", "what color", {"red": 0.3, "blue": 1.0}),  # soft scores are summed:
      ("what colour is it?", "what color", {"red": 1.0, "blue": 0.6}),  # blue 1.6 > red 1.3.
      ("how many?", "how many", {"2": 1.0, "7": 1.0, "3": 0.0}),  # "7" is not in the vocab.
      ("how many?", "how many", {"7": 1.0}),
  ]
  prior = text_prior.fit(training, VOCAB)
  assert prior.answer("is there a dog?") == "yes"
  assert prior.answer("IS THERE A CAT?") == "no"
  assert prior.answer("what colour is it?") == "blue"
  assert prior.answer("how many?") == "2"
  # unseen question strings: the top answer of their type (no 2.0 vs yes 2.0: the vocab's first), or overall.
  assert prior.answer("is there a bird?", "is there") == "no"
  assert prior.answer("what colour is the sky?", "what color") == "blue"
  assert prior.answer("why?", "why") == "no"
  assert prior.question_types == ["how many", "is there", "what color"]
  again = text_prior.TextPrior.from_json(prior.to_json())
  assert again.answer("what colour is it?") == "blue" and again.overall == prior.overall


def test_ties_go_to_the_earlier_vocabulary_answer():
  prior = text_prior.fit([("q", "t", {"blue": 1.0}), ("q", "t", {"red": 1.0})], VOCAB)
  assert prior.answer("q") == "red"


def test_shapes_world_records_give_every_question(tmp_path):
  a = questions.ANSWERS
  records = [{"questions": [b"is there a red circle?", b"how many squares are there?"],
              "answers": np.array([a.index("yes"), a.index("two")]), "question_types": np.array([3, 2])},
             {"questions": [b"is there a red circle?"], "answers": np.array([a.index("no")]),
              "question_types": np.array([3])},
             {"questions": [b"is there a red circle?"], "answers": np.array([a.index("no")]),
              "question_types": np.array([3])}]
  prior = text_prior.for_split(records, a, str(tmp_path))
  assert prior.answer("is there a red circle?") == "no"
  assert prior.answer("how many circles are there?", "count") == "two"
  assert len(list(tmp_path.glob("vlfusion_text_prior_train_*.json"))) == 1  # cached
  records[1]["answers"][0] = a.index("yes")  # the cache is read, not the records.
  assert text_prior.for_split(records, a, str(tmp_path)).answer("is there a red circle?") == "no"
