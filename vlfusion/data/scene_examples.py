"""One shapes-world example: a scene with its pixels, regions, captions, negatives, questions and pair
statement, as the dataset stores it (see `shapes_world.ShapesWorld._info`).

It sits above both `scenes` (the scene graph, rendering and captions) and `questions` (which asks about
a scene), so that neither of those imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlfusion.data import questions, rendering
from vlfusion.data.scenes import (
  CAPTION_KINDS,
  COLOURS,
  NEGATIVE_KINDS,
  SHAPES,
  SIZES,
  Obj,
  count_negative,
  hard_negative,
  object_label,
  random_negative,
  random_negative_like,
  region_features,
  render,
  sample_scene,
  scene_caption,
  scene_negative,
  true_facts,
)


def make_example(rng: np.random.Generator, image_size: int, max_objects: int,
                 partner: Sequence[Obj] | None = None, style: str | None = None) -> dict:
  """One scene with everything the dataset stores about it (see `ShapesWorld._info`).

  The scene's objects are the first thing drawn from `rng`, so `sample_scene` on a generator with the
  same key gives them again (that is how the builder finds the objects of a pair's `partner` scene).
  With `partner`, the example also has a true/false statement about (this scene, partner).

  `style` None is the flat renderer of shapes world 6.0.0 and before, byte for byte. A
  `rendering.STYLES` name (7.0.0) samples the scene with `rendering.sample_scene` and draws it in that
  style from its own stream, jumped from `rng` without advancing it: every style of a key has the same
  scene, captions and questions, and only the pixels (and the boxes and features read from them) differ.
  """
  if style is None:
    objects = sample_scene(rng, image_size, max_objects)
    image = render(objects, image_size, rng)
    boxes = np.array([o.box for o in objects], np.float32).reshape(-1, 4)
    features = region_features(image, boxes)
  else:
    objects = rendering.sample_scene(rng, image_size, max_objects)
    drawing = rendering.draw(objects, image_size, style, np.random.Generator(rng.bit_generator.jumped(4)))
    image, boxes = drawing.image, drawing.boxes
    features = region_features(image, boxes, drawing.foreground)
  facts = true_facts(objects, rng)
  negatives = [hard_negative(f, objects, rng) for f in facts]
  # The direction question is drawn last (below), so that the other questions are what they were.
  qas = questions.make_questions(objects, rng, [t for t in questions.QUESTION_TYPES if t != "direction"])
  example = {
      "image": image,
      "boxes": boxes / np.float32(image_size),
      "region_features": features,
      "colours": np.array([list(COLOURS).index(o.colour) for o in objects], np.int32),
      "shapes": np.array([SHAPES.index(o.shape) for o in objects], np.int32),
      "sizes": np.array([SIZES.index(o.size) for o in objects], np.int32),
      "captions": [f.text() for f in facts],
      "caption_kinds": np.array([CAPTION_KINDS.index(f.kind) for f in facts], np.int32),
      "hard_negatives": [n.text() for n, _ in negatives],
      "hard_negative_kinds": np.array([NEGATIVE_KINDS.index(k) for _, k in negatives], np.int32),
      "random_negative": random_negative(objects, rng, image_size, max_objects).text(),
      "labels": np.array([object_label(o) for o in objects], np.int32),
      "questions": [q for q, _, _ in qas],
      "answers": np.array([questions.ANSWERS.index(a) for _, a, _ in qas], np.int32),
      "question_types": np.array([questions.QUESTION_TYPES.index(t) for _, _, t in qas], np.int32),
  }
  # The direction question (4.0.0) draws from its own stream, jumped from here without advancing `rng`:
  # the pair statement below draws a varying number of times and its partner depends on the split's
  # size, and the question must not (tiny and tiny_40k share their scenes).
  direction_rng = np.random.Generator(rng.bit_generator.jumped())
  negatives_rng = np.random.Generator(rng.bit_generator.jumped(2))  # 5.0.0's, for the same reason.
  count_rng = np.random.Generator(rng.bit_generator.jumped(3))  # 6.0.0's.
  if partner is not None:
    statement, truth = questions.pair_statement(objects, partner, rng)
    example.update(pair_statement=statement, pair_label=np.int32(truth))
  # The scene caption and its negative come last, so that everything above is what it was before them.
  example["captions"].append(scene_caption(objects, image_size))
  example["caption_kinds"] = np.append(example["caption_kinds"], np.int32(CAPTION_KINDS.index("scene")))
  example["hard_negatives"].append(scene_negative(objects, image_size, rng))
  example["hard_negative_kinds"] = np.append(example["hard_negative_kinds"],
                                             np.int32(NEGATIVE_KINDS.index("attribute")))
  # 4.0.0's direction question, after every field of 3.0.0.
  for question, answer, qtype in questions.make_questions(objects, direction_rng, ("direction",)):
    example["questions"].append(question)
    example["answers"] = np.append(example["answers"], np.int32(questions.ANSWERS.index(answer)))
    example["question_types"] = np.append(example["question_types"],
                                          np.int32(questions.QUESTION_TYPES.index(qtype)))
  # 5.0.0: a random negative of each caption's own form, after every field of 4.0.0.
  example["random_negatives"] = [
      random_negative_like(CAPTION_KINDS[k], objects, negatives_rng, image_size, max_objects)
      for k in example["caption_kinds"]]
  # 6.0.0: a count caption's hard negative keeps its number and changes the colour or shape (the
  # 5.0.0 edit, drawn above so that every other field is what it was, is replaced).
  for i, fact in enumerate(facts):
    if fact.kind == "count":
      example["hard_negatives"][i] = count_negative(fact, objects, count_rng).text()
  return example
