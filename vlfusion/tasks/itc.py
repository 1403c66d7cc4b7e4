"""Image-text contrastive learning (ALBEF, CLIP): matching pairs closer than every other pair.

Head: normalised projections of the unimodal text [CLS] and image summary, with a learned
temperature (`heads.ItcHead`, sized by `config.model.itc`). Rows: caption rows; only matching pairs
take part. Loss: symmetric InfoNCE over in-batch negatives. Evaluation: retrieval over the split's
matching pairs by the embeddings, R@1/5/10 both ways, `accuracy` = text-to-image R@1.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlfusion.models.heads import ItcHead
from vlfusion.tasks.base import HeadParts, Objective, Task, example_weights, safe


def head(c: Any, parts: HeadParts) -> ItcHead:
  return ItcHead(c.itc.embed_dim, temperature=c.itc.temperature, min_temperature=c.itc.min_temperature,
                 max_temperature=c.itc.max_temperature, image_input=c.image.input,
                 dtype=parts.dtype, param_dtype=parts.param_dtype)


def forward(model: Any, itc_head: ItcHead, batch: dict[str, Any], fused: Any) -> dict[str, jax.Array]:
  """`itc_logits` [B,B], `itc_text_embeds` / `itc_image_embeds` [B,E], `itc_temperature`."""
  return itc_head(fused.encoded.text_unimodal, fused.encoded.image_unimodal, fused.image_mask)


def rows(batch: dict[str, Any]) -> jax.Array:
  """Rows that take part in ITC: real examples whose caption matches their image."""
  return example_weights(batch) * (batch["itm_labels"] == 1).astype(jnp.float32)


def itc_loss(outputs: dict[str, jax.Array], batch: dict[str, Any], denominator: jax.Array, **_):
  """Symmetric InfoNCE over in-batch negatives (ALBEF/CLIP): for each matching row i, cross-entropy of
  text i against every candidate image and of image i against every candidate text, averaged.

  Candidates and positives are the rows with `itm_labels == 1` and `example_mask` (an ITM negative's
  caption does not describe its image). `itc_logits` [B,B] are over the global batch: inside jax.jit
  the batch is one jax.Array sharded over the data axes, so the negatives already come from every
  data-parallel device. With gradient accumulation each micro-batch contrasts only its own rows, so
  unlike the other objectives ITC is not exactly the full-batch loss then (its denominator still is).
  """
  logits = outputs["itc_logits"]
  selected = rows(batch)
  valid = (selected[:, None] * selected[None, :]) > 0
  masked = jnp.where(valid, logits, -1e9)
  diag = jnp.diagonal(logits)
  t2i = jax.nn.logsumexp(masked, axis=1) - diag
  i2t = jax.nn.logsumexp(masked, axis=0) - diag
  losses = 0.5 * (t2i + i2t)
  loss = jnp.sum(jnp.where(selected > 0, losses, 0.0)) / safe(denominator)
  correct = (jnp.argmax(masked, axis=1) == jnp.arange(logits.shape[0])).astype(jnp.float32)
  # Metrics of micro-batches are summed: the temperature is weighted by this micro-batch's share.
  share = jnp.sum(selected) / safe(denominator)
  return loss, {"itc_loss": loss, "itc_t2i_accuracy": jnp.sum(correct * selected) / safe(denominator),
                "itc_temperature": outputs["itc_temperature"] * share}


def gather(outputs: dict[str, jax.Array], batch: dict[str, Any]) -> dict[str, jax.Array]:
  """The ITC text and image embeddings of one batch, and which rows are matching pairs ("rows")."""
  pair = batch["example_mask"].astype(bool)
  if "itm_labels" in batch:  # an ITM negative's caption does not describe its image.
    pair = pair & (batch["itm_labels"] == 1)
  return {"text": outputs["itc_text_embeds"], "image": outputs["itc_image_embeds"], "rows": pair}


def recall_at_k(similarity: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
  """R@K of retrieving column i for query row i of `similarity` [N,N] (ties count against)."""
  diagonal = np.diagonal(similarity)[:, None]
  rank = np.sum(similarity > diagonal, axis=1) + np.sum(
      (similarity == diagonal) & ~np.eye(len(similarity), dtype=bool), axis=1)
  return {f"r{k}": float(np.mean(rank < k)) for k in ks}


def finish(gathered: dict[str, np.ndarray]) -> dict[str, Any]:
  """R@1/5/10 text-to-image and image-to-text over the gathered pairs."""
  text, image = (gathered[k].astype(np.float64) for k in ("text", "image"))
  similarity = text @ image.T  # the embeddings are unit vectors: cosine similarity.
  t2i, i2t = recall_at_k(similarity), recall_at_k(similarity.T)
  return {"accuracy": t2i["r1"], "count": len(text), "text_to_image": t2i, "image_to_text": i2t}


TASK = Task(
    name="itc",
    head=head,
    forward=forward,
    objective=Objective(lambda b: jnp.sum(rows(b)), itc_loss),
    output="itc_logits",
    gather=gather,
    finish=finish,
)
