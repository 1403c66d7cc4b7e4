"""Shapes world 7.0.0's scenes and renderer: varied geometry, two drawing styles, pixel masks.

Up to 6.0.0 every scene was drawn one way (`scenes.render`, the "flat" style: two radii, axis-aligned
shapes in one colour each, hard edges on one dark grey): a model trained on it learns that renderer's
pixels, and recognised shapes drawn by another program at chance. From 7.0.0 a scene is sampled with
the variation a real image has and drawn in a named style:

- geometry (`sample_scene`, shared by every style): size over a wide range within each size class (the
  classes do not overlap: every small shape covers less area than any large one), aspect 0.8-1.25,
  any rotation, and partial occlusion (a later object may hide up to `MAX_HIDDEN` of an earlier one);
- "varied" (train and validation): anti-aliased shapes, half of them outlined in a darker shade of their
  colour, over a smooth background of any brightness (a tinted grey, a gradient, low-frequency noise),
  with pixel noise;
- "textured" (the held-out `validation_style` split): hard-edged, shaded shapes with a thick black or
  white outline over a high-frequency two-tone texture (stripes, a checkerboard or blotches).

Both styles jitter each object's colour inside its named colour's region (`jitter_colour`): hue within
`HUE_JITTER` of the name's hue, which stays far from every other name's, saturation well above any
background's. What is drawn keeps the scene's facts true: `sample_scene` only accepts an object when
every object stays mostly visible and the relations, places and sizes read from the visible pixel masks
(`visible_masks`) are those of the scene's geometry.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from vlfusion.data import scenes
from vlfusion.data.scenes import COLOURS, SHAPES, SIZES, Obj

STYLES = ("varied", "textured")
# Radius as a fraction of the image side, by size class. A small circle (the largest small shape) covers
# less than a large triangle (the smallest large shape): pi * 0.1^2 < 2 * 0.14^2.
RADIUS = {"small": (0.065, 0.10), "large": (0.14, 0.21)}
ASPECT = (0.8, 1.25)  # half-width / half-height ratio, log-uniform.
MAX_HIDDEN = 0.3  # an object may lose at most this fraction of its pixels to the objects drawn after it.
HUE_JITTER = {"red": 0.025, "green": 0.03, "blue": 0.025, "yellow": 0.012, "purple": 0.025}
MIN_VALUE = {"yellow": 0.85}  # a dark yellow reads as olive.
SATURATION = (0.6, 1.0)  # every object; backgrounds stay at or below BACKGROUND_SATURATION.
BACKGROUND_SATURATION = 0.15
_NOMINAL_HSV = {name: colorsys.rgb_to_hsv(*rgb) for name, rgb in COLOURS.items()}


@dataclasses.dataclass(frozen=True)
class Drawing:
  image: np.ndarray  # uint8 [S, S, 3]
  boxes: np.ndarray  # float32 [N, 4] (x0, y0, x1, y1) in pixels: each object's visible pixels.
  foreground: np.ndarray  # float32 [S, S]: 1 where an object is drawn.


def _half_axes(o: Obj) -> tuple[float, float]:
  return o.radius * np.sqrt(o.aspect), o.radius / np.sqrt(o.aspect)


def extent(o: Obj) -> float:
  """The farthest a point of `o` is from its centre, at any rotation."""
  rx, ry = _half_axes(o)
  if o.shape == "triangle":
    return float(np.hypot(rx, 4 * ry / 3))
  if o.shape == "square":
    return float(0.85 * np.hypot(rx, ry))
  return float(max(rx, ry))


def signed_distance(o: Obj, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
  """Approximate signed distance in pixels from (xx, yy) to `o`'s outline (negative inside): exact
  inside polygons and near every edge, which is what anti-aliasing and outlines need."""
  rx, ry = _half_axes(o)
  c, s = np.cos(o.angle), np.sin(o.angle)
  dx, dy = xx - o.cx, yy - o.cy
  u, v = c * dx + s * dy, -s * dx + c * dy
  if o.shape == "circle":  # an ellipse: f / |grad f| with f = (u/rx)^2 + (v/ry)^2 - 1.
    f = (u / rx) ** 2 + (v / ry) ** 2 - 1.0
    grad = 2.0 * np.hypot(u / rx**2, v / ry**2)
    return f / np.maximum(grad, 1e-6)
  if o.shape == "square":  # the flat style's square: 0.85 of the radius.
    return np.maximum(np.abs(u) - 0.85 * rx, np.abs(v) - 0.85 * ry)
  # A triangle pointing up in its own frame, centred on its centroid: (0, -4ry/3), (+-rx, 2ry/3).
  norm = np.hypot(2 * ry, rx)
  base = v - 2 * ry / 3
  side = (2 * ry * np.abs(u) - rx * (v + 4 * ry / 3)) / norm
  return np.maximum(base, side)


@functools.lru_cache(maxsize=8)
def _grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (x, y), each [S, S], read-only (shared between calls)."""
  yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
  xx.flags.writeable = yy.flags.writeable = False
  return xx, yy


def shape_mask(o: Obj, image_size: int) -> np.ndarray:
  """bool [S, S]: the pixels whose centre is inside `o` (what is drawn of it with nothing on top)."""
  xx, yy = _grid(image_size)
  return signed_distance(o, xx, yy) <= 0


def visible_masks(objects: Sequence[Obj], image_size: int) -> np.ndarray:
  """bool [N, S, S]: each object's pixels that no later object covers (objects are drawn in order)."""
  masks = np.array([shape_mask(o, image_size) for o in objects]).reshape(-1, image_size, image_size)
  return _visible(masks)


def _visible(masks: np.ndarray) -> np.ndarray:
  covered = np.zeros(masks.shape[1:], bool)
  out = np.zeros_like(masks)
  for i in range(len(masks) - 1, -1, -1):
    out[i] = masks[i] & ~covered
    covered |= masks[i]
  return out


def centroid(mask: np.ndarray) -> tuple[float, float]:
  ys, xs = np.nonzero(mask)
  return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def drawn_objects(objects: Sequence[Obj], masks: np.ndarray) -> list[Obj]:
  """`objects` moved to the centroids of their visible pixels: the scene as the pixels place it."""
  return [dataclasses.replace(o, cx=x, cy=y) for o, (x, y) in zip(objects, map(centroid, masks),
                                                                    strict=True)]


def _agrees(objects: Sequence[Obj], masks: np.ndarray, image_size: int) -> bool:
  """Whether the relations and places read from the visible masks are the scene's own."""
  drawn = drawn_objects(objects, masks)
  for i, (a, da) in enumerate(zip(objects, drawn, strict=True)):
    if scenes.place(a, image_size) != scenes.place(da, image_size):
      return False
    for j, (b, db) in enumerate(zip(objects, drawn, strict=True)):
      if i == j:
        continue
      if scenes.relation(a, b) != scenes.relation(da, db):
        return False
      if any(scenes.holds_relation(a, b, r) != scenes.holds_relation(da, db, r)
             for r in scenes.RELATIONS):
        return False
  return True


def sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> list[Obj]:
  """1..max_objects objects with a colour, shape, size class, radius, aspect, rotation and position,
  drawn in order, each accepted only if the scene's facts stay true of the visible pixels."""
  n = int(rng.integers(1, max_objects + 1))
  objects: list[Obj] = []
  full: list[np.ndarray] = []
  for _ in range(n):
    for _attempt in range(50):
      size = SIZES[int(rng.integers(len(SIZES)))]
      radius = image_size * rng.uniform(*RADIUS[size])
      aspect = float(np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
      angle = float(rng.uniform(0.0, 2 * np.pi))
      colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
      shape = SHAPES[int(rng.integers(len(SHAPES)))]
      o = Obj(colour, shape, size, 0.0, 0.0, float(radius), aspect=aspect, angle=angle)
      reach = extent(o) + 1
      cx, cy = rng.uniform(reach, image_size - reach, size=2)
      o = dataclasses.replace(o, cx=float(cx), cy=float(cy))
      masks = np.array([*full, shape_mask(o, image_size)])
      visible = _visible(masks)
      kept = visible.sum((1, 2)) / np.maximum(masks.sum((1, 2)), 1)
      if masks[-1].sum() >= 8 and kept.min() >= 1 - MAX_HIDDEN and _agrees([*objects, o], visible,
                                                                            image_size):
        objects.append(o)
        full.append(masks[-1])
        break
  return objects


def jitter_colour(name: str, rng: np.random.Generator) -> np.ndarray:
  """An RGB colour in `name`'s region: its hue within HUE_JITTER[name], saturation in SATURATION,
  value from MIN_VALUE (0.6 by default) to 1."""
  h, s, v = _NOMINAL_HSV[name]
  h = (h + rng.uniform(-HUE_JITTER[name], HUE_JITTER[name])) % 1.0
  s = float(np.clip(s * rng.uniform(0.8, 1.1), *SATURATION))
  v = float(np.clip(v * rng.uniform(0.8, 1.08), MIN_VALUE.get(name, 0.6), 1.0))
  return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def colour_name(rgb: np.ndarray) -> str | None:
  """The named colour whose hue is nearest to `rgb`'s, or None for a colour too grey to name."""
  h, s, _ = colorsys.rgb_to_hsv(*np.asarray(rgb, np.float64))
  if s < (SATURATION[0] + BACKGROUND_SATURATION) / 2:
    return None
  distance = lambda name: min(abs(h - _NOMINAL_HSV[name][0]), 1 - abs(h - _NOMINAL_HSV[name][0]))
  return min(COLOURS, key=distance)


def _grey(rng: np.random.Generator, value: float) -> np.ndarray:
  """A barely tinted grey of brightness `value`."""
  rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, BACKGROUND_SATURATION), value)
  return np.array(rgb, np.float32)


def _smooth_noise(rng: np.random.Generator, image_size: int, cells: int) -> np.ndarray:
  """[S, S] noise: a cells x cells grid of normals, bilinearly interpolated."""
  grid = rng.normal(size=(cells, cells)).astype(np.float32)
  points = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size * (cells - 1)
  weights = np.maximum(0.0, 1.0 - np.abs(points[:, None] - np.arange(cells)[None, :]))
  return weights @ grid @ weights.T


def _varied_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
  xx, yy = _grid(image_size)
  base = _grey(rng, rng.uniform(0.05, 0.95))
  theta = rng.uniform(0, 2 * np.pi)
  gradient = rng.uniform(0.0, 0.3) * ((np.cos(theta) * xx + np.sin(theta) * yy) / image_size - 0.5)
  shade = gradient + rng.uniform(0.0, 0.08) * _smooth_noise(rng, image_size, 5)
  return base[None, None, :] + shade[..., None]


def _textured_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
  xx, yy = _grid(image_size)
  v1 = rng.uniform(0.1, 0.9)
  v2 = float(np.clip(v1 + rng.choice([-1, 1]) * rng.uniform(0.12, 0.3), 0.0, 1.0))
  kind = int(rng.integers(3))
  if kind == 0:  # stripes at any angle
    theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 8.0)
    pattern = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period) > 0
  elif kind == 1:  # a checkerboard
    cell = rng.uniform(2.5, 6.0)
    pattern = (np.floor(xx / cell) + np.floor(yy / cell)) % 2 == 1
  else:  # blotches
    pattern = _smooth_noise(rng, image_size, max(image_size // 6, 4)) > 0
  t1, t2 = _grey(rng, v1), _grey(rng, v2)
  return np.where(pattern[..., None], t2[None, None, :], t1[None, None, :])


def _compose(image: np.ndarray, cover: np.ndarray, colour: np.ndarray) -> None:
  image *= 1.0 - cover[..., None]
  image += cover[..., None] * colour


def draw(objects: Sequence[Obj], image_size: int, style: str, rng: np.random.Generator) -> Drawing:
  """The scene drawn in `style` (a `STYLES` entry), in object order, with its boxes and foreground."""
  if style not in STYLES:
    raise ValueError(f"unknown rendering style {style!r}; choose from {STYLES}")
  s = image_size
  xx, yy = _grid(s)
  image = (_varied_background if style == "varied" else _textured_background)(rng, s)
  for o in objects:
    reach = extent(o) + 2
    ys = slice(max(int(o.cy - reach), 0), min(int(o.cy + reach) + 2, s))
    xs = slice(max(int(o.cx - reach), 0), min(int(o.cx + reach) + 2, s))
    d = signed_distance(o, xx[ys, xs], yy[ys, xs])
    fill = jitter_colour(o.colour, rng)
    patch = image[ys, xs]
    if style == "varied":
      cover = np.clip(0.5 - d, 0.0, 1.0)  # anti-aliased: the pixel's share inside the edge.
      width = rng.uniform(0.8, 1.8) if rng.random() < 0.5 else 0.0
      outline = fill * rng.uniform(0.35, 0.6)
      inner = np.clip(0.5 - (d + width), 0.0, 1.0)
      _compose(patch, cover - inner, outline)
      # The fill over what the outline left: composite the inner part on top.
      _compose(patch, inner, fill)
    else:
      cover = (d <= 0).astype(np.float32)  # hard edges
      width = min(rng.uniform(1.2, 2.2), 0.3 * min(_half_axes(o)))
      outline = np.full(3, 0.03 if rng.random() < 0.5 else 0.97, np.float32)
      inner = (d + width <= 0).astype(np.float32)
      theta = rng.uniform(0, 2 * np.pi)  # light from one side: value within +-15% across the shape.
      light = 1.0 + rng.uniform(0.0, 0.15) * ((np.cos(theta) * (xx[ys, xs] - o.cx)
                                               + np.sin(theta) * (yy[ys, xs] - o.cy)) / extent(o))
      shaded = np.clip(fill[None, None, :] * light[..., None], 0.0, 1.0)
      patch *= 1.0 - cover[..., None]
      patch += (cover - inner)[..., None] * outline + inner[..., None] * shaded
  sigma = rng.uniform(0.0, 0.05) if style == "varied" else rng.uniform(0.02, 0.06)
  image += rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
  pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
  visible = visible_masks(objects, s)
  return Drawing(pixels, np.array([_box(m) for m in visible], np.float32).reshape(-1, 4),
                 visible.any(0).astype(np.float32))


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
  ys, xs = np.nonzero(mask)
  return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
