"""What a task declares (`Task`), and the pieces several tasks share.

A task is one file under `vlfusion/tasks/`: the head it adds to the model, the fields its rows carry,
its loss, what its evaluation counts and how those counts become reported metrics. The model, the
losses, the rows, the data checks and the evaluator look a task up by name (`vlfusion.tasks.get`)
instead of branching on it. Every hook is optional: a task without a head reads another task's
(`eval_head`), a task without an objective is evaluated only, and so on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]
# {group: {value: sum, "total": n}}: group "" is the whole task, "<kind>:<name>" a slice of its rows.
Counts = dict[str, dict[str, jax.Array]]

# Per-row values summed per group: the model's score, with shuffled images, and the text prior's.
VALUES = {"correct": "accuracy", "shuffled": "accuracy_shuffled_images", "prior": "text_prior_accuracy"}


@dataclasses.dataclass(frozen=True)
class HeadParts:
  """What a head is built from besides the model config: compute and parameter dtypes, the width P of
  the pooled output, and the text embeddings (whose word table the MLM decoder is tied to)."""

  dtype: Any
  param_dtype: Any
  pooled_size: int
  text_embeddings: Any


@dataclasses.dataclass(frozen=True)
class Fused:
  """One forward pass up to the heads: the encoder's output, the image mask [B,Li], the pooled output
  [B,P], and how the pass runs (`deterministic`; `decode_mlm`, see `VisionLanguageModel.__call__`)."""

  encoded: Any
  image_mask: jax.Array
  pooled: jax.Array
  deterministic: bool
  decode_mlm: bool = True


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective as a weighted sum over the batch divided by a batch-wide denominator.

  `denominator(batch)` counts the targets of the whole batch; `loss(outputs, batch, denominator,
  **options) -> (loss, metrics)` ignores the options it does not take (`training.losses.total_loss`).
  """

  denominator: Callable[[dict[str, Any]], jax.Array]
  loss: Callable[..., tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class Task:
  """One task, by name. Fields left None mean the task has no such part.

  Attributes:
    name: the name in `config.objectives`, `config.model.heads` and `config.eval.tasks`.
    head: (model config, HeadParts) -> the linen head module (param tree `heads_<name>`).
    forward: (model, head, batch, Fused) -> the head's outputs (e.g. `{"vqa_logits": [B,A]}`).
    reads_pooled: whether the head reads the pooled output (a dual encoder's text pooler sees no image).
    objective: its loss; a task with one is a `config.objectives` entry.
    own_text: (row builder, record, rng, row, step or None) -> the row's text, filling the task's target
      fields in the row; None for tasks that read captions (the default row).
    data_feature: the dataset feature its rows need (a config error names the task without it).
    text_free: whether its rows need no text of their own (masked regions: it trains beside any task);
      otherwise a task without `own_text` reads captions, and cannot share rows with one that has it.
    text_targets: (row builder, text ids, text mask, positive, rng) -> the row's text inputs and targets
      (MLM corruption), or None to keep the text as tokenized.
    media_targets: (row builder, row, media record, positive, rng) -> fields added after the image
      (masked regions).
    second_image: (row builder, record) -> the record of a row's second image (pairs), shown with key
      prefix `pair_`.
    host_fields: {key: (record) -> value}: host-side strings `keep_text` adds to its rows (never sent
      to devices).
    row_state: (config, answer vocab) -> what a row builder keeps for the task's rows
      (`RowBuilder.task_state`).
    check_heads: (config, builder, answer vocab) -> raises ConfigError when a head size does not fit
      the data.
    resolve: (config) -> None; sets a field resolved from the data before the model is built.
    eval_head: the head its evaluation reads (default: its own; retrieval reads `itc`).
    eval_rows: the objective whose rows its evaluation reads (default: its own name).
    output: the output key its evaluation reads (e.g. `itm_logits`).
    image_bound: whether its accuracy depends on the image (then reported with shuffled images).
    eval_counts: (outputs, shuffled outputs or None, batch, context) -> Counts, or None when the
      outputs or batch lack what it reads; summed over the split.
    metrics: (Counts summed over the split) -> the task's reported metrics.
    eval_host: (config, batch source, train source opener) -> `EvalHost` or None: host-side inputs
      added to each evaluation batch (a text prior's answer) and the static `context` of its counts.
    gather: (outputs, batch) -> per-row arrays with a boolean "rows" selector, concatenated over the
      split on the host; `finish` turns them into the task's metrics (retrieval over ITC embeddings).
    finish: (gathered arrays) -> metrics.
    evaluator: "module:Class" of an evaluator that reads the split its own way,
      built as Class(predictor, config, batch source) with `run(params) -> metrics`.
  """

  name: str
  head: Callable[[Any, HeadParts], Any] | None = None
  forward: Callable[[Any, Any, dict[str, Any], Fused], dict[str, jax.Array]] | None = None
  reads_pooled: bool = False
  objective: Objective | None = None
  own_text: Callable[..., str] | None = None
  data_feature: str | None = None
  text_free: bool = False
  text_targets: Callable[..., dict[str, Any] | None] | None = None
  media_targets: Callable[..., dict[str, Any]] | None = None
  second_image: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
  host_fields: dict[str, Callable[[dict[str, Any]], Any]] = dataclasses.field(default_factory=dict)
  row_state: Callable[[Any, list[str]], Any] | None = None
  check_heads: Callable[[Any, Any, list[str]], None] | None = None
  resolve: Callable[[Any], None] | None = None
  eval_head: str | None = None
  eval_rows: str | None = None
  output: str | None = None
  image_bound: bool = False
  eval_counts: Callable[..., Counts | None] | None = None
  metrics: Callable[[dict[str, dict[str, float]]], dict[str, Any]] | None = None
  eval_host: Callable[..., Any] | None = None
  gather: Callable[[dict[str, jax.Array], dict[str, Any]], dict[str, jax.Array]] | None = None
  finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None
  evaluator: str | None = None

  @property
  def evaluated(self) -> bool:
    """Whether `config.eval.tasks` may name it."""
    return bool(self.eval_counts or self.gather or self.evaluator)

  @property
  def head_name(self) -> str:
    """The head its evaluation needs in `config.model.heads`."""
    return self.eval_head or self.name

  @property
  def rows_of(self) -> str:
    """The objective whose rows its evaluation reads."""
    return self.eval_rows or self.name


@dataclasses.dataclass
class EvalHost:
  """A task's host side of evaluation: whether rows keep their text, the static context its counts
  take, and `inputs(local, host)` adding host-computed fields (e.g. a text prior's answer) to a local
  batch whose host strings were popped into `host`."""

  keep_text: bool = False
  context: Any = None
  inputs: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None


# -- shared by the tasks' losses ---------------------------------------------------------------------

def example_weights(batch: dict[str, Any]) -> jax.Array:
  """1 for real rows, 0 for padding rows [B]."""
  return batch["example_mask"].astype(jnp.float32)


def safe(denominator: jax.Array) -> jax.Array:
  return jnp.maximum(denominator, 1.0)


def classification_loss(name: str, logits_key: str, labels_key: str) -> Objective:
  """Cross-entropy of `<logits_key>` [B,C] against integer `<labels_key>` [B] over the real rows,
  reporting `<name>_loss` and `<name>_accuracy`."""

  def loss_fn(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array, **_):
    logits = outputs[logits_key]
    weights = example_weights(batch)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch[labels_key])
    correct = (jnp.argmax(logits, -1) == batch[labels_key]).astype(jnp.float32)
    loss = jnp.sum(losses * weights) / safe(denominator)
    return loss, {f"{name}_loss": loss, f"{name}_accuracy": jnp.sum(correct * weights) / safe(denominator)}

  return Objective(lambda b: jnp.sum(example_weights(b)), loss_fn)


# -- shared by the tasks' evaluation -----------------------------------------------------------------

def sums(values: dict[str, jax.Array], weight: jax.Array) -> dict[str, jax.Array]:
  """Each per-row value summed over the rows `weight` selects, and their number as "total"."""
  return {**{k: jnp.sum(v * weight) for k, v in values.items()}, "total": jnp.sum(weight)}


def with_shuffled(values: dict[str, jax.Array], shuffled: dict[str, jax.Array] | None,
                  score: Callable[[dict[str, jax.Array]], jax.Array]) -> dict[str, jax.Array]:
  """`values` plus "shuffled": `score` of the outputs on shuffled images, when there are some."""
  return values | ({"shuffled": score(shuffled)} if shuffled is not None else {})


def summarize(group: dict[str, float]) -> dict[str, float]:
  """{"accuracy", "accuracy_shuffled_images", ["text_prior_accuracy"], "count"} of one group's sums."""
  total = group["total"]
  out = {name: group[value] / max(total, 1.0) for value, name in VALUES.items() if value in group}
  out["count"] = int(round(total))
  return out


def grouped_metrics(groups: dict[str, dict[str, float]], keys: dict[str, str],
                    rename: Callable[[str, str], str] = lambda kind, name: name) -> dict[str, Any]:
  """The whole task's summary, then each non-empty group "<kind>:<name>" under `keys[kind]` (e.g.
  "type" -> "by_type"), named by `rename(kind, name)`. Groups of kinds not in `keys` are skipped."""
  metrics = summarize(groups[""])
  for group, values in groups.items():
    if not group or values["total"] <= 0:
      continue
    kind, name = group.split(":", 1)
    if kind in keys:
      metrics.setdefault(keys[kind], {})[rename(kind, name)] = summarize(values)
  return metrics


def classification_counts(logits_key: str, labels_key: str, label_names: tuple[str, ...] = (),
                          prior_key: str | None = None):
  """`eval_counts` of a classifier: accuracy (and with shuffled images, and the text prior's answer in
  `<prior_key>` where the batch has it) over the real rows; with `label_names`, also per true label
  (groups "label:<name>")."""

  def counts(outputs, shuffled, batch, context=None) -> Counts | None:
    if logits_key not in outputs or labels_key not in batch:
      return None
    labels = batch[labels_key]
    correct = lambda out: (jnp.argmax(out[logits_key], -1) == labels).astype(jnp.float32)
    values = with_shuffled({"correct": correct(outputs)}, shuffled, correct)
    if prior_key and prior_key in batch:
      values["prior"] = (batch[prior_key] == labels).astype(jnp.float32)
    example = example_weights(batch)
    out = {"": sums(values, example)}
    for k, label in enumerate(label_names):
      out[f"label:{label}"] = sums(values, example * (labels == k))
    return out

  return counts
