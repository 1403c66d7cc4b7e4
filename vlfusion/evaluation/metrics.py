"""Metrics with their published definitions, on plain Python data.

VQA accuracy scores a prediction against each annotator's answer with the official normalisation and soft
score, defined in `vlfusion.data.vqa_answers` (the data builders score the answers they store with them).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence

from vlfusion.data.vqa_answers import normalize_answer, soft_score


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[float]:
  """One VQA accuracy per question: `predictions[i]` against the annotators' raw `answers[i]`."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
  scores = []
  for i, (prediction, given) in enumerate(zip(predictions, answers, strict=True)):
    if not given:
      raise ValueError(f"question {i} has no annotator answers")
    normalized = normalize_answer(prediction)
    matching = sum(normalize_answer(a) == normalized for a in given)
    scores.append(soft_score(matching, len(given)))
  return scores


def accuracy_by_answer_type(scores: Sequence[float], answer_types: Sequence[str]) -> dict:
  """{"overall": mean, "by_answer_type": {type: mean}} as the official evaluation reports them (as
  fractions; the official script prints percentages)."""
  if len(scores) != len(answer_types):
    raise ValueError(f"{len(scores)} scores but {len(answer_types)} answer types")
  groups: dict[str, list[float]] = collections.defaultdict(list)
  for score, answer_type in zip(scores, answer_types, strict=True):
    groups[answer_type].append(score)
  return {"overall": sum(scores) / max(len(scores), 1),
          "by_answer_type": {t: sum(v) / len(v) for t, v in sorted(groups.items())}}


def write_vqa_results(path: str, question_ids: Sequence[int], answers: Sequence[str]) -> None:
  """The official result file of a VQA submission: `[{"question_id": int, "answer": str}, ...]`."""
  if len(question_ids) != len(answers):
    raise ValueError(f"{len(question_ids)} question ids but {len(answers)} answers")
  if len(set(question_ids)) != len(question_ids):
    raise ValueError("question ids repeat: the evaluation server takes one answer per question")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump([{"question_id": int(q), "answer": str(a)} for q, a in zip(question_ids, answers, strict=True)],
              f)
