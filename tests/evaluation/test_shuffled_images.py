"""The shuffled-image evaluation: every row sees an image of another image of the split, never its own.

On VQA v2's layout (the questions of one image consecutive) a shuffle within a batch hands most rows
their own image back; these tests build that layout with five questions per image.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import single_stream
from tests.conftest import tiny_config
from tests.data import fixtures
from tests.data.test_pipeline import BERT_VOCAB
from vlfusion import partitioning
from vlfusion.data import pipeline, rows
from vlfusion.evaluation import evaluators, shuffled_images
from vlfusion.evaluation.predictor import Predictor

QUESTIONS_PER_IMAGE = 5
# Twelve validation images, four of each colour, in three aspect ratios (their pad masks differ).
SIZES = ((48, 32), (32, 48), (40, 40))
VAL = [(colour, SIZES[n % 3]) for n in range(4) for colour in fixtures.COLOURS]
TRAIN = [(colour, (40, 40)) for colour in fixtures.COLOURS]
CHANCE = 3 / 11  # another image of the twelve has the row's colour with probability 3/11.


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("vqa_colours")
  fixtures.write_vqa_colours(str(root / "manual"), {"train2014": TRAIN, "val2014": VAL}, QUESTIONS_PER_IMAGE)
  return root


def _config(vqa_dir, **overrides):
  config = tiny_config(single_stream, str(vqa_dir / "tfds"), **{
      "data.name": "vqa_v2/images", "data.manual_dir": str(vqa_dir / "manual"), "data.vocab_path": BERT_VOCAB,
      "data.global_batch_size": 2, "data.vqa_min_answer_count": 1, "model.text.vocab_size": 30522,
      "model.image.input": "patches", "model.image.image_size": 32, "model.image.patch_size": 8,
      "objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.vqa": 1.0, "model.heads": ("vqa",),
      "model.vqa.num_answers": 3, "eval.tasks": ("vqa",), "eval.batch_size": 8, **overrides})
  return config


def _image_ids(source):
  return np.array([int(source.data_source[i]["image_id"]) for i in range(source.num_examples)])


def test_every_row_gets_an_image_of_another_image_over_the_whole_split(vqa_dir):
  source = pipeline.make_batch_source(_config(vqa_dir), "validation")
  ids = _image_ids(source)
  assert len(ids) == len(VAL) * QUESTIONS_PER_IMAGE and len(set(ids)) == len(VAL)
  donors = shuffled_images.image_donors(source.image_identities())
  assert donors.shape == ids.shape
  assert np.all(ids[donors] != ids), "a row was given an image of its own image id"
  batch_size = 8
  assert np.any(donors // batch_size != np.arange(len(ids)) // batch_size), "donors only within batches"
  # The batches carry the donor's pixels (an image of another id, checked above).
  start = 0
  for batch in source.eval_batches(batch_size, image_donors=donors):
    real = batch["example_mask"]
    shuffled = batch[rows.SHUFFLED_IMAGES]["image"]
    for r in np.flatnonzero(real):
      i = start + r
      donor_row = source.rows.image_inputs(int(donors[i]))
      np.testing.assert_array_equal(shuffled[r], donor_row["image"])
    start += batch_size


def test_one_image_in_the_split_gives_no_shuffle():
  assert shuffled_images.image_donors(["a"] * 7) is None
  donors = shuffled_images.image_donors(["a"] * 6 + ["b"])
  np.testing.assert_array_equal(donors[:6], 6)  # every "a" row must take the one "b" row.
  assert donors[6] < 6


def test_the_shuffle_is_deterministic_and_spread_over_images(vqa_dir):
  source = pipeline.make_batch_source(_config(vqa_dir), "validation")
  again = pipeline.make_batch_source(_config(vqa_dir), "validation")
  first = shuffled_images.image_donors(source.image_identities())
  np.testing.assert_array_equal(first, shuffled_images.image_donors(again.image_identities()))
  ids = _image_ids(source)
  # The five rows of one image do not all take one other image: the draw is per row.
  assert max(len(set(ids[first[ids == i]])) for i in set(ids)) > 1
  a = [b[rows.SHUFFLED_IMAGES]["image"] for b in source.eval_batches(8, image_donors=first)]
  b = [b[rows.SHUFFLED_IMAGES]["image"] for b in again.eval_batches(8, image_donors=first)]
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


def test_image_masks_move_with_their_images(vqa_dir):
  source = pipeline.make_batch_source(_config(vqa_dir, **{"data.image_resize": "pad"}), "validation")
  donors = shuffled_images.image_donors(source.image_identities())
  masks = {}
  start = 0
  for batch in source.eval_batches(8, image_donors=donors):
    moved = batch[rows.SHUFFLED_IMAGES]
    assert set(moved) == {"image", "image_mask"}
    for r in np.flatnonzero(batch["example_mask"]):
      i, donor = start + r, int(donors[start + r])
      masks[i] = batch["image_mask"][r]
      own = source.example(donor, np.random.default_rng(0))
      np.testing.assert_array_equal(moved["image"][r], own["image"])
      np.testing.assert_array_equal(moved["image_mask"][r], own["image_mask"])
    start += 8
  assert len({m.tobytes() for m in masks.values()}) == len(SIZES)  # the masks do differ.


def test_a_pair_row_moves_both_images_and_both_masks(data_dir):
  config = tiny_config(single_stream, data_dir, **{
      "objectives.mlm": 0.0, "objectives.itm": 0.0, "objectives.pairs": 1.0, "model.heads": ("pairs",),
      "model.image.input": "patches", "model.image.image_size": 64, "model.image.patch_size": 16,
      "data.image_resize": "pad"})
  source = pipeline.make_batch_source(config, "validation")
  donors = shuffled_images.image_donors(source.image_identities())
  batch = next(source.eval_batches(4, image_donors=donors))
  moved = batch[rows.SHUFFLED_IMAGES]
  assert set(moved) == {"image", "image_mask", "pair_image", "pair_image_mask"}
  for r in range(4):
    own = source.example(int(donors[r]), np.random.default_rng(0))
    for key in moved:
      np.testing.assert_array_equal(moved[key][r], own[key])


class _ReadsColour:
  """Stands in for the predict_fn of a model that answers a colour question perfectly from the image:
  the answer is the colour channel with the largest mean."""

  def __init__(self, answer_vocab):
    self.answers = jnp.array([answer_vocab.index(c) for c in ("red", "green", "blue")])

  def __call__(self, params, batch):
    channel = jnp.argmax(jnp.mean(batch["image"], axis=(1, 2)), axis=-1)
    return {"vqa_logits": jax.nn.one_hot(self.answers[channel], len(self.answers))}


def test_a_model_that_reads_colours_perfectly_is_at_chance_with_shuffled_images(vqa_dir):
  config = _config(vqa_dir)
  source = pipeline.make_batch_source(config, "validation")
  mesh = partitioning.make_mesh(config.mesh, jax.devices())
  predictor = Predictor(_ReadsColour(source.answer_vocab), mesh, partitioning.logical_rules(config.mesh))
  ev = evaluators.Evaluator(predictor, config)
  vqa = ev.run(params=None)["vqa"]
  assert vqa["count"] == len(VAL) * QUESTIONS_PER_IMAGE
  assert vqa["accuracy"] == pytest.approx(1.0)
  # Another image has the row's colour with probability 3/11: the shuffled figure is near that chance,
  # not near 1 (within-batch shuffling gave four of five rows their own image back).
  assert abs(vqa["accuracy_shuffled_images"] - CHANCE) < 0.15, vqa
  assert ev.run(params=None)["vqa"] == vqa  # deterministic: a second evaluation is identical.
