"""VQA accuracy, normalisation and result file against the published definitions, on hand-made cases."""

import itertools
import json

import pytest

from vlfusion.evaluation import metrics


def _leave_one_out(prediction: str, answers: list[str]) -> float:
  """The official formula written out: over each annotator left out, min(#others who match / 3, 1)."""
  pred = metrics.normalize_answer(prediction)
  normalized = [metrics.normalize_answer(a) for a in answers]
  accs = [min(1.0, sum(a == pred for j, a in enumerate(normalized) if j != i) / 3)
          for i in range(len(answers))]
  return sum(accs) / len(accs)


@pytest.mark.parametrize("matching,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_ten_annotators_give_the_published_steps(matching, expected):
  answers = ["yes"] * matching + ["no"] * (10 - matching)
  assert metrics.vqa_accuracy(["yes"], [answers]) == [pytest.approx(expected)]


def test_annotator_patterns_agree_with_the_leave_one_out_formula():
  patterns = [
      ["2"] * 3 + ["two"] * 2 + ["3"] * 5,       # number words count as digits: "2" matches 5.
      ["red"] + ["blue"] * 9,
      ["a dog"] * 4 + ["dog"] * 4 + ["cat"] * 2,  # articles dropped: "dog" matches 8.
      ["yes", "no", "yes"],                      # three annotators.
      ["left", "right", "left", "left", "up", "down", "left", "right", "up", "left"],
  ]
  predictions = ["2", "3", "dog", "red", "cat", "yes", "no", "left", "right", "up", "sideways"]
  for answers, prediction in itertools.product(patterns, predictions):
    expected = _leave_one_out(prediction, answers)
    assert metrics.vqa_accuracy([prediction], [answers]) == [pytest.approx(expected)], (prediction, answers)
  # a few by hand
  scores = metrics.vqa_accuracy(["two", "red", "the dog", "yes", "left", "right"],
                                patterns[:4] + [patterns[4]] * 2)
  assert scores == pytest.approx([1.0, 0.3, 1.0, 2 / 3 * 1 / 3 * 1 + 1 / 3 * 2 / 3, 1.0, 0.6])


@pytest.mark.parametrize("raw,normalized", [
    ("Yes.", "yes"),
    ("  The Dog!\n", "dog"),
    ("an apple", "apple"),
    ("Two", "2"),
    ("none", "0"),
    ("ten dogs", "10 dogs"),
    ("2.5", "2.5"),            # a period before a digit stays.
    ("3.", "3"),
    ("1,000", "1000"),         # a comma inside a number is removed...
    ("red,blue", "red blue"),  # ...elsewhere punctuation not next to a space becomes one
    ("red, blue", "red blue"),  # and next to a space it is removed.
    ("t-shirt", "t shirt"),
    ("dont", "don't"),
    ("isnt it", "isn't it"),
    ("couldnt've", "couldn't've"),
    ("couldn'tve", "couldn't've"),
    ("twas", "'twas"),
    ("don't", "don't"),
    ("yes\tplease", "yes please"),
])
def test_normalisation_cases(raw, normalized):
  assert metrics.normalize_answer(raw) == normalized


def test_normalisation_makes_answers_match():
  answers = ["don't know"] * 2 + ["dont know"] * 2 + ["no"] * 6
  assert metrics.vqa_accuracy(["Don't know."], [answers]) == [pytest.approx(1.0)]
  assert metrics.vqa_accuracy(["1,000"], [["1000"] * 3 + ["many"] * 7]) == [pytest.approx(0.9)]


def test_results_by_answer_type():
  scores = [1.0, 0.0, 0.6, 0.3]
  out = metrics.accuracy_by_answer_type(scores, ["yes/no", "yes/no", "number", "other"])
  assert out["overall"] == pytest.approx(1.9 / 4)
  assert out["by_answer_type"] == pytest.approx({"yes/no": 0.5, "number": 0.6, "other": 0.3})


def test_result_file_is_the_official_format(tmp_path):
  path = str(tmp_path / "out" / "vqa_test-dev_results.json")
  metrics.write_vqa_results(path, [5, 7], ["yes", "2"])
  with open(path) as f:
    assert json.load(f) == [{"question_id": 5, "answer": "yes"}, {"question_id": 7, "answer": "2"}]
  with pytest.raises(ValueError, match="question ids repeat"):
    metrics.write_vqa_results(path, [5, 5], ["yes", "no"])


def test_mismatched_lengths_are_errors():
  with pytest.raises(ValueError, match="2 predictions but 1 answer lists"):
    metrics.vqa_accuracy(["a", "b"], [["a"]])
  with pytest.raises(ValueError, match="question 0 has no annotator answers"):
    metrics.vqa_accuracy(["a"], [[]])
