"""Shapes world scenes: generation, rendering, region features and captions, in pure numpy.

Everything here is a function of a numpy Generator, so a scene is fixed by (seed, split, index). Region
features are computed from the rendered pixels inside each object's box, never from its labels: a model has
to see the colour and the shape to know them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

COLOURS = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.65, 0.20, 0.80),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
BACKGROUND = (0.12, 0.12, 0.12)
FEATURE_GRID = 4  # region features: a 4x4 grid of (r, g, b, foreground) averages = 64 values.
FEATURE_DIM = FEATURE_GRID * FEATURE_GRID * 4

# Kinds of caption and of ITM negative, stored as ints in the dataset.
# "scene" lists every object with its place in the image: the caption that tells a scene apart (retrieval).
CAPTION_KINDS = ("describe", "count", "relation", "scene")
NEGATIVE_KINDS = ("none", "random", "attribute", "relation")


@dataclasses.dataclass(frozen=True)
class Obj:
  colour: str
  shape: str
  size: str
  cx: float  # centre, in pixels.
  cy: float
  radius: float
  # 7.0.0 (`rendering`): half-width / half-height and rotation in radians; the flat style draws neither.
  aspect: float = 1.0
  angle: float = 0.0

  @property
  def box(self) -> tuple[float, float, float, float]:
    return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius)


@dataclasses.dataclass(frozen=True)
class Fact:
  """A statement about a scene: what a caption says, in a form that can be checked against it."""

  kind: str  # describe | count | relation
  colour: str = ""
  shape: str = ""
  size: str = ""
  count: int = 0
  relation: str = ""
  colour2: str = ""
  shape2: str = ""

  def text(self) -> str:
    if self.kind == "describe":
      return f"there is a {self.size} {self.colour} {self.shape}"
    if self.kind == "count":
      verb = "is" if self.count == 1 else "are"
      noun = self.shape if self.count == 1 else self.shape + "s"
      return f"there {verb} {NUMBERS[self.count]} {self.colour} {noun}"
    return f"the {self.colour} {self.shape} is {self.relation} the {self.colour2} {self.shape2}"


def sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> list[Obj]:
  """1..max_objects objects that do not overlap, each with a colour, shape, size and position."""
  n = int(rng.integers(1, max_objects + 1))
  objects: list[Obj] = []
  colours = list(COLOURS)
  for _ in range(n):
    for _attempt in range(50):
      size = SIZES[int(rng.integers(len(SIZES)))]
      radius = image_size * (0.09 if size == "small" else 0.15)
      cx, cy = rng.uniform(radius + 1, image_size - radius - 1, size=2)
      if all(np.hypot(cx - o.cx, cy - o.cy) > (radius + o.radius) * 1.15 for o in objects):
        objects.append(Obj(colours[int(rng.integers(len(colours)))],
                           SHAPES[int(rng.integers(len(SHAPES)))], size, float(cx), float(cy),
                           float(radius)))
        break
  return objects


def render(objects: Sequence[Obj], image_size: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [S, S, 3] pixels of the scene, with a little noise so that pixels are never exact."""
  s = image_size
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
  image = np.broadcast_to(np.array(BACKGROUND, np.float32), (s, s, 3)).copy()
  for o in objects:
    # Only the pixels of the object's box can be inside it.
    ys = slice(max(int(o.cy - o.radius) - 1, 0), min(int(o.cy + o.radius) + 2, s))
    xs = slice(max(int(o.cx - o.radius) - 1, 0), min(int(o.cx + o.radius) + 2, s))
    y, x = yy[ys, xs], xx[ys, xs]
    dx, dy = x - o.cx, y - o.cy
    if o.shape == "circle":
      inside = dx**2 + dy**2 <= o.radius**2
    elif o.shape == "square":
      inside = (np.abs(dx) <= o.radius * 0.85) & (np.abs(dy) <= o.radius * 0.85)
    else:  # an upward triangle filling the box.
      top, bottom = o.cy - o.radius, o.cy + o.radius
      half_width = o.radius * (y - top) / (2 * o.radius)
      inside = (y >= top) & (y <= bottom) & (np.abs(dx) <= half_width)
    image[ys, xs][inside] = COLOURS[o.colour]
  image += rng.normal(0.0, 0.02, size=image.shape).astype(np.float32)
  return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def region_features(image: np.ndarray, boxes: np.ndarray, foreground: np.ndarray | None = None
                    ) -> np.ndarray:
  """[N, 64] features from the pixels in each box: a 4x4 grid of mean (r, g, b, foreground).

  `foreground` [S, S] says which pixels are objects; by default, those far from the flat style's
  background colour (a textured background has no one colour: 7.0.0 passes the drawn objects' masks).
  """
  s = image.shape[0]
  pixels = image.astype(np.float32) / 255.0
  if foreground is None:
    foreground = (np.abs(pixels - np.array(BACKGROUND, np.float32)).max(-1) > 0.15).astype(np.float32)
  planes = np.concatenate([pixels, foreground[..., None]], -1).astype(np.float64)
  # A summed-area table makes each cell's mean four lookups instead of a slice and a reduction.
  table = np.zeros((s + 1, s + 1, 4), np.float64)
  table[1:, 1:] = planes.cumsum(0).cumsum(1)
  edges = np.linspace(0.0, 1.0, FEATURE_GRID + 1)
  out = np.zeros((len(boxes), FEATURE_GRID, FEATURE_GRID, 4), np.float32)
  for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
    ya = np.clip(np.floor(y0 + (y1 - y0) * edges[:-1]), 0, s - 1).astype(int)
    yb = np.clip(np.ceil(y0 + (y1 - y0) * edges[1:]), ya + 1, s).astype(int)
    xa = np.clip(np.floor(x0 + (x1 - x0) * edges[:-1]), 0, s - 1).astype(int)
    xb = np.clip(np.ceil(x0 + (x1 - x0) * edges[1:]), xa + 1, s).astype(int)
    total = (table[yb[:, None], xb[None, :]] - table[ya[:, None], xb[None, :]]
             - table[yb[:, None], xa[None, :]] + table[ya[:, None], xa[None, :]])
    area = ((yb - ya)[:, None] * (xb - xa)[None, :])[..., None]
    out[i] = total / area
  return out.reshape(len(boxes), FEATURE_DIM)


def relation(a: Obj, b: Obj) -> str | None:
  """The clearest spatial relation of a to b, or None when they are too close to say."""
  dx, dy = b.cx - a.cx, b.cy - a.cy
  margin = (a.radius + b.radius) * 0.5
  if abs(dx) >= abs(dy) and abs(dx) > margin:
    return "left of" if dx > 0 else "right of"
  if abs(dy) > abs(dx) and abs(dy) > margin:
    return "above" if dy > 0 else "below"
  return None


def holds_relation(a: Obj, b: Obj, rel: str) -> bool:
  """Whether `a` is `rel` (a `RELATIONS` entry) of `b`, by more than half their radii."""
  dx, dy = b.cx - a.cx, b.cy - a.cy
  margin = (a.radius + b.radius) * 0.5
  return {"left of": dx > margin, "right of": -dx > margin, "above": dy > margin,
          "below": -dy > margin}[rel]


def holds(fact: Fact, objects: Sequence[Obj]) -> bool:
  """Whether the scene makes `fact` true."""
  if fact.kind == "describe":
    return any(o.colour == fact.colour and o.shape == fact.shape and o.size == fact.size
               for o in objects)
  if fact.kind == "count":
    return sum(o.colour == fact.colour and o.shape == fact.shape for o in objects) == fact.count
  subjects = [o for o in objects if o.colour == fact.colour and o.shape == fact.shape]
  others = [o for o in objects if o.colour == fact.colour2 and o.shape == fact.shape2]
  return any(a is not b and holds_relation(a, b, fact.relation) for a in subjects for b in others)


def unique_objects(objects: Sequence[Obj]) -> list[Obj]:
  """Objects that no other object in the scene shares colour and shape with."""
  return [o for o in objects
          if sum(p.colour == o.colour and p.shape == o.shape for p in objects) == 1]


def place(o: Obj, image_size: int) -> str:
  """Where `o`'s centre is, in a 3 x 3 grid of the image: "top left", "top", ..., "centre", ...,
  "bottom right"."""
  column = ("left", "centre", "right")[min(int(3 * o.cx / image_size), 2)]
  row = ("top", "centre", "bottom")[min(int(3 * o.cy / image_size), 2)]
  if row == "centre":
    return column
  return row if column == "centre" else f"{row} {column}"


def scene_caption(objects: Sequence[Obj], image_size: int) -> str:
  """Every object of the scene, in reading order (top to bottom, then left to right), as
  "size colour shape place", joined by commas: "large red circle top left, small blue square centre"."""
  ordered = sorted(objects, key=lambda o: (o.cy, o.cx))
  return ", ".join(f"{o.size} {o.colour} {o.shape} {place(o, image_size)}" for o in ordered)


def scene_negative(objects: Sequence[Obj], image_size: int, rng: np.random.Generator) -> str:
  """`scene_caption` with one object's colour, shape or size changed: false of the scene."""
  ordered = sorted(objects, key=lambda o: (o.cy, o.cx))
  i = int(rng.integers(len(ordered)))
  field = ("colour", "shape", "size")[int(rng.integers(3))]
  choices = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[field]
  old = getattr(ordered[i], field)
  new = [c for c in choices if c != old][int(rng.integers(len(choices) - 1))]
  ordered[i] = dataclasses.replace(ordered[i], **{field: new})
  return scene_caption(ordered, image_size)


def true_facts(objects: Sequence[Obj], rng: np.random.Generator) -> list[Fact]:
  """One true fact of each kind the scene allows: a description, a count and (if possible) a relation."""
  o = objects[int(rng.integers(len(objects)))]
  facts = [Fact("describe", o.colour, o.shape, o.size)]
  c = objects[int(rng.integers(len(objects)))]
  facts.append(Fact("count", c.colour, c.shape,
                    count=sum(p.colour == c.colour and p.shape == c.shape for p in objects)))
  unique = unique_objects(objects)
  pairs = [(a, b, relation(a, b)) for a in unique for b in unique if a is not b]
  pairs = [p for p in pairs if p[2] is not None]
  if pairs:
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    facts.append(Fact("relation", a.colour, a.shape, relation=rel, colour2=b.colour, shape2=b.shape))
  return facts


def hard_negative(fact: Fact, objects: Sequence[Obj], rng: np.random.Generator) -> tuple[Fact, str]:
  """A false fact one edit away from `fact`: a changed attribute or count, or a swapped relation.

  Returns (fact, kind) with kind "attribute" or "relation".
  """
  if fact.kind == "relation":
    swapped = dataclasses.replace(fact, colour=fact.colour2, shape=fact.shape2,
                                  colour2=fact.colour, shape2=fact.shape)
    if not holds(swapped, objects):
      return swapped, "relation"
  for _ in range(100):
    if fact.kind == "count":
      candidate = dataclasses.replace(fact, count=int(rng.integers(1, 5)))
    else:
      field = ("colour", "shape", "size")[int(rng.integers(2 if fact.kind == "relation" else 3))]
      choices = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[field]
      candidate = dataclasses.replace(fact, **{field: choices[int(rng.integers(len(choices)))]})
    if candidate != fact and not holds(candidate, objects):
      return candidate, "attribute"
  raise RuntimeError(f"no false variant of {fact.text()!r} found for the scene")


def count_negative(fact: Fact, objects: Sequence[Obj], rng: np.random.Generator) -> Fact:
  """A false count caption with the number of `fact` and another colour or shape.

  Changing the number instead (`hard_negative`'s way, shapes world up to 5.0.0) told the label from the
  text: a scene rarely holds two objects of one colour and shape, so true counts are mostly "one" and a
  "three red circles" was nearly always false.
  """
  for _ in range(100):
    field = ("colour", "shape")[int(rng.integers(2))]
    choices = list(COLOURS) if field == "colour" else list(SHAPES)
    candidate = dataclasses.replace(fact, **{field: choices[int(rng.integers(len(choices)))]})
    if candidate != fact and not holds(candidate, objects):
      return candidate
  return hard_negative(fact, objects, rng)[0]  # every class edit holds: change the number after all.


def random_negative(objects: Sequence[Obj], rng: np.random.Generator, image_size: int,
                    max_objects: int) -> Fact:
  """A fact about another random scene that is false of this one."""
  while True:
    other = sample_scene(rng, image_size, max_objects)
    facts = true_facts(other, rng)
    fact = facts[int(rng.integers(len(facts)))]
    if not holds(fact, objects):
      return fact


def random_negative_like(kind: str, objects: Sequence[Obj], rng: np.random.Generator, image_size: int,
                         max_objects: int) -> str:
  """A caption of form `kind` (a `CAPTION_KINDS` entry) about another random scene, false of this one:
  the random ITM negative of a caption of that form, so that a negative's form never tells its label."""
  own = scene_caption(objects, image_size)
  while True:
    other = sample_scene(rng, image_size, max_objects)
    if kind == "scene":
      text = scene_caption(other, image_size)
      if text != own:
        return text
      continue
    facts = [f for f in true_facts(other, rng) if f.kind == kind]
    if facts and not holds(facts[0], objects):
      return facts[0].text()


NUM_LABELS = len(COLOURS) * len(SHAPES)


def object_label(o: Obj) -> int:
  """The object class of `o` (colour and shape), the label masked region modelling predicts."""
  return list(COLOURS).index(o.colour) * len(SHAPES) + SHAPES.index(o.shape)


def vocabulary() -> list[str]:
  """Every word a shapes-world caption can contain."""
  words = {"there", "is", "are", "a", "the", "top", "bottom", "centre"}
  words.update(COLOURS, SHAPES, (s + "s" for s in SHAPES), SIZES, NUMBERS)
  for r in RELATIONS:
    words.update(r.split())
  return sorted(words)
