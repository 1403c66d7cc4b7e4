"""Visual entailment (SNLI-VE; the shapes world's version): does the image entail the hypothesis,
contradict it, or neither?

As UNITER, VOLTA and ALBEF evaluate it: the image is the premise, the hypothesis the text, and a
three-way classifier reads the fused pooled output. Task name `ve` (`config.objectives.ve`,
`config.model.heads`, `config.eval.tasks`); results under `ve`.

Head: Linear -> GELU -> LayerNorm -> Linear(3) on the pooled output (`heads.MlpClassifier`, UNITER's
VE head). Data: an example holds its image as the other datasets do (`image`, or `boxes` and
`region_features`), `hypotheses` (texts) and `hypothesis_labels` (int32 per hypothesis, indexing
`LABELS`). Rows: one hypothesis of the example, drawn uniformly, as the text; `ve_labels`. Loss:
three-way cross-entropy (ALBEF). Evaluation: accuracy, with shuffled images, the text prior's (the
training split's most frequent label of the same hypothesis, else its most frequent label overall), and
per true label (`by_label`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vlfusion.data.visual_entailment import LABELS
from vlfusion.errors import ConfigError
from vlfusion.models.heads import MlpClassifier
from vlfusion.tasks import text_prior
from vlfusion.tasks.base import (
  EvalHost,
  HeadParts,
  Task,
  classification_counts,
  classification_loss,
  grouped_metrics,
)

NAME = "ve"
# `hypothesis_labels` / `ve_labels` index LABELS, the data's label names in order.


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def head(c: Any, parts: HeadParts) -> MlpClassifier:
  return MlpClassifier(2 * parts.pooled_size, len(LABELS), c.layer_norm_eps, parts.dtype,
                       parts.param_dtype)


def own_text(rows: Any, record: dict[str, Any], rng: np.random.Generator, ex: dict[str, Any],
             step: int | None = None) -> str:
  """One hypothesis of the example, drawn uniformly; its label in `ve_labels`."""
  hypotheses = record["hypotheses"]
  h = int(rng.integers(len(hypotheses)))
  ex["ve_labels"] = np.int32(np.asarray(record["hypothesis_labels"])[h])
  return _text(hypotheses[h])


def check_labels(config: Any, builder: Any, answer_vocab: list[str]) -> None:
  """The data's label names (`info.metadata["labels"]`, where it has them) are `LABELS`, in order."""
  labels = (builder.info.metadata or {}).get("labels")
  if labels is not None and tuple(labels) != LABELS:
    raise ConfigError(f"config.objectives.ve: {config.data.name} labels its hypotheses {list(labels)}, "
                      f"but the ve head predicts {list(LABELS)}")


def hypotheses_of(record: dict[str, Any]) -> list[text_prior.Question]:
  """(hypothesis, "", {label name: 1}) of each hypothesis of one example, as `text_prior.fit` reads."""
  labels = np.asarray(record["hypothesis_labels"])
  return [(_text(h), "", {LABELS[int(y)]: 1.0}) for h, y in zip(record["hypotheses"], labels, strict=True)]


def fit_prior(data_source: Any) -> text_prior.TextPrior:
  """The most frequent label of each hypothesis string of a training split, and overall."""
  return text_prior.fit((q for i in range(len(data_source)) for q in hypotheses_of(data_source[i])),
                        LABELS)


class VeHost:
  """Adds each evaluation row's text-prior label (`ve_prior_label`, -1 when training had none)."""

  def __init__(self, prior: text_prior.TextPrior):
    self.prior = prior

  def __call__(self, local: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    if "text" not in host:
      return local
    answers = [self.prior.answer(str(t)) for t in host["text"]]
    local["ve_prior_label"] = np.array([LABELS.index(a) if a in LABELS else -1 for a in answers],
                                       np.int32)
    return local


def eval_host(config: Any, source: Any, train_source: Any) -> EvalHost | None:
  """The text prior of the training split (config.data.train_split), or none when it cannot be read."""
  if NAME not in source.objectives:
    return None
  try:
    train = train_source()
  except ConfigError as e:
    logging.warning("No visual-entailment text prior: %s", e)
    return None
  return EvalHost(keep_text=True, inputs=VeHost(fit_prior(train.data_source)))


TASK = Task(
    name=NAME,
    head=head,
    forward=lambda model, h, batch, fused: {"ve_logits": h(fused.pooled)},
    reads_pooled=True,
    objective=classification_loss(NAME, "ve_logits", "ve_labels"),
    own_text=own_text,
    data_feature="hypotheses",
    check_heads=check_labels,
    output="ve_logits",
    image_bound=True,
    eval_counts=classification_counts("ve_logits", "ve_labels", LABELS, prior_key="ve_prior_label"),
    metrics=lambda groups: grouped_metrics(groups, {"label": "by_label"}),
    eval_host=eval_host,
)
