"""Visual question answering (VQA v2; the shapes world's questions), as LXMERT and UNITER fine-tune it.

Head: Linear -> GELU -> LayerNorm -> Linear over the answer vocabulary on the pooled output
(`heads.MlpClassifier`, `config.model.vqa.num_answers`; 0 takes the data's vocabulary). Rows: a
question as the text, `vqa_scores` [A] (soft scores), `vqa_question_type` (shapes world) and
`vqa_answer_type` (VQA v2). Loss: binary cross-entropy on the soft scores. Evaluation: the soft score of
the arg-max answer, with shuffled images, the text prior's (`tasks.text_prior`), by question type
and by answer type.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlfusion.data import datasets, questions
from vlfusion.errors import ConfigError
from vlfusion.models.heads import MlpClassifier
from vlfusion.tasks import text_prior
from vlfusion.tasks.base import (
  EvalHost,
  HeadParts,
  Objective,
  Task,
  example_weights,
  grouped_metrics,
  safe,
  sums,
  with_shuffled,
)

# VQA v2 answer types, as `vqa_answer_type` indexes them (-1: none, e.g. the shapes world).
ANSWER_TYPES = ("yes/no", "number", "other")


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def head(c: Any, parts: HeadParts) -> MlpClassifier:
  return MlpClassifier(2 * parts.pooled_size, c.vqa.num_answers, c.layer_norm_eps, parts.dtype,
                       parts.param_dtype)


def vqa_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array, **_):
  """Binary cross-entropy of `vqa_logits` against the soft scores `vqa_scores`, summed over answers and
  averaged over questions: the mean over answers times their number, as UNITER and ViLT scale it.
  `vqa_score` is the soft score of the arg-max answer (the VQA accuracy)."""
  logits = outputs["vqa_logits"]
  scores = batch["vqa_scores"].astype(jnp.float32)
  weights = example_weights(batch)
  bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, scores), axis=-1)
  loss = jnp.sum(bce * weights) / safe(denominator)
  top = jnp.take_along_axis(scores, jnp.argmax(logits, -1)[:, None], axis=-1)[:, 0]
  return loss, {"vqa_loss": loss, "vqa_score": jnp.sum(top * weights) / safe(denominator)}


# -- rows --------------------------------------------------------------------------------------------

class RowState:
  """What a row builder keeps for VQA rows: the answer index, and the shapes world's question-type
  weights (`config.data.question_type_weights`) as the training steps at which each phase starts and
  each phase's weights indexed by type id (None = the uniform draw)."""

  def __init__(self, config: Any, answer_vocab: list[str]):
    self.answer_index = {a: i for i, a in enumerate(answer_vocab)}
    phases = questions.parse_type_weight_schedule(config.data.question_type_weights)
    self.phase_starts = [start for start, _ in phases]
    self.type_weights = [np.array([named.get(t, 1.0) for t in questions.QUESTION_TYPES])
                         if named else None for _, named in phases]

  def question_index(self, types: Any, rng: np.random.Generator, step: int | None) -> int:
    weights = None if step is None else self.type_weights[bisect.bisect_right(self.phase_starts, step) - 1]
    p = None if weights is None else weights[np.asarray(types, int)]
    if p is None or p.sum() == 0:
      return int(rng.integers(len(types)))  # the draw every run made before weights existed.
    return int(rng.choice(len(p), p=p / p.sum()))


def own_text(rows: Any, record: dict[str, Any], rng: np.random.Generator, ex: dict[str, Any],
             step: int | None = None) -> str:
  """The text of a VQA row (a question), filling `vqa_scores` [A], `vqa_question_type` (shapes world)
  and `vqa_answer_type` (VQA v2, index into `ANSWER_TYPES`) in `ex`; -1 where the data has none.

  A shapes-world scene asks one of its questions, uniformly; in the rows of training step `step`
  with `config.data.question_type_weights`, with probability proportional to its type's weight in
  the phase `step` is in (a scene whose questions all weigh 0 asks one of them uniformly).
  Evaluation rows (`step` None) keep the uniform draw."""
  state = rows.task_state("vqa")
  scores = np.zeros((len(rows.answer_vocab),), np.float32)
  if "question" in record:  # VQA v2: one question per record, soft scores per answer.
    for answer, score in zip(record["answers"], record["answer_scores"], strict=True):
      if _text(answer) in state.answer_index:
        scores[state.answer_index[_text(answer)]] = score
    ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(-1)
    answer_type = _text(record.get("answer_type", ""))
    ex["vqa_answer_type"] = np.int32(ANSWER_TYPES.index(answer_type) if answer_type in ANSWER_TYPES else -1)
    return _text(record["question"])
  q = state.question_index(record["question_types"], rng, step)
  scores[int(record["answers"][q])] = 1.0
  ex["vqa_scores"], ex["vqa_question_type"] = scores, np.int32(record["question_types"][q])
  ex["vqa_answer_type"] = np.int32(-1)
  return _text(record["questions"][q])


# -- data checks -------------------------------------------------------------------------------------

def check_heads(config: Any, builder: Any, answer_vocab: list[str]) -> None:
  m, name = config.model, config.data.name
  if m.vqa.num_answers != len(answer_vocab):
    raise ConfigError(f"config.model.vqa.num_answers={m.vqa.num_answers} but {name} has "
                      f"{len(answer_vocab)} answers in its vocabulary")


def resolve_num_answers(config: Any) -> None:
  """Sets `config.model.vqa.num_answers` to the size of the data's answer vocabulary when it is 0.

  Runs before the model is built (`Setup`), so the VQA head fits the data and the resolved size is what
  `workdir/config.json` records. Does nothing without the 'vqa' head or with a size already set.
  """
  m = config.model
  if "vqa" not in m.heads or m.vqa.num_answers:
    return
  _, builder = datasets.open_dataset(config, config.data.train_split, jax.process_index(),
                                     jax.process_count())
  m.vqa.num_answers = len(datasets.answer_vocab(config, builder))
  logging.info("config.model.vqa.num_answers=0: set to %d, the answer vocabulary of %s.",
               m.vqa.num_answers, config.data.name)


# -- evaluation --------------------------------------------------------------------------------------

def eval_counts(outputs, shuffled, batch, question_types=questions.QUESTION_TYPES):
  """The soft score of the arg-max answer (min(#humans who gave it / 3, 1) on VQA v2), with shuffled
  images and the text prior's answer (`vqa_prior_answer`, -1 scoring 0); by question type
  ("type:<t>", `vqa_question_type` indexing `question_types`) and VQA v2 answer type ("answer:<a>")."""
  if "vqa_logits" not in outputs or "vqa_scores" not in batch:
    return None
  question_types = questions.QUESTION_TYPES if question_types is None else question_types
  scores = batch["vqa_scores"].astype(jnp.float32)
  score_of = lambda answer: jnp.take_along_axis(scores, jnp.maximum(answer, 0)[:, None], -1)[:, 0] * (
      answer >= 0)
  predicted = lambda out: score_of(jnp.argmax(out["vqa_logits"], -1))
  values = with_shuffled({"correct": predicted(outputs)}, shuffled, predicted)
  if "vqa_prior_answer" in batch:
    values["prior"] = score_of(batch["vqa_prior_answer"])
  example = example_weights(batch)
  counts = {"": sums(values, example)}
  if "vqa_question_type" in batch:
    for k, qtype in enumerate(question_types):
      counts[f"type:{qtype}"] = sums(values, example * (batch["vqa_question_type"] == k))
  if "vqa_answer_type" in batch:
    for k, atype in enumerate(ANSWER_TYPES):
      counts[f"answer:{atype}"] = sums(values, example * (batch["vqa_answer_type"] == k))
  return counts


class VqaHost:
  """The host side of VQA evaluation: each row's text-prior answer (`vqa_prior_answer`), and on VQA v2
  (`named_types`) its question type as an index into the types seen in training."""

  def __init__(self, prior: text_prior.TextPrior | None, answer_vocab: list[str], named_types: bool):
    self.prior = prior
    self.named_types = named_types
    self.question_types = (tuple(prior.question_types) if prior else ()) if named_types else \
        questions.QUESTION_TYPES
    self.answer_index = {a: i for i, a in enumerate(answer_vocab)}
    self.type_index = {t: i for i, t in enumerate(self.question_types)}

  def __call__(self, local: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    if self.prior is None or "text" not in host:
      return local
    names = host.get("vqa_question_type_name")
    if self.named_types:
      local["vqa_question_type"] = np.array([self.type_index.get(str(t), -1) for t in names], np.int32)
    else:
      qt = questions.QUESTION_TYPES
      names = [qt[t] if 0 <= t < len(qt) else "" for t in local["vqa_question_type"]]
    answers = [self.prior.answer(str(q), str(t)) for q, t in zip(host["text"], names, strict=True)]
    local["vqa_prior_answer"] = np.array([self.answer_index.get(a, -1) for a in answers], np.int32)
    return local


def eval_host(config: Any, source: Any, train_source: Any) -> EvalHost | None:
  """The text prior of the training split (config.data.train_split; none when it cannot be opened)."""
  if "vqa" not in source.objectives:
    return None
  try:
    train = train_source()
  except ConfigError as e:
    logging.warning("No VQA text prior: %s", e)
    train = None
  prior = None if train is None else text_prior.for_split(
      train.data_source, train.answer_vocab, train.builder.data_dir, config.data.train_split)
  named = "question_types" not in (source.builder.info.metadata or {})  # VQA v2: the annotations' strings.
  host = VqaHost(prior, source.answer_vocab, named)
  return EvalHost(keep_text=prior is not None, context=host.question_types, inputs=host)


TASK = Task(
    name="vqa",
    head=head,
    forward=lambda model, h, batch, fused: {"vqa_logits": h(fused.pooled)},
    reads_pooled=True,
    objective=Objective(lambda b: jnp.sum(example_weights(b)), vqa_loss),
    own_text=own_text,
    row_state=RowState,
    data_feature="answers",
    host_fields={"vqa_question_type_name": lambda record: _text(record.get("question_type", ""))},
    check_heads=check_heads,
    resolve=resolve_num_answers,
    output="vqa_logits",
    image_bound=True,
    eval_counts=eval_counts,
    metrics=lambda groups: grouped_metrics(groups, {"type": "by_type", "answer": "by_answer_type"}),
    eval_host=eval_host,
)
