"""Image-text retrieval under the standard protocol: every caption of every image of the split.

Text-to-image: each caption is a query over all images, its own image the one right answer.
Image-to-text: each image is a query over all captions, any of its captions a right answer. R@1/5/10
in both directions. Candidates are ranked by ITC embedding similarity (dual encoders, and the first
stage of fusion models); a fusion model with an ITM head then re-ranks each query's top k by its ITM
match score (ALBEF's protocol, `config.eval.retrieval_rerank_k`), the rest following in ITC order. The
result states how many fused forward passes (image-caption pairs through the ITM head) that took, and
the time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from vlfusion.data import scenes
from vlfusion.evaluation.predictor import Predictor

KS = (1, 5, 10)
# (caption indices, image indices) -> ITM match scores of those pairs.
PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def ranked_candidates(similarity: np.ndarray, rerank_k: int = 0,
                      rerank: dict[tuple[int, int], float] | None = None) -> np.ndarray:
  """Candidate order per query row of `similarity` [Q, C]: by similarity (ties: lower index first);
  with `rerank_k`, the top k are reordered by `rerank[(query, candidate)]` (ties keep ITC order)."""
  order = np.argsort(-similarity, axis=1, kind="stable")
  if rerank_k <= 0 or rerank is None:
    return order
  k = min(rerank_k, similarity.shape[1])
  for q in range(len(order)):
    top = order[q, :k]
    scores = np.array([rerank[(q, int(c))] for c in top])
    order[q, :k] = top[np.argsort(-scores, kind="stable")]
  return order


def recalls(order: np.ndarray, correct: Callable[[int, np.ndarray], np.ndarray],
            ks: tuple[int, ...] = KS) -> dict[str, float]:
  """R@K: the share of queries with a right candidate among the first K of `order` [Q, C];
  `correct(q, candidates)` says which candidates are right for query q."""
  first = []
  for q in range(len(order)):
    right = correct(q, order[q])
    first.append(int(np.argmax(right)) if right.any() else order.shape[1])
  first = np.array(first)
  return {f"r{k}": float(np.mean(first < k)) for k in ks}


def retrieval_metrics(similarity: np.ndarray, caption_image: np.ndarray, rerank_k: int = 0,
                      score_pairs: PairScorer | None = None,
                      caption_kinds: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """R@K both ways from ITC similarities [Nt, Ni] of every caption with every image, where caption t
  describes image `caption_image[t]`; with `rerank_k` and `score_pairs`, the top k re-ranked by ITM.

  `chance` is what a random ranking gets text-to-image (K / Ni). With `caption_kinds` ({kind: bool
  mask [Nt]}), `text_to_image_by_kind` gives the text-to-image R@K of each kind's captions alone (same
  ranking over all images)."""
  caption_image = np.asarray(caption_image)
  rerank = None
  pairs: list[tuple[int, int]] = []
  if rerank_k > 0 and score_pairs is not None:
    k_images, k_captions = min(rerank_k, similarity.shape[1]), min(rerank_k, similarity.shape[0])
    t2i = np.argsort(-similarity, axis=1, kind="stable")[:, :k_images]
    i2t = np.argsort(-similarity.T, axis=1, kind="stable")[:, :k_captions]
    wanted = {(t, int(i)) for t in range(len(t2i)) for i in t2i[t]}
    wanted |= {(int(t), i) for i in range(len(i2t)) for t in i2t[i]}
    pairs = sorted(wanted, key=lambda p: (p[1], p[0]))  # grouped by image: each is read once.
    scores = score_pairs(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    itm = {p: float(s) for p, s in zip(pairs, scores, strict=True)}
    rerank = itm
  t2i_order = ranked_candidates(similarity, rerank_k, rerank)
  i2t_rerank = None if rerank is None else {(i, t): s for (t, i), s in rerank.items()}
  i2t_order = ranked_candidates(similarity.T, rerank_k, i2t_rerank)
  out = {
      "text_to_image": recalls(t2i_order, lambda t, images: images == caption_image[t]),
      "image_to_text": recalls(i2t_order, lambda i, captions: caption_image[captions] == i),
      "chance": {f"r{k}": min(k / similarity.shape[1], 1.0) for k in KS},
      "num_captions": int(similarity.shape[0]), "num_images": int(similarity.shape[1]),
      "rerank_k": int(rerank_k if rerank is not None else 0), "fused_forward_passes": len(pairs),
  }
  if caption_kinds:
    out["text_to_image_by_kind"] = {}
    for kind, mask in caption_kinds.items():
      rows = np.flatnonzero(mask)
      if len(rows):
        owner = caption_image[rows]
        out["text_to_image_by_kind"][kind] = {
            **recalls(t2i_order[rows], lambda q, images, owner=owner: images == owner[q]),
            "count": int(len(rows))}
  return out


class RetrievalEvaluator:
  """Retrieval over every caption of every image of `source`'s split with a model's ITC (and ITM) heads:
  `Task.evaluator` of the retrieval task, built from a predictor and its data."""

  def __init__(self, predictor: Predictor, config: ml_collections.ConfigDict, source: Any):
    self.predictor = predictor
    self.config = config
    self.source = source
    heads = set(config.model.heads)
    self.rerank_k = int(config.eval.retrieval_rerank_k)
    if "itm" not in heads or config.model.fusion == "dual_encoder":
      self.rerank_k = 0  # nothing fused to re-rank with: embedding similarity only.
    predict = predictor.predict_fn
    self._embed = predictor.jit(lambda p, b: {k: v for k, v in predict(p, b).items()
                                              if k in ("itc_text_embeds", "itc_image_embeds")})
    self._match = predictor.jit(
        lambda p, b: jax.nn.log_softmax(predict(p, b)["itm_logits"].astype(np.float32))[:, 1])

  @functools.cached_property
  def _caption_table(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Every caption of the split, the index of its image, and its kind (shapes world; else None)."""
    texts, owner, kinds = [], [], []
    for i in range(self.source.num_examples):
      record = self.source.data_source[i]
      texts += [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in record["captions"]]
      owner += [i] * len(record["captions"])
      kinds += [scenes.CAPTION_KINDS[int(k)] for k in np.asarray(record.get("caption_kinds", []))]
    return texts, np.array(owner, np.int64), np.array(kinds) if len(kinds) == len(texts) else None

  @property
  def captions(self) -> tuple[list[str], np.ndarray]:
    """Every caption of the split and the index of its image."""
    return self._caption_table[:2]

  def _text(self, text: str) -> dict[str, np.ndarray]:
    lt = self.config.data.max_text_len
    ids = self.source.tokenizer.encode(text, max_len=lt)
    text_ids = np.full((lt,), self.source.tokenizer.pad_id, np.int32)
    text_ids[: len(ids)] = ids
    return {"text_ids": text_ids, "text_mask": np.arange(lt) < len(ids)}

  def _batches(self, captions: np.ndarray, images: np.ndarray):
    """Global batches of (caption, image) rows, this process's rows of each, padded at the end."""
    from vlfusion.data.pipeline import collate

    size = self.config.eval.batch_size
    texts = self.captions[0]
    row_builder = self.source.rows
    media = functools.lru_cache(maxsize=256)(
        # Pairs come grouped by image; evaluation images are never augmented (train=False).
        lambda i: row_builder.media(row_builder.media_record(self.source.data_source[i]), None, False))
    count = jax.process_count()
    local = size // count
    rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    for start in range(0, len(captions), size):
      index = np.arange(start, start + size)[rows]
      real = index < len(captions)
      index = np.where(real, index, 0)
      examples = [{**self._text(texts[captions[j]]), **media(int(images[j])), "example_mask": np.bool_(r)}
                  for j, r in zip(index, real, strict=True)]
      yield collate(examples), int(min(size, len(captions) - start))

  def _run(self, fn: Any, params: Any, captions: np.ndarray, images: np.ndarray) -> list[Any]:
    out = []
    with self.predictor.placed():
      for local, n in self._batches(captions, images):
        result = fn(params, self.predictor.global_batch(local))
        out.append(jax.tree.map(lambda x, n=n: np.asarray(x.addressable_data(0))[:n], result))
    return out

  def run(self, params: Any) -> dict[str, Any]:
    start = time.perf_counter()
    _, owner = self.captions
    # Each caption with its own image: the text embeddings of every caption, and (from each image's
    # first caption) the image embeddings. ITC embeddings are unimodal: the partner does not matter.
    embeds = self._run(self._embed, params, np.arange(len(owner)), owner)
    text = np.concatenate([e["itc_text_embeds"] for e in embeds]).astype(np.float64)
    first = np.searchsorted(owner, np.arange(self.source.num_examples))
    if len(np.unique(owner)) != self.source.num_examples:
      raise ValueError(f"{self.config.data.name} split {self.config.data.eval_split!r} has images "
                       "without captions: retrieval needs every image's captions")
    image = np.concatenate([e["itc_image_embeds"] for e in embeds]).astype(np.float64)[first]
    similarity = text @ image.T

    def score_pairs(captions: np.ndarray, images: np.ndarray) -> np.ndarray:
      return np.concatenate(self._run(self._match, params, captions, images))

    kinds = self._caption_table[2]
    masks = None if kinds is None else {k: kinds == k for k in scenes.CAPTION_KINDS}
    metrics = retrieval_metrics(similarity, owner, self.rerank_k, score_pairs, masks)
    metrics["accuracy"] = metrics["text_to_image"]["r1"]
    metrics["count"] = metrics["num_captions"]
    metrics["seconds"] = time.perf_counter() - start
    return metrics
