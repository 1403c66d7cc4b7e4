"""Shapes world 7.0.0's renderer: facts true of the drawn pixels, colour names kept, styles that share
their scenes, and 6.0.0 still built byte for byte."""

import numpy as np
import pytest

from vlfusion.data import questions, rendering, scene_examples, scenes, shapes_world

STYLES = rendering.STYLES


def _example(index, style, image_size=64, max_objects=4):
  return scene_examples.make_example(np.random.default_rng([5, index]), image_size, max_objects, style=style)


def _objects(index, image_size=64, max_objects=4):
  return rendering.sample_scene(np.random.default_rng([5, index]), image_size, max_objects)


def _mask_answer(question, objects, masks):
  """The answer of a relation or direction question read from the visible masks' centroids."""
  drawn = rendering.drawn_objects(objects, masks)
  by_name = {(o.colour, o.shape): d for o, d in zip(objects, drawn, strict=True)
             if sum((p.colour, p.shape) == (o.colour, o.shape) for p in objects) == 1}
  words = question.rstrip("?").split()
  if words[0] == "where":  # where is the C S relative to the C S
    a, b = by_name[tuple(words[3:5])], by_name[tuple(words[-2:])]
    relation = scenes.relation(a, b)
    return None if relation is None else relation.split()[0]
  a, b = by_name[tuple(words[2:4])], by_name[tuple(words[-2:])]  # is the C S <rel> the C S
  relation = " ".join(words[4:-3])
  return "yes" if scenes.holds_relation(a, b, relation) else "no"


def test_relation_answers_recomputed_from_drawn_masks_agree_with_the_scene():
  checked = 0
  for i in range(400):
    objects = _objects(i)
    masks = rendering.visible_masks(objects, 64)
    rng = np.random.default_rng([6, i])
    for question, answer, _ in questions.make_questions(objects, rng, ("relation", "direction")):
      assert _mask_answer(question, objects, masks) == answer, (i, question, answer)
      checked += 1
    # Places (the scene caption's) are where the pixels are.
    for o, d in zip(objects, rendering.drawn_objects(objects, masks), strict=True):
      assert scenes.place(o, 64) == scenes.place(d, 64)
  assert checked > 300, checked


def test_every_object_stays_visible_and_sizes_are_true_of_the_pixels():
  small, large, occluded = [], [], 0
  for i in range(400):
    objects = _objects(i)
    masks = rendering.visible_masks(objects, 64)
    for o, visible in zip(objects, masks, strict=True):
      full = rendering.shape_mask(o, 64)
      assert visible.sum() >= (1 - rendering.MAX_HIDDEN) * full.sum() > 0
      occluded += visible.sum() < full.sum()
      (small if o.size == "small" else large).append(full.sum())
  assert occluded > 20  # occlusion happens
  assert max(small) < min(large), (max(small), min(large))
  assert max(large) / min(small) > 5  # a wide range of sizes


def test_geometry_varies():
  objects = [o for i in range(200) for o in _objects(i)]
  angles = np.array([o.angle for o in objects]) % (2 * np.pi)
  aspects = np.array([o.aspect for o in objects])
  assert np.histogram(angles, bins=4, range=(0, 2 * np.pi))[0].min() > len(objects) / 8
  assert aspects.min() < 0.85 and aspects.max() > 1.15


def _interior(mask, depth=3):
  """`mask` eroded (4-neighbourhood) up to `depth` times, as deep as it stays non-empty."""
  for _ in range(depth):
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    if not eroded.any():
      break
    mask = eroded
  return mask


@pytest.mark.parametrize("style", STYLES)
def test_drawn_colours_are_named_by_the_objects_colour(style):
  checked = 0
  for i in range(150):
    objects = _objects(i)
    drawing = rendering.draw(objects, 64, style, np.random.default_rng([8, i]))
    pixels = drawing.image.astype(np.float32) / 255
    for o, visible in zip(objects, rendering.visible_masks(objects, 64), strict=True):
      inner = _interior(visible)  # fill, not outline nor an edge blended with its neighbour.
      assert rendering.colour_name(np.median(pixels[inner], axis=0)) == o.colour, (i, o)
      checked += 1
  assert checked > 300


def test_colour_jitter_stays_in_its_named_region_and_backgrounds_have_no_colour_name():
  rng = np.random.default_rng(0)
  for name in scenes.COLOURS:
    colours = [rendering.jitter_colour(name, rng) for _ in range(1000)]
    assert all(rendering.colour_name(c) == name for c in colours), name
    assert np.ptp(np.array(colours), axis=0).max() > 0.1  # it does jitter
  assert all(rendering.colour_name(rendering._grey(rng, rng.uniform())) is None for _ in range(500))


def test_styles_draw_the_same_scene_differently():
  for i in range(20):
    a, b = _example(i, "varied"), _example(i, "textured")
    for key in ("captions", "hard_negatives", "questions", "random_negatives", "random_negative"):
      assert a[key] == b[key], key
    for key in ("answers", "question_types", "colours", "shapes", "sizes", "labels"):
      np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])  # boxes come from the same masks
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() > 10


def test_styles_differ_in_their_pixel_statistics():
  """The held-out style is not the training style with other numbers: its edges are hard and its
  backgrounds have high-frequency texture (mean absolute difference of neighbouring pixels)."""
  def roughness(style):
    images = np.array([_example(i, style)["image"] for i in range(40)], np.float32)
    return np.abs(np.diff(images, axis=2)).mean()

  assert roughness("textured") > 1.5 * roughness("varied")


def test_boxes_and_region_features_come_from_the_drawn_objects():
  for i in range(50):
    ex = _example(i, "varied")
    objects = _objects(i)
    masks = rendering.visible_masks(objects, 64)
    for box, visible in zip(ex["boxes"] * 64, masks, strict=True):
      ys, xs = np.nonzero(visible)
      np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    grid = ex["region_features"].reshape(-1, 4, 4, 4)
    # The foreground plane is the share of object pixels: high inside a box, and the colour planes
    # of a box's centre cells are the object's colour.
    assert (grid[..., 3].mean((1, 2)) > 0.4).all()
    for o, cells in zip(objects, grid, strict=True):
      centre = cells[1:3, 1:3, :3].reshape(-1, 3)
      weights = cells[1:3, 1:3, 3].reshape(-1)
      if weights.min() > 0.9:  # cells entirely inside the object (and not mixed with the background)
        assert rendering.colour_name(centre.mean(0)) == o.colour


def test_unknown_style_is_refused():
  with pytest.raises(ValueError, match="rendering style"):
    rendering.draw(_objects(0), 64, "watercolour", np.random.default_rng(0))


def test_builder_6_0_0_writes_the_flat_renderers_bytes_and_7_0_0_adds_the_style_split(tmp_path):
  old = shapes_world.ShapesWorld(config="tiny", data_dir=str(tmp_path), version="6.0.0")
  new = shapes_world.ShapesWorld(config="tiny", data_dir=str(tmp_path))
  assert str(old.version) == "6.0.0" and str(new.version) == "7.0.0"
  assert str(old.canonical_version) == "6.0.0"  # so tfds lets it be prepared
  assert "validation_style" not in old.split_sizes()
  assert new.split_sizes()["validation_style"] == new.split_sizes()["validation"]
  # Today's flat code path, computed here: the first validation scene of 6.0.0.
  rng = np.random.default_rng([shapes_world.SEED, shapes_world.SPLIT_IDS["validation"], 0])
  objects = scenes.sample_scene(rng, 64, 4)
  image = scenes.render(objects, 64, rng)
  _, example = next(old._generate_examples("validation", 512))
  np.testing.assert_array_equal(example["image"], image)
  boxes = np.array([o.box for o in objects], np.float32)
  np.testing.assert_array_equal(example["region_features"], scenes.region_features(image, boxes))
  _, styled = next(new._generate_examples("validation", 512))
  _, held_out = next(new._generate_examples("validation_style", 512))
  assert not np.array_equal(styled["image"], example["image"])
  assert styled["questions"] == held_out["questions"] and styled["pair_index"] == held_out["pair_index"]
  assert not np.array_equal(styled["image"], held_out["image"])


def test_a_versioned_name_builds_the_code_s_builder_at_that_version(tmp_path):
  old = shapes_world.make_builder("shapes_world/tiny_40k:6.0.0", str(tmp_path))
  new = shapes_world.make_builder("shapes_world/tiny_40k", str(tmp_path))
  assert (str(old.version), str(new.version)) == ("6.0.0", "7.0.0")
  assert old.builder_config.image_size == 64 and old.builder_config.name == "tiny_40k"
  assert old.data_dir.endswith("6.0.0") and new.data_dir.endswith("7.0.0")
