"""Pair reasoning (NLVR2; the shapes world's pairs): is a statement true of two images?

Head: the statement encoded with each image, the two pooled outputs concatenated, then Linear -> GELU
-> LayerNorm -> Linear(2) (`heads.MlpClassifier`, as LXMERT and UNITER's pair setting). Rows: the
statement as the text, `pair_labels`, and the second image under `pair_` keys. Loss: two-way
cross-entropy. Evaluation: accuracy, with shuffled images (both images of a row move together).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlfusion.models.heads import MlpClassifier
from vlfusion.tasks.base import (
  Fused,
  HeadParts,
  Task,
  classification_counts,
  classification_loss,
  grouped_metrics,
)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def head(c: Any, parts: HeadParts) -> MlpClassifier:
  return MlpClassifier(2 * parts.pooled_size, 2, c.layer_norm_eps, parts.dtype, parts.param_dtype)


def forward(model: Any, pairs_head: MlpClassifier, batch: dict[str, Any], fused: Fused
            ) -> dict[str, jax.Array]:
  """`pairs_logits` [B,2] when the batch holds a second image (`pair_regions` / `pair_image`); at init
  the first image stands in."""
  key = "pair_regions" if model.config.image.input == "regions" else "pair_image"
  if key not in batch and not model.is_initializing():
    return {}
  prefix = "pair_" if key in batch else ""
  _, _, pooled_2 = model.encode(batch, fused.deterministic, prefix)
  return {"pairs_logits": pairs_head(jnp.concatenate([fused.pooled, pooled_2], axis=-1))}


def partner(rows: Any, record: dict[str, Any]) -> dict[str, Any]:
  """The record that holds the second image of a pair row."""
  if "pair_image_bytes" in record:  # NLVR2
    return {"image_bytes": record["pair_image_bytes"]}
  return rows.data_source[int(record["pair_index"])]


def own_text(rows: Any, record: dict[str, Any], rng: np.random.Generator, ex: dict[str, Any],
             step: int | None = None) -> str:
  """The statement, filling `pair_labels` and the second image (`pair_` + its image keys)."""
  ex["pair_labels"] = np.int32(record["pair_label"])
  pair = rows.media(partner(rows, record), rng, step is not None)
  ex.update({f"pair_{k}": v for k, v in pair.items()})
  return _text(record["pair_statement"])


TASK = Task(
    name="pairs",
    head=head,
    forward=forward,
    reads_pooled=True,
    objective=classification_loss("pairs", "pairs_logits", "pair_labels"),
    own_text=own_text,
    data_feature="pair_statement",
    second_image=partner,
    output="pairs_logits",
    image_bound=True,
    eval_counts=classification_counts("pairs_logits", "pair_labels"),
    metrics=lambda groups: grouped_metrics(groups, {}),
)
