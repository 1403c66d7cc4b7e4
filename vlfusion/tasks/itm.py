"""Image-text matching: does the caption describe the image? (label 1 = it does)

Head: Dense(2) on the pooled output (`heads.ItmHead`). Rows: caption rows (`itm_labels`, and the
negative's kind and the caption's form, `itm_negative_kind` / `itm_caption_form`). Loss: two-way
cross-entropy. Evaluation: accuracy with shuffled images, by negative kind and caption form, and on
relation captions against their swaps with each label weighing half (`relation_balanced`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from vlfusion.data.scenes import CAPTION_KINDS, NEGATIVE_KINDS
from vlfusion.models.heads import ItmHead
from vlfusion.tasks.base import (
  HeadParts,
  Task,
  classification_loss,
  example_weights,
  grouped_metrics,
  summarize,
  sums,
  with_shuffled,
)


def head(c: Any, parts: HeadParts) -> ItmHead:
  return ItmHead(dtype=parts.dtype, param_dtype=parts.param_dtype)


def eval_counts(outputs, shuffled, batch, context=None):
  """Accuracy over the real rows; by negative kind ("kind:<k>"), by caption form ("form:<f>"), and the
  two halves of `relation_balanced` ("balanced:positive", "balanced:swap")."""
  if "itm_logits" not in outputs:
    return None
  correct = lambda out: (jnp.argmax(out["itm_logits"], -1) == batch["itm_labels"]).astype(jnp.float32)
  values = with_shuffled({"correct": correct(outputs)}, shuffled, correct)
  example = example_weights(batch)
  counts = {"": sums(values, example)}
  if "itm_negative_kind" in batch:  # accuracy on positives and on each kind of negative.
    for k, kind in enumerate(NEGATIVE_KINDS):
      counts[f"kind:{kind}"] = sums(values, example * (batch["itm_negative_kind"] == k))
  if "itm_caption_form" in batch:  # by caption form, both labels; relation captions against swaps.
    form = batch["itm_caption_form"]
    for k, name in enumerate(CAPTION_KINDS):
      counts[f"form:{name}"] = sums(values, example * (form == k))
    relation = CAPTION_KINDS.index("relation")
    counts["balanced:positive"] = sums(values, example * (form == relation) * batch["itm_labels"])
    counts["balanced:swap"] = sums(
        values, example * (batch["itm_negative_kind"] == NEGATIVE_KINDS.index("relation")))
  return counts


def balanced(positive: dict[str, float], swap: dict[str, float]) -> dict[str, Any]:
  """ITM on relation captions against their swapped-relation negatives, each label weighing half.

  A relation caption and its swap share every word, so no rule on the text tells them apart: a model
  that ignores the image, or answers one label, scores 0.5 here whatever the mix of labels.
  """
  both = {"positive": summarize(positive), "swap": summarize(swap)}
  out: dict[str, Any] = {name: (both["positive"][name] + both["swap"][name]) / 2
                         for name in both["positive"] if name != "count" and name in both["swap"]}
  out["count"] = both["positive"]["count"] + both["swap"]["count"]
  for label, values in both.items():  # flat, as TensorBoard scalars want them.
    out.update({f"{label}_{name}": value for name, value in values.items()})
  return out


def metrics(groups: dict[str, dict[str, float]]) -> dict[str, Any]:
  """Accuracy, `relation_balanced` (when both halves have rows), `by_kind` (the positives as
  "positive") and `by_form`."""
  out = summarize(groups[""])
  if all(groups.get(f"balanced:{g}", {}).get("total", 0) > 0 for g in ("positive", "swap")):
    out["relation_balanced"] = balanced(groups["balanced:positive"], groups["balanced:swap"])
  rename = lambda kind, name: "positive" if (kind, name) == ("kind", "none") else name
  grouped = grouped_metrics(groups, {"kind": "by_kind", "form": "by_form"}, rename)
  return out | {k: v for k, v in grouped.items() if k in ("by_kind", "by_form")}


TASK = Task(
    name="itm",
    head=head,
    forward=lambda model, h, batch, fused: {"itm_logits": h(fused.pooled)},
    reads_pooled=True,
    objective=classification_loss("itm", "itm_logits", "itm_labels"),
    output="itm_logits",
    image_bound=True,
    eval_counts=eval_counts,
    metrics=metrics,
)
