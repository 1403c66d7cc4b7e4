"""The text-only baseline of VQA: answer each question with its most frequent training answer.

A model that ignores the image can do no better than knowing, for each question string, which answer
the training split gives it most often. `text_prior_accuracy` scores that baseline with the same soft
scores as the model, so a reader sees at once how much of the model's accuracy the question alone
explains. Answers are weighted by their soft scores (1 per question on the shapes world, the VQA v2
soft score per annotated answer) and restricted to the answer vocabulary the model predicts over. A
question string never seen in training gets the top answer of its question type, or overall.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from vlfusion.data import questions as shapes_questions

# (question, question type, {answer: soft score}) of one training question.
Question = tuple[str, str, dict[str, float]]


def question_key(question: str) -> str:
  """The form questions are matched in: lowercase, whitespace collapsed."""
  return " ".join(question.lower().split())


class TextPrior:
  """The most frequent training answer per question string, per question type, and overall."""

  def __init__(self, by_question: dict[str, str], by_type: dict[str, str], overall: str):
    self.by_question = by_question
    self.by_type = by_type
    self.overall = overall

  def answer(self, question: str, question_type: str = "") -> str:
    """The baseline's answer; "" only when training had no answer at all."""
    found = self.by_question.get(question_key(question))
    if found is not None:
      return found
    return self.by_type.get(question_type, self.overall)

  @property
  def question_types(self) -> list[str]:
    """The question types seen in training, sorted."""
    return sorted(self.by_type)

  def to_json(self) -> dict[str, Any]:
    return {"by_question": self.by_question, "by_type": self.by_type, "overall": self.overall}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> TextPrior:
    return cls(dict(data["by_question"]), dict(data["by_type"]), str(data["overall"]))


def fit(training: Iterable[Question], answer_vocab: Sequence[str]) -> TextPrior:
  """The prior of `training` questions; ties go to the answer earlier in `answer_vocab`."""
  order = {a: i for i, a in enumerate(answer_vocab)}
  per_question: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  per_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  overall: collections.Counter = collections.Counter()
  for question, qtype, scores in training:
    key = question_key(question)
    for answer, score in scores.items():
      if answer in order and score > 0:
        per_question[key][answer] += score
        per_type[qtype][answer] += score
        overall[answer] += score

  def top(counter: collections.Counter) -> str:
    return min(counter, key=lambda a: (-counter[a], order[a])) if counter else ""

  return TextPrior({q: top(c) for q, c in per_question.items()},
                   {t: top(c) for t, c in per_type.items()}, top(overall))


def record_questions(record: dict[str, Any]) -> list[Question]:
  """The questions of one dataset record: all of a shapes-world scene's, or a VQA v2 record's one."""
  text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  if "question" in record:  # VQA v2: soft scores of the annotated answers.
    scores = {text(a): float(s) for a, s in zip(record["answers"], record["answer_scores"], strict=True)}
    return [(text(record["question"]), text(record.get("question_type", "")), scores)]
  return [(text(q), shapes_questions.QUESTION_TYPES[int(t)], {shapes_questions.ANSWERS[int(a)]: 1.0})
          for q, a, t in zip(record["questions"], record["answers"], record["question_types"], strict=True)]


def for_split(data_source: Sequence[dict[str, Any]], answer_vocab: Sequence[str],
              cache_dir: str | None = None, split: str = "train") -> TextPrior:
  """The prior of every question of `data_source` (a training split), cached as JSON in `cache_dir`.

  Reading a whole split takes a while on real data, so the table is kept beside the prepared dataset,
  keyed by the split, its size and the answer vocabulary.
  """
  key = hashlib.sha256(json.dumps([split, len(data_source), list(answer_vocab)]).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"vlfusion_text_prior_{split}_{key}.json") if cache_dir else None
  if path and os.path.isfile(path):
    with open(path) as f:
      return TextPrior.from_json(json.load(f))
  logging.info("Computing the VQA text prior over %d %s records.", len(data_source), split)
  prior = fit((q for i in range(len(data_source)) for q in record_questions(data_source[i])), answer_vocab)
  if path:
    try:
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        json.dump(prior.to_json(), f)
      os.replace(tmp, path)
    except OSError as e:  # a read-only dataset directory: recompute next time.
      logging.warning("Could not cache the VQA text prior at %s: %s", path, e)
  return prior
