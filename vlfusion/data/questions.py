"""Shapes-world VQA questions and NLVR2-style statements about pairs of scenes, from the scene graph.

Questions come in six types (colour, shape, count, existence, relation, direction) with answers in a
closed vocabulary `ANSWERS`; a question is only asked when its answer is unambiguous in the scene. Pair
statements compare a left and a right scene and are true or false, balanced 50/50.

"relation" asks a yes/no question about two objects ("is the red circle left of the blue square?");
"direction" asks for the relation itself ("where is the red circle relative to the blue square?" ->
left). The yes/no form alone is hard for gradient descent: its answer is the product of the question's
relation word and the objects' positions ("left of" and "right of" give opposite answers for the same
scene), so no single one of them correlates with the answer and a model starting from random weights
gets no first-order signal to locate the two objects. The direction question's answer is a function of
the positions alone and gives that signal: region models learn it quickly, pixel models not yet
(docs/recipes.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vlfusion.data import scenes
from vlfusion.data.scenes import COLOURS, NUMBERS, SHAPES, SIZES, Obj, relation

QUESTION_TYPES = ("colour", "shape", "count", "existence", "relation", "direction")
# A direction question's answer is its relation's first word: "left of" -> "left", "above" -> "above".
_DIRECTION_OF = {r: r.split()[0] for r in scenes.RELATIONS}
DIRECTIONS = tuple(_DIRECTION_OF.values())  # left, right, above, below
ANSWERS = ("no", "yes", *COLOURS, *SHAPES, *NUMBERS, *DIRECTIONS)
PAIR_TEMPLATES = ("more", "fewer", "both", "exactly_one", "count_right")


def parse_type_weight_schedule(value: str, field: str = "config.data.question_type_weights"
                               ) -> list[tuple[int, dict[str, float]]]:
  """Phases of question-type weights, each from a training step on: [(first step, weights), ...].

  A phase is "direction:4,relation:0" -> {"direction": 4.0, "relation": 0.0} (types not named weigh
  1). "relation:0,colour:0; 2000=relation:4; 3000=" weighs steps 0-1,999 one way, 2,000-2,999 another,
  and every type 1 from step 3,000 (an empty phase). A phase after the first starts with "<step>=",
  steps increasing; the first starts at 0. Raises ValueError naming `field` for a bad step, an unknown
  type, a weight that is not a finite number >= 0, a type named twice in a phase, or a phase that
  leaves no type to ask.
  """
  phases: list[tuple[int, dict[str, float]]] = []
  for i, part in enumerate(p.strip() for p in str(value).split(";")):
    head, sep, weights = part.partition("=")
    if not sep:
      head, weights = "0" if i == 0 else "", part
    try:
      start = int(head.strip())
    except ValueError:
      start = -1
    previous = phases[-1][0] if phases else -1
    if start <= previous or (i == 0 and start != 0):
      raise ValueError(f"{field}={value!r}: phase {part!r} must start with '<step>=', steps increasing "
                       "from 0 (the first phase may leave its step out)")
    phases.append((start, _parse_phase(weights, value, field)))
  return phases


def _parse_phase(text: str, value: str, field: str) -> dict[str, float]:
  weights: dict[str, float] = {}
  for item in filter(None, (part.strip() for part in str(text).split(","))):
    name, sep, number = item.partition(":")
    name = name.strip()
    if not sep or name not in QUESTION_TYPES:
      raise ValueError(f"{field}={value!r}: {item!r} is not <question type>:<weight> with a type of "
                       f"{QUESTION_TYPES}")
    try:
      weight = float(number)
    except ValueError:
      weight = float("nan")
    if not np.isfinite(weight) or weight < 0 or name in weights:
      raise ValueError(f"{field}={value!r}: the weight of {name!r} must be given once, as a finite "
                       "number >= 0")
    weights[name] = weight
  if weights and not any(weights.get(t, 1.0) > 0 for t in QUESTION_TYPES):
    raise ValueError(f"{field}={value!r}: {text.strip()!r} gives every question type weight 0")
  return weights


def _pick(items: Sequence, rng: np.random.Generator):
  return items[int(rng.integers(len(items)))]


def _count(objects: Sequence[Obj], **attrs: str) -> int:
  return sum(all(getattr(o, k) == v for k, v in attrs.items()) for o in objects)


def _colour_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str] | None:
  candidates = []
  for o in objects:
    if _count(objects, shape=o.shape) == 1:
      candidates.append((f"what colour is the {o.shape}?", o.colour))
    elif _count(objects, shape=o.shape, size=o.size) == 1:
      candidates.append((f"what colour is the {o.size} {o.shape}?", o.colour))
  return _pick(candidates, rng) if candidates else None


def _shape_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str] | None:
  candidates = []
  for o in objects:
    if _count(objects, colour=o.colour) == 1:
      candidates.append((f"what shape is the {o.colour} object?", o.shape))
    elif _count(objects, colour=o.colour, size=o.size) == 1:
      candidates.append((f"what shape is the {o.size} {o.colour} object?", o.shape))
  return _pick(candidates, rng) if candidates else None


def _count_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str]:
  # Half the time about an object in the scene, so that the answer is not mostly "zero".
  if rng.random() < 0.5:
    o = _pick(objects, rng)
    colour, shape = o.colour, o.shape
  else:
    colour, shape = _pick(list(COLOURS), rng), _pick(SHAPES, rng)
  form = int(rng.integers(3))
  if form == 0:
    return f"how many {colour} {shape}s are there?", NUMBERS[_count(objects, colour=colour, shape=shape)]
  if form == 1:
    return f"how many {shape}s are there?", NUMBERS[_count(objects, shape=shape)]
  return f"how many {colour} objects are there?", NUMBERS[_count(objects, colour=colour)]


def _existence_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str]:
  if rng.random() < 0.5:
    o = _pick(objects, rng)
    return f"is there a {o.colour} {o.shape}?", "yes"
  absent = [(c, s) for c in COLOURS for s in SHAPES if _count(objects, colour=c, shape=s) == 0]
  c, s = _pick(absent, rng)
  return f"is there a {c} {s}?", "no"


def _related_pair(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[Obj, Obj, str] | None:
  """Two objects that no other object shares colour and shape with, and the clear relation of the first
  to the second; None when the scene has no such pair."""
  unique = scenes.unique_objects(objects)
  pairs = [(a, b, relation(a, b)) for a in unique for b in unique if a is not b]
  pairs = [p for p in pairs if p[2] is not None]
  return _pick(pairs, rng) if pairs else None


def _relation_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str] | None:
  pair = _related_pair(objects, rng)
  if pair is None:
    return None
  a, b, rel = pair
  if rng.random() < 0.5 and not scenes.holds_relation(b, a, rel):  # swapped subject and object: false.
    a, b = b, a
  answer = "yes" if scenes.holds_relation(a, b, rel) else "no"
  return f"is the {a.colour} {a.shape} {rel} the {b.colour} {b.shape}?", answer


def _direction_question(objects: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str] | None:
  pair = _related_pair(objects, rng)
  if pair is None:
    return None
  a, b, rel = pair
  return (f"where is the {a.colour} {a.shape} relative to the {b.colour} {b.shape}?",
          _DIRECTION_OF[rel])


_ASK: dict[str, Callable] = {
    "colour": _colour_question, "shape": _shape_question, "count": _count_question,
    "existence": _existence_question, "relation": _relation_question, "direction": _direction_question,
}


def make_questions(objects: Sequence[Obj], rng: np.random.Generator,
                   types: Sequence[str] = QUESTION_TYPES) -> list[tuple[str, str, str]]:
  """(question, answer, question_type) for each of `types` the scene can answer unambiguously."""
  out = []
  for qtype in types:
    qa = _ASK[qtype](objects, rng)
    if qa is not None:
      out.append((qa[0], qa[1], qtype))
  return out


def answer_holds(question: str, answer: str, objects: Sequence[Obj]) -> bool:
  """Re-derives the answer of a generated question from the scene (a check for tests)."""
  words = question.rstrip("?").split()
  if words[:2] == ["what", "colour"]:
    target = words[4:]
    matches = [o for o in objects if (o.shape == target[-1] and (len(target) == 1 or o.size == target[0]))]
    return len(matches) == 1 and matches[0].colour == answer
  if words[:2] == ["what", "shape"]:
    target = words[4:-1]
    matches = [o for o in objects if o.colour == target[-1] and (len(target) == 1 or o.size == target[0])]
    return len(matches) == 1 and matches[0].shape == answer
  if words[:2] == ["how", "many"]:
    if words[-3] == "objects":
      n = _count(objects, colour=words[2])
    elif len(words) == 6:
      n = _count(objects, colour=words[2], shape=words[3][:-1])
    else:
      n = _count(objects, shape=words[2][:-1])
    return NUMBERS[n] == answer
  if words[:2] == ["is", "there"]:
    return (_count(objects, colour=words[3], shape=words[4]) > 0) == (answer == "yes")
  # is the C S <relation words> the C2 S2 | where is the C S relative to the C2 S2
  first = 3 if words[0] == "where" else 2
  c, s, c2, s2 = words[first], words[first + 1], words[-2], words[-1]
  a = [o for o in objects if (o.colour, o.shape) == (c, s)]
  b = [o for o in objects if (o.colour, o.shape) == (c2, s2)]
  if len(a) != 1 or len(b) != 1:
    return False
  if words[0] == "where":
    return _DIRECTION_OF.get(relation(a[0], b[0]) or "") == answer
  return scenes.holds_relation(a[0], b[0], " ".join(words[4:-3])) == (answer == "yes")


def _statement(template: str, left: Sequence[Obj], right: Sequence[Obj],
               rng: np.random.Generator) -> tuple[str, bool]:
  # What the statement is about: an object of either scene, or half the time any colour and shape (so
  # that "both images contain ..." can be false and "exactly one ..." can be false by neither).
  if rng.random() < 0.5:
    o = _pick([*left, *right], rng)
    colour, shape = o.colour, o.shape
  else:
    colour, shape = _pick(list(COLOURS), rng), _pick(SHAPES, rng)
  if template in ("more", "fewer"):
    form = int(rng.integers(3))
    attrs, noun = [({"shape": shape}, f"{shape}s"), ({"colour": colour}, f"{colour} objects"),
                   ({"colour": colour, "shape": shape}, f"{colour} {shape}s")][form]
    nl, nr = _count(left, **attrs), _count(right, **attrs)
    truth = nl > nr if template == "more" else nl < nr
    return f"the left image has {template} {noun} than the right image", truth
  in_left = _count(left, colour=colour, shape=shape) > 0
  in_right = _count(right, colour=colour, shape=shape) > 0
  if template == "both":
    return f"both images contain a {colour} {shape}", in_left and in_right
  if template == "exactly_one":
    return f"exactly one image contains a {colour} {shape}", in_left != in_right
  n = int(rng.integers(0, 4)) if rng.random() < 0.5 else _count(right, shape=shape)
  noun = shape if n == 1 else f"{shape}s"
  return f"the right image contains {NUMBERS[n]} {noun}", _count(right, shape=shape) == n


def pair_statement(left: Sequence[Obj], right: Sequence[Obj], rng: np.random.Generator) -> tuple[str, bool]:
  """A statement about two scenes (left, right) and whether it is true; true with probability 1/2.

  The truth is drawn first and the template second, then the template's statements are drawn until one
  has that truth (the next template if it cannot), so each template is true about half the time and
  the wording alone says little about the label.
  """
  want = bool(rng.random() < 0.5)
  for t in rng.permutation(len(PAIR_TEMPLATES)):
    for _ in range(30):
      text, truth = _statement(PAIR_TEMPLATES[int(t)], left, right, rng)
      if truth == want:
        return text, truth
  return text, truth


def vocabulary() -> list[str]:
  """Every word a question, answer or pair statement can contain, beyond the captions' words."""
  words = {"what", "colour", "shape", "object", "objects", "how", "many", "is", "are", "there", "the", "a",
           "left", "right", "image", "images", "has", "more", "fewer", "than", "both", "contain",
           "contains", "exactly", "yes", "no", "where", "relative", "to", "above", "below"}
  words.update(COLOURS, SHAPES, (s + "s" for s in SHAPES), SIZES, NUMBERS)
  return sorted(words)
