"""Visual entailment on the shapes world, as a tensorflow-datasets builder (`shapes_world_ve/<size>`).

Each example is a scene and one statement ("hypothesis") of each template, labelled as SNLI-VE labels
its hypotheses: entailment (the image shows it true), neutral (the image cannot tell) or contradiction
(the image shows it false). What makes a statement undecidable is an occluder: half the scenes carry an
opaque grey square (drawn over the pixels, and a region of its own in `boxes` / `region_features`) that
may hide one object; the generator hides one under half of the occluders, so what lies beneath is
genuinely unknown to anyone who sees only the image.

Templates (`TEMPLATES`) are monotone, so an object more can never make a true statement false:

  existence      "there is a red circle"
  count_shape    "there are no fewer than two squares"
  count_colour   "there are no fewer than two red objects"
  relation       "there is a red circle left of a blue square"   (two colours and two shapes)

A statement is entailment when the visible objects make it true, neutral when they do not but some one
object under the occluder (any colour, shape and size, anywhere it fits) would, and contradiction when
it is false and no hidden object could change that.

Balance, so that the text alone says nothing. The label of each template is drawn first, uniformly in
effect: P(label | template, occluder) is `LABEL_PROBABILITIES`, whose average over scenes with and
without an occluder (`OCCLUDER_PROBABILITY` = 1/2) is 1/3 each. The scene is then drawn until every
drawn label can be realised, and each statement is drawn among those of its template that have its
label. Colours and shapes are drawn uniformly and positions symmetrically (left/right, up/down and the
diagonal), and every choice above treats them alike, so the distribution of a wording given its label
is the same for the three labels: per template and per exact wording the labels are balanced.

Example i of split s is a function of (SEED, s, i) alone, as in the shapes world.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from vlfusion.data import scenes

SEED = 20261207
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
LABELS = ("entailment", "neutral", "contradiction")
ENTAILMENT, NEUTRAL, CONTRADICTION = range(3)
TEMPLATES = ("existence", "count_shape", "count_colour", "relation")

OCCLUDER_PROBABILITY = 0.5
HIDDEN_PROBABILITY = 0.5  # of an occluder hiding an object.
OCCLUDER_HALF_SIDE = 0.18  # of the image size: the largest object (radius 0.15) fits under it.
OCCLUDER_COLOUR = (0.5, 0.5, 0.5)
# (with an occluder, without) -> P(entailment, neutral, contradiction). Without an occluder nothing is
# neutral; with one no existence statement is a contradiction (any object may be under it). Each row's
# average over the two kinds of scene is (1/3, 1/3, 1/3).
LABEL_PROBABILITIES = {
    "existence": ((1 / 3, 2 / 3, 0.0), (1 / 3, 0.0, 2 / 3)),
    "count_shape": ((1 / 6, 2 / 3, 1 / 6), (1 / 2, 0.0, 1 / 2)),
    "count_colour": ((1 / 6, 2 / 3, 1 / 6), (1 / 2, 0.0, 1 / 2)),
    "relation": ((1 / 6, 2 / 3, 1 / 6), (1 / 2, 0.0, 1 / 2)),
}
# The object radius of each size, as a fraction of the image size (the shapes world's own).
RADIUS = {"small": 0.09, "large": 0.15}
MAX_SCENE_DRAWS = 10_000


@dataclasses.dataclass(frozen=True)
class Statement:
  """A hypothesis in a form that can be checked against a list of objects."""

  template: str
  colour: str = ""
  shape: str = ""
  relation: str = ""
  colour2: str = ""
  shape2: str = ""

  def text(self) -> str:
    if self.template == "existence":
      return f"there is a {self.colour} {self.shape}"
    if self.template == "count_shape":
      return f"there are no fewer than two {self.shape}s"
    if self.template == "count_colour":
      return f"there are no fewer than two {self.colour} objects"
    return f"there is a {self.colour} {self.shape} {self.relation} a {self.colour2} {self.shape2}"


@functools.cache
def all_statements(template: str) -> tuple[Statement, ...]:
  """Every statement of `template`, in a fixed order."""
  colours, shapes = list(scenes.COLOURS), scenes.SHAPES
  if template == "existence":
    return tuple(Statement(template, colour=c, shape=s) for c in colours for s in shapes)
  if template == "count_shape":
    return tuple(Statement(template, shape=s) for s in shapes)
  if template == "count_colour":
    return tuple(Statement(template, colour=c) for c in colours)
  if template == "relation":
    return tuple(Statement(template, c, s, r, c2, s2) for c in colours for s in shapes
                 for r in scenes.RELATIONS for c2 in colours for s2 in shapes if c2 != c and s2 != s)
  raise ValueError(f"unknown template {template!r}; choose from {TEMPLATES}")


def holds(statement: Statement, objects: Sequence[scenes.Obj]) -> bool:
  """Whether `objects` make `statement` true."""
  st = statement
  if st.template == "existence":
    return any(o.colour == st.colour and o.shape == st.shape for o in objects)
  if st.template == "count_shape":
    return sum(o.shape == st.shape for o in objects) >= 2
  if st.template == "count_colour":
    return sum(o.colour == st.colour for o in objects) >= 2
  subjects = [o for o in objects if o.colour == st.colour and o.shape == st.shape]
  others = [o for o in objects if o.colour == st.colour2 and o.shape == st.shape2]
  return any(a is not b and scenes.holds_relation(a, b, st.relation) for a in subjects for b in others)


def _f32(x: float) -> float:
  """`x` as the nearest float32: coordinates are stored as float32, and a checker reading them back
  must find the same relations as the generator."""
  return float(np.float32(x))


def hidden_places(occluder: Sequence[float], image_size: int) -> list[tuple[str, float, float, float]]:
  """(size, cx, cy, radius) of the extreme places an object can take under `occluder` (x0, y0, x1, y1
  in pixels), wholly inside it with a pixel to spare: each size at the four corners of its centre's
  range. Every relation is one inequality in one coordinate, so an object somewhere under the occluder
  makes a statement true exactly when one of these does."""
  x0, y0, x1, y1 = occluder
  places = []
  for size, fraction in RADIUS.items():
    r = _f32(image_size * fraction)
    for cx in (x0 + r + 1, x1 - r - 1):
      for cy in (y0 + r + 1, y1 - r - 1):
        places.append((size, _f32(cx), _f32(cy), r))
  return places


def label(statement: Statement, visible: Sequence[scenes.Obj], occluder: Sequence[float] | None,
          image_size: int) -> int:
  """The label of `statement` for a scene of `visible` objects and an optional occluder: by trying
  every object that could be under it (the definition; `labelled_statements` is the fast way)."""
  if holds(statement, visible):
    return ENTAILMENT
  if occluder is not None:
    for size, cx, cy, r in hidden_places(occluder, image_size):
      for colour in scenes.COLOURS:
        for shape in scenes.SHAPES:
          if holds(statement, [*visible, scenes.Obj(colour, shape, size, cx, cy, r)]):
            return NEUTRAL
  return CONTRADICTION


def labelled_statements(template: str, visible: Sequence[scenes.Obj], occluder: Sequence[float] | None,
                        image_size: int) -> tuple[list[Statement], list[Statement], list[Statement]]:
  """The statements of `template` by label (entailment, neutral, contradiction), each list in
  `all_statements` order; the same labels as `label`, found from the objects instead of per statement."""
  # Statements are keyed by their fields, (colour, shape, relation, colour2, shape2): hashing tuples of
  # strings is many times faster than hashing the dataclass, and this runs for every scene drawn.
  true, possible = set(), set()
  if template == "existence":
    true = {(o.colour, o.shape, "", "", "") for o in visible}
    if occluder is not None:
      possible = {k for k, _ in _keyed(template)}
  elif template in ("count_shape", "count_colour"):
    by_shape = template == "count_shape"
    counts = collections.Counter(o.shape if by_shape else o.colour for o in visible)
    key = lambda v: ("", v, "", "", "") if by_shape else (v, "", "", "", "")
    true = {key(v) for v, n in counts.items() if n >= 2}
    if occluder is not None:  # one object more turns one into two.
      possible = {key(v) for v, n in counts.items() if n == 1}
  else:
    for a in visible:
      for b in visible:
        if a is not b and a.colour != b.colour and a.shape != b.shape:
          true.update((a.colour, a.shape, r, b.colour, b.shape)
                      for r in scenes.RELATIONS if scenes.holds_relation(a, b, r))
    if occluder is not None:
      places = hidden_places(occluder, image_size)
      for v in visible:
        # (relation, whether the hidden object is its subject) that some place under the occluder gives.
        roles = set()
        for size, cx, cy, r in places:
          h = scenes.Obj(v.colour, v.shape, size, cx, cy, r)  # only its place and size matter here.
          roles.update((rel, True) for rel in scenes.RELATIONS if scenes.holds_relation(h, v, rel))
          roles.update((rel, False) for rel in scenes.RELATIONS if scenes.holds_relation(v, h, rel))
        kinds = [(c, s) for c in scenes.COLOURS for s in scenes.SHAPES if c != v.colour and s != v.shape]
        for rel, hidden_first in roles:
          if hidden_first:
            possible.update((c, s, rel, v.colour, v.shape) for c, s in kinds)
          else:
            possible.update((v.colour, v.shape, rel, c, s) for c, s in kinds)
  out = ([], [], [])
  for k, st in _keyed(template):
    out[ENTAILMENT if k in true else NEUTRAL if k in possible else CONTRADICTION].append(st)
  return out


@functools.cache
def _keyed(template: str) -> tuple[tuple[tuple[str, ...], Statement], ...]:
  return tuple(((st.colour, st.shape, st.relation, st.colour2, st.shape2), st)
               for st in all_statements(template))


@dataclasses.dataclass(frozen=True)
class Scene:
  """A drawn scene: its visible objects, the occluder box (pixels) or None, the object under it or
  None, and one (template, statement, label) per template."""

  visible: tuple[scenes.Obj, ...]
  occluder: tuple[float, float, float, float] | None
  hidden: scenes.Obj | None
  hypotheses: tuple[tuple[str, Statement, int], ...]

  @property
  def objects(self) -> list[scenes.Obj]:
    """Every object of the scene, the hidden one (if any) last."""
    return [*self.visible, *([self.hidden] if self.hidden else [])]


def _boxes_apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
  return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _place_occluder(rng: np.random.Generator, visible: Sequence[scenes.Obj],
                    image_size: int) -> tuple[float, float, float, float] | None:
  """An occluder box clear of every visible object by a pixel, or None when 50 tries find no room."""
  h = image_size * OCCLUDER_HALF_SIDE
  for _ in range(50):
    cx, cy = rng.uniform(h, image_size - h, size=2)
    box = tuple(_f32(v) for v in (cx - h, cy - h, cx + h, cy + h))
    if all(_boxes_apart(box, o.box, 1.0) for o in visible):
      return box
  return None


def _hidden_object(rng: np.random.Generator, occluder: Sequence[float], image_size: int) -> scenes.Obj:
  """A random object wholly under `occluder`."""
  x0, y0, x1, y1 = occluder
  size = scenes.SIZES[int(rng.integers(len(scenes.SIZES)))]
  colour = list(scenes.COLOURS)[int(rng.integers(len(scenes.COLOURS)))]
  shape = scenes.SHAPES[int(rng.integers(len(scenes.SHAPES)))]
  r = _f32(image_size * RADIUS[size])
  cx, cy = rng.uniform(x0 + r + 1, x1 - r - 1), rng.uniform(y0 + r + 1, y1 - r - 1)
  return scenes.Obj(colour, shape, size, _f32(cx), _f32(cy), r)


def _rounded(o: scenes.Obj) -> scenes.Obj:
  return dataclasses.replace(o, cx=_f32(o.cx), cy=_f32(o.cy), radius=_f32(o.radius))


def draw_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> Scene:
  """A scene and its hypotheses: the occluder and the labels first, then scenes until every label can
  be had, then each template's statement among those with its label (see the module docstring)."""
  if image_size * (OCCLUDER_HALF_SIDE - RADIUS["large"]) < 1:
    raise ValueError(f"image_size={image_size} is too small for an occluder to hide a large object "
                     f"(needs {int(np.ceil(1 / (OCCLUDER_HALF_SIDE - RADIUS['large'])))} px or more)")
  occluded = bool(rng.random() < OCCLUDER_PROBABILITY)
  labels = [int(rng.choice(3, p=LABEL_PROBABILITIES[t][0 if occluded else 1])) for t in TEMPLATES]
  for _ in range(MAX_SCENE_DRAWS):
    visible = tuple(_rounded(o) for o in scenes.sample_scene(rng, image_size, max_objects))
    occluder, hidden = None, None
    if occluded:
      occluder = _place_occluder(rng, visible, image_size)
      if occluder is None:
        continue
      if rng.random() < HIDDEN_PROBABILITY:
        hidden = _hidden_object(rng, occluder, image_size)
    candidates = []
    for template, lab in zip(TEMPLATES, labels, strict=True):
      candidates.append(labelled_statements(template, visible, occluder, image_size)[lab])
      if not candidates[-1]:
        break
    else:
      full = [*visible, *([hidden] if hidden else [])]
      hypotheses = []
      for template, lab, options in zip(TEMPLATES, labels, candidates, strict=True):
        prefer_true = rng.random() < 0.5
        if lab == NEUTRAL:  # what is under the occluder makes about half of them true.
          true = [st for st in options if holds(st, full)]
          false = [st for st in options if not holds(st, full)]
          options = (true or false) if prefer_true else (false or true)
        hypotheses.append((template, options[int(rng.integers(len(options)))], lab))
      return Scene(visible, occluder, hidden, tuple(hypotheses))
  raise RuntimeError(f"no scene of {max_objects} objects at most has the labels {labels} in "
                     f"{MAX_SCENE_DRAWS} draws")


def paint_occluder(image: np.ndarray, occluder: Sequence[float], rng: np.random.Generator) -> np.ndarray:
  """`image` with the pixels whose centres lie in `occluder` (x0, y0, x1, y1) painted grey, with the
  renderer's kind of noise."""
  s = image.shape[0]
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
  x0, y0, x1, y1 = occluder
  inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
  pixels = image.astype(np.float32) / 255.0
  grey = np.array(OCCLUDER_COLOUR, np.float32) + rng.normal(0.0, 0.02, size=(int(inside.sum()), 3))
  pixels[inside] = grey
  return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


def make_example(rng: np.random.Generator, image_size: int, max_objects: int) -> dict:
  """One scene with everything the dataset stores about it (see `ShapesWorldVe._info`)."""
  scene = draw_scene(rng, image_size, max_objects)
  image = scenes.render(scene.visible, image_size, rng)
  regions = [o.box for o in scene.visible]
  if scene.occluder is not None:
    image = paint_occluder(image, scene.occluder, rng)
    regions.append(scene.occluder)
  boxes = np.array(regions, np.float32).reshape(-1, 4)
  objects = scene.objects
  return {
      "image": image,
      "boxes": boxes / np.float32(image_size),
      "region_features": scenes.region_features(image, boxes),
      "hypotheses": [st.text() for _, st, _ in scene.hypotheses],
      "hypothesis_labels": np.array([lab for _, _, lab in scene.hypotheses], np.int32),
      "hypothesis_templates": np.array([TEMPLATES.index(t) for t, _, _ in scene.hypotheses], np.int32),
      "colours": np.array([list(scenes.COLOURS).index(o.colour) for o in objects], np.int32),
      "shapes": np.array([scenes.SHAPES.index(o.shape) for o in objects], np.int32),
      "sizes": np.array([scenes.SIZES.index(o.size) for o in objects], np.int32),
      "centres": np.array([(o.cx, o.cy) for o in objects], np.float32).reshape(-1, 2),
      "radii": np.array([o.radius for o in objects], np.float32),
      "hidden": np.array([o is scene.hidden for o in objects], np.int32),
      "occluder": np.array([scene.occluder] if scene.occluder else [], np.float32).reshape(-1, 4),
  }


@dataclasses.dataclass
class ShapesWorldVeConfig(tfds.core.BuilderConfig):
  image_size: int = 64
  max_objects: int = 4
  num_examples: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def max_regions(self) -> int:
    """The most regions an example has: its visible objects and the occluder."""
    return self.max_objects + 1


class ShapesWorldVe(tfds.core.GeneratorBasedBuilder):
  """Shapes-world scenes, some with an occluder, and statements that are entailed, neutral or
  contradicted."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Four templates, labels balanced per template and per wording."}
  BUILDER_CONFIGS = [
      ShapesWorldVeConfig(name="tiny", description="64 px, 1-4 objects; seconds to prepare.",
                          image_size=64, max_objects=4,
                          num_examples={"train": 4000, "validation": 512, "test": 512}),
      # tiny's scenes with ten times the training scenes (a scene is fixed by its seed, split and
      # index): for learning, with tiny's own validation and test scenes.
      ShapesWorldVeConfig(name="tiny_40k", description="tiny with 40000 training scenes.",
                          image_size=64, max_objects=4,
                          num_examples={"train": 40000, "validation": 512, "test": 512}),
      ShapesWorldVeConfig(name="small", description="64 px, 1-6 objects.", image_size=64, max_objects=6,
                          num_examples={"train": 40000, "validation": 2000, "test": 2000}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({
            "image": f.Tensor(shape=(s, s, 3), dtype=np.uint8),
            # Regions: the visible objects, then the occluder (when there is one).
            "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
            "region_features": f.Tensor(shape=(None, scenes.FEATURE_DIM), dtype=np.float32),
            "hypotheses": f.Sequence(f.Text()),
            "hypothesis_labels": f.Tensor(shape=(None,), dtype=np.int32),
            "hypothesis_templates": f.Tensor(shape=(None,), dtype=np.int32),
            # Every object of the scene, the hidden one last; centres and radii in pixels.
            "colours": f.Tensor(shape=(None,), dtype=np.int32),
            "shapes": f.Tensor(shape=(None,), dtype=np.int32),
            "sizes": f.Tensor(shape=(None,), dtype=np.int32),
            "centres": f.Tensor(shape=(None, 2), dtype=np.float32),
            "radii": f.Tensor(shape=(None,), dtype=np.float32),
            "hidden": f.Tensor(shape=(None,), dtype=np.int32),
            "occluder": f.Tensor(shape=(None, 4), dtype=np.float32),  # 0 or 1 box, in pixels.
        }),
        metadata=tfds.core.MetadataDict(labels=list(LABELS), templates=list(TEMPLATES)),
        homepage="https://github.com/vlfusion/vlfusion",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.num_examples.items()}

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng([SEED, SPLIT_IDS[split], index])
      yield index, make_example(rng, cfg.image_size, cfg.max_objects)
