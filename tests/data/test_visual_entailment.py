"""Shapes-world visual entailment: labels that hold against the whole scene, text that tells no label,
and the builder as the data pipeline opens it."""

import collections
import re

import ml_collections
import numpy as np
import pytest

from vlfusion.data import datasets, scenes
from vlfusion.data import visual_entailment as ve
from vlfusion.data.tokenizer import WordPieceTokenizer

COLOURS, SHAPES = list(scenes.COLOURS), scenes.SHAPES
_PATTERNS = [
    ("existence", re.compile(r"there is a (\w+) (\w+)")),
    ("count_shape", re.compile(r"there are no fewer than two (\w+)s")),
    ("count_colour", re.compile(r"there are no fewer than two (\w+) objects")),
    ("relation", re.compile(r"there is a (\w+) (\w+) (left of|right of|above|below) a (\w+) (\w+)")),
]


def _parse(text):
  """(template, words) of a hypothesis, read from its text alone."""
  for template, pattern in _PATTERNS:
    match = pattern.fullmatch(text)
    if match:
      return template, match.groups()
  raise AssertionError(f"no template reads {text!r}")


def _true(text, objects):
  """Whether `objects` [(colour, shape, cx, cy, radius)] make the hypothesis true; written apart from
  the module's own `holds`."""
  template, w = _parse(text)
  if template == "existence":
    return any((c, s) == w for c, s, *_ in objects)
  if template == "count_shape":
    return sum(s == w[0] for _, s, *_ in objects) >= 2
  if template == "count_colour":
    return sum(c == w[0] for c, *_ in objects) >= 2
  c1, s1, rel, c2, s2 = w
  for i, (ca, sa, xa, ya, ra) in enumerate(objects):
    for j, (cb, sb, xb, yb, rb) in enumerate(objects):
      if i == j or (ca, sa) != (c1, s1) or (cb, sb) != (c2, s2):
        continue
      gap = {"left of": xb - xa, "right of": xa - xb, "above": yb - ya, "below": ya - yb}[rel]
      if gap > (ra + rb) / 2:
        return True
  return False


def _objects(example):
  """[(colour, shape, cx, cy, radius)] of every object stored, and which are hidden."""
  objects = [(COLOURS[c], SHAPES[s], float(x), float(y), float(r)) for c, s, (x, y), r in zip(
      example["colours"], example["shapes"], example["centres"], example["radii"], strict=True)]
  return objects, example["hidden"].astype(bool)


def _could_be_true(text, visible, occluder, image_size):
  """Whether one object more, anywhere wholly under the occluder, makes the hypothesis true: every
  colour, shape and size on a 3 x 3 grid of centres spanning where it fits (a relation is one
  inequality in one coordinate, so the grid's ends decide)."""
  x0, y0, x1, y1 = occluder
  for fraction in ve.RADIUS.values():
    r = float(np.float32(image_size * fraction))
    for cx in np.linspace(x0 + r + 1, x1 - r - 1, 3):
      for cy in np.linspace(y0 + r + 1, y1 - r - 1, 3):
        for c in COLOURS:
          for s in SHAPES:
            if _true(text, [*visible, (c, s, float(cx), float(cy), r)]):
              return True
  return False


def test_every_label_holds_against_the_full_scene():
  neutral_truths = collections.Counter()
  occluded = hidden_seen = 0
  for index in range(240):
    example = ve.make_example(np.random.default_rng([5, index]), 64, 4)
    objects, hidden = _objects(example)
    visible = [o for o, h in zip(objects, hidden, strict=True) if not h]
    occluder = example["occluder"][0].tolist() if len(example["occluder"]) else None
    # Regions: the visible objects, then the occluder; a hidden object is wholly under the occluder,
    # whose pixels are grey.
    assert len(example["boxes"]) == len(visible) + (occluder is not None) == len(example["region_features"])
    assert hidden.sum() <= (occluder is not None)
    if occluder is not None:
      occluded += 1
      x0, y0, x1, y1 = occluder
      np.testing.assert_allclose(example["boxes"][-1] * 64, occluder, rtol=1e-6)
      patch = example["image"][int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].astype(float) / 255
      assert np.abs(patch - 0.5).mean() < 0.05
      for _, _, cx, cy, r in [o for o, h in zip(objects, hidden, strict=True) if h]:
        hidden_seen += 1
        assert x0 < cx - r and cx + r < x1 and y0 < cy - r and cy + r < y1
    for text, lab in zip(example["hypotheses"], example["hypothesis_labels"], strict=True):
      full = _true(text, objects)
      if lab == ve.ENTAILMENT:
        assert _true(text, visible) and full, text
      elif lab == ve.NEUTRAL:
        assert occluder is not None and not _true(text, visible), text
        assert _could_be_true(text, visible, occluder, 64), text
        neutral_truths[full] += 1
      else:
        assert not full, text
        assert occluder is None or not _could_be_true(text, visible, occluder, 64), text
  assert 60 < occluded < 180 and hidden_seen > 20
  # What the occluder hides decides some neutral statements either way: they are undecidable, not false.
  assert neutral_truths[True] >= 30 and neutral_truths[False] >= 30, neutral_truths


def test_fast_labels_are_the_definition():
  for index in range(30):
    scene = ve.draw_scene(np.random.default_rng([9, index]), 64, 4)
    rng = np.random.default_rng(index)
    for template in ve.TEMPLATES:
      by_label = ve.labelled_statements(template, scene.visible, scene.occluder, 64)
      statements = ve.all_statements(template)
      assert sorted(map(repr, sum(by_label, []))) == sorted(map(repr, statements))
      if template == "relation":
        statements = [statements[i] for i in rng.choice(len(statements), 40, replace=False)]
      for st in statements:
        lab = ve.label(st, scene.visible, scene.occluder, 64)
        assert st in by_label[lab], (st.text(), lab)


def test_text_alone_says_nothing():
  """The best rule that reads only the text (the majority label of each exact statement over the
  tiny config's training scenes, else of its template) scores about a third on its validation scenes."""
  tiny = ve.ShapesWorldVe.builder_configs["tiny"]

  def hypotheses(split):
    for index in range(tiny.num_examples[split]):
      rng = np.random.default_rng([ve.SEED, ve.SPLIT_IDS[split], index])
      scene = ve.draw_scene(rng, tiny.image_size, tiny.max_objects)
      yield from ((template, st.text(), lab) for template, st, lab in scene.hypotheses)

  by_text = collections.defaultdict(collections.Counter)
  by_template = collections.defaultdict(collections.Counter)
  for template, text, lab in hypotheses("train"):
    by_text[text][lab] += 1
    by_template[template][lab] += 1
  for template, counts in by_template.items():  # balanced per template
    assert max(counts.values()) / sum(counts.values()) < 1 / 3 + 0.03, (template, counts)
  right = total = 0
  for template, text, lab in hypotheses("validation"):
    guess = (by_text.get(text) or by_template[template]).most_common(1)[0][0]
    right, total = right + (guess == lab), total + 1
  assert total == 4 * tiny.num_examples["validation"]
  assert abs(right / total - 1 / 3) < 0.04, right / total


def test_label_probabilities_average_to_a_third():
  p = ve.OCCLUDER_PROBABILITY
  for template in ve.TEMPLATES:
    with_occluder, without = map(np.array, ve.LABEL_PROBABILITIES[template])
    np.testing.assert_allclose(p * with_occluder + (1 - p) * without, [1 / 3] * 3)
    assert without[ve.NEUTRAL] == 0  # nothing is undecidable in a scene that hides nothing.


def test_data_pipeline_opens_it_by_name(tmp_path, monkeypatch):
  tiny = ve.ShapesWorldVe.builder_configs["tiny"]
  monkeypatch.setattr(tiny, "num_examples", {"train": 12, "validation": 4})
  config = ml_collections.ConfigDict({"data": {"name": "shapes_world_ve/tiny", "data_dir": str(tmp_path),
                                               "manual_dir": ""}})
  source, builder = datasets.open_dataset(config, "train", process_index=0, process_count=1)
  assert isinstance(builder, ve.ShapesWorldVe) and len(source) == 12
  assert builder.info.metadata["labels"] == ["entailment", "neutral", "contradiction"]
  record = source[3]  # tfds stores the examples in its own order: find which scene this is.
  scenes_ = [ve.make_example(np.random.default_rng([ve.SEED, 0, i]), 64, 4) for i in range(12)]
  expected = next(e for e in scenes_ if np.array_equal(e["image"], record["image"]))
  np.testing.assert_array_equal(record["region_features"], expected["region_features"])
  assert [h.decode() for h in record["hypotheses"]] == expected["hypotheses"]
  assert record["hypothesis_labels"].dtype == np.int32 and record["hypothesis_labels"].shape == (4,)
  assert record["boxes"].shape == (len(record["region_features"]), 4)
  assert max(len(source[i]["boxes"]) for i in range(12)) <= tiny.max_regions == tiny.max_objects + 1


def test_too_small_an_image_is_refused():
  with pytest.raises(ValueError, match="image_size=32 is too small"):
    ve.draw_scene(np.random.default_rng(0), 32, 4)


def test_every_word_is_in_the_shapes_world_vocab():
  tok = WordPieceTokenizer()
  words = {w for t in ve.TEMPLATES for st in ve.all_statements(t) for w in st.text().split()}
  assert {"no", "fewer", "than", "objects", "left", "below"} <= words
  for word in words:
    assert len(tok.wordpieces(word)) == 1, word
