"""Heads and their losses against numpy references; masking; gradient-accumulation exactness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.model_fixtures import add_targets, random_batch, random_params
from vlfusion import configuration
from vlfusion.models import build_model
from vlfusion.models.heads import ItcHead
from vlfusion.training import losses

RNG = np.random.default_rng(0)


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def itc_reference(logits, rows):
  """Symmetric InfoNCE restricted to the rows marked in `rows`, averaged over them (numpy)."""
  idx = np.flatnonzero(rows)
  sub = logits[np.ix_(idx, idx)]
  t2i = -np.diag(_log_softmax(sub, 1))
  i2t = -np.diag(_log_softmax(sub, 0))
  return np.mean((t2i + i2t) / 2)


def test_itc_loss_matches_numpy_and_ignores_negatives_and_padding():
  b = 6
  logits = RNG.normal(size=(b, b)).astype(np.float32) * 3
  batch = {"itm_labels": np.array([1, 0, 1, 1, 1, 1]), "example_mask": np.array([1, 1, 1, 1, 0, 1], bool)}
  outputs = {"itc_logits": jnp.asarray(logits), "itc_temperature": jnp.float32(0.07)}
  denominator = losses.OBJECTIVES["itc"].denominator(batch)
  assert float(denominator) == 4
  loss, metrics = losses.itc_loss(outputs, batch, denominator)
  np.testing.assert_allclose(loss, itc_reference(logits, [1, 0, 1, 1, 0, 1]), rtol=1e-5)
  # Rows 1 (a negative caption) and 4 (padding) play no part, as positives or as candidates.
  scrambled = logits.copy()
  scrambled[[1, 4], :] = 100.0
  scrambled[:, [1, 4]] = 100.0
  loss2, _ = losses.itc_loss({**outputs, "itc_logits": jnp.asarray(scrambled)}, batch, denominator)
  np.testing.assert_allclose(loss2, loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["itc_temperature"], 0.07, rtol=1e-6)


def test_itc_head_normalises_and_clips_temperature():
  head = ItcHead(embed_dim=8, temperature=0.07, min_temperature=0.01, max_temperature=0.5,
                 image_input="regions")
  text = jnp.asarray(RNG.normal(size=(3, 5, 16)), jnp.float32)
  image = jnp.asarray(RNG.normal(size=(3, 4, 24)), jnp.float32)
  mask = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
  params = head.init(jax.random.PRNGKey(0), text, image, mask)
  out = head.apply(params, text, image, mask)
  np.testing.assert_allclose(jnp.linalg.norm(out["itc_text_embeds"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out["itc_image_embeds"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["itc_temperature"], 0.07, rtol=1e-5)
  np.testing.assert_allclose(out["itc_logits"],
                             out["itc_text_embeds"] @ out["itc_image_embeds"].T / 0.07, rtol=1e-5)
  big = jax.tree.map(lambda x: x, params)
  big["params"]["log_temperature"] = jnp.float32(np.log(5.0))
  np.testing.assert_allclose(head.apply(big, text, image, mask)["itc_temperature"], 0.5, rtol=1e-5)
  # The temperature learns: its gradient through the loss is not zero inside the clip range.
  batch = {"itm_labels": np.ones(3, np.int32), "example_mask": np.ones(3, bool)}

  def loss(p):
    return losses.itc_loss(head.apply(p, text, image, mask), batch, jnp.float32(3))[0]

  assert abs(float(jax.grad(loss)(params)["params"]["log_temperature"])) > 0


def test_vqa_loss_is_bce_summed_over_answers():
  b, a = 4, 6
  logits = RNG.normal(size=(b, a)).astype(np.float32)
  scores = RNG.choice([0.0, 0.3, 0.6, 1.0], size=(b, a)).astype(np.float32)
  mask = np.array([1, 1, 0, 1], bool)
  batch = {"vqa_scores": scores, "example_mask": mask}
  loss, metrics = losses.vqa_loss({"vqa_logits": jnp.asarray(logits)}, batch,
                                  losses.OBJECTIVES["vqa"].denominator(batch))
  p = 1 / (1 + np.exp(-logits))
  bce = -(scores * np.log(p) + (1 - scores) * np.log(1 - p))
  # Mean over answers times their number (UNITER, ViLT) = the sum over answers, per real question.
  np.testing.assert_allclose(loss, bce[mask].mean(1).mean() * a, rtol=1e-5)
  expected_score = scores[np.arange(b), logits.argmax(1)][mask].mean()
  np.testing.assert_allclose(metrics["vqa_score"], expected_score, rtol=1e-6)


def test_mrm_loss_counts_masked_regions_only():
  b, r, f, c = 2, 5, 3, 4
  pred = RNG.normal(size=(b, r, f)).astype(np.float32)
  target = RNG.normal(size=(b, r, f)).astype(np.float32)
  logits = RNG.normal(size=(b, r, c)).astype(np.float32)
  labels = RNG.integers(0, c, (b, r)).astype(np.int32)
  weights = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], np.float32)
  batch = {"mrm_weights": weights, "mrm_targets": target, "mrm_labels": labels,
           "example_mask": np.ones(b, bool)}
  outputs = {"mrm_features": jnp.asarray(pred), "mrm_logits": jnp.asarray(logits)}
  denominator = losses.OBJECTIVES["mrm"].denominator(batch)
  loss, metrics = losses.mrm_loss(outputs, batch, denominator)
  m = weights > 0
  mse = ((pred - target) ** 2).mean(-1)[m].mean()
  ce = -np.take_along_axis(_log_softmax(logits, -1), labels[..., None], -1)[..., 0][m].mean()
  np.testing.assert_allclose(metrics["mrm_feature_loss"], mse, rtol=1e-5)
  np.testing.assert_allclose(metrics["mrm_label_loss"], ce, rtol=1e-5)
  np.testing.assert_allclose(loss, mse + ce, rtol=1e-5)
  # Predictions at unmasked regions do not matter.
  pred2, logits2 = pred.copy(), logits.copy()
  pred2[~m] = 1e3
  logits2[~m] = -1e3
  loss2, _ = losses.mrm_loss({"mrm_features": jnp.asarray(pred2), "mrm_logits": jnp.asarray(logits2)},
                             batch, denominator)
  np.testing.assert_allclose(loss2, loss, rtol=1e-5)


@pytest.mark.parametrize("name", ["mrm", "vqa", "pairs", "itm"])
def test_micro_batch_losses_add_up_to_the_batch_loss(name):
  """Over the full batch's denominator, the halves' losses sum to the whole's (exact accumulation)."""
  b = 6
  batch = {"example_mask": np.array([1, 1, 1, 0, 1, 1], bool),
           "mrm_weights": (RNG.random((b, 4)) < 0.5).astype(np.float32),
           "mrm_targets": RNG.normal(size=(b, 4, 3)).astype(np.float32),
           "mrm_labels": RNG.integers(0, 5, (b, 4)).astype(np.int32),
           "vqa_scores": RNG.random((b, 7)).astype(np.float32),
           "pair_labels": RNG.integers(0, 2, b).astype(np.int32),
           "itm_labels": RNG.integers(0, 2, b).astype(np.int32)}
  outputs = {"mrm_features": RNG.normal(size=(b, 4, 3)), "mrm_logits": RNG.normal(size=(b, 4, 5)),
             "vqa_logits": RNG.normal(size=(b, 7)), "pairs_logits": RNG.normal(size=(b, 2)),
             "itm_logits": RNG.normal(size=(b, 2))}
  outputs = {k: jnp.asarray(v, jnp.float32) for k, v in outputs.items()}
  weights = {name: 1.0}
  denominators = losses.denominators(batch, weights)
  whole, _ = losses.total_loss(outputs, batch, weights, denominators)
  half = lambda tree, s: jax.tree.map(lambda x: x[s], tree)
  parts = [losses.total_loss(half(outputs, s), half(batch, s), weights, denominators)[0]
           for s in (slice(0, 3), slice(3, 6))]
  np.testing.assert_allclose(sum(parts), whole, rtol=1e-5)


def test_vqa_and_pairs_heads_in_the_model():
  """The pairs head encodes the second image: its logits change with it; VQA has num_answers outputs."""
  config = configuration.base_config()
  m = config.model
  m.fusion = "co_attention"
  m.heads = ("vqa", "pairs")
  m.vqa.num_answers = 9
  m.text.num_layers = m.image.num_layers = m.fusion_layers = 1
  config.objectives = dict(mlm=0.0, itm=0.0, mrm=0.0, itc=0.0, vqa=1.0, pairs=1.0)
  configuration.validate(config)
  batch = add_targets(config, random_batch(config, 3, 6, 4, (6, 3, 4), (4, 2, 3)))
  model = build_model(m)
  # Initialised without pair inputs: the first image stands in for the second at init.
  params = random_params(model, {k: v for k, v in batch.items() if not k.startswith("pair_")})
  apply = jax.jit(lambda b: model.apply({"params": params}, b))
  out = apply(batch)
  assert out["vqa_logits"].shape == (3, 9) and out["pairs_logits"].shape == (3, 2)
  assert "mlm_logits" not in out and "itm_logits" not in out
  other = dict(batch, pair_regions={k: np.roll(v, 1, axis=0) for k, v in batch["pair_regions"].items()})
  assert not np.allclose(apply(other)["pairs_logits"], out["pairs_logits"])
  # Without a second image (e.g. a captioning batch) the pairs head does not run.
  single = {k: v for k, v in batch.items() if not k.startswith("pair_")}
  assert "pairs_logits" not in apply(single)
  total, metrics = losses.total_loss(out, batch, {"vqa": 1.0, "pairs": 1.0})
  assert np.isfinite(float(total)) and {"vqa_loss", "pairs_loss", "pairs_accuracy"} <= set(metrics)
