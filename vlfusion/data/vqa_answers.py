"""VQA answers as the official evaluation compares and scores them (Antol et al., 2015; Goyal et al., 2017).

An answer's accuracy is min(#annotators who gave it / 3, 1), averaged over the ten subsets that leave one
of the ten annotators out, after the answer normalisation of the official evaluation: newlines and tabs as
spaces; punctuation removed (deleted where it touches a space or the answer has a digit-comma-digit, else
replaced by a space); periods removed unless followed by a digit; lowercase; number words as digits
("none" is "0"); the articles a/an/the dropped; and words written without their apostrophe restored from
the contraction table ("dont" is "don't").

One deliberate difference from the official script: it normalises only questions whose annotators
disagree, we always normalise (the released annotations are already normalised, so only a prediction
written like "Yes." would score differently, and it would score 0 there).

The data builders score the answers they store with it and the evaluation scores predictions with it, so
it lives below both and imports nothing heavy.
"""

from __future__ import annotations

import re

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
_COMMA_IN_NUMBER = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset(("a", "an", "the"))


def _contractions() -> dict[str, str]:
  """The official contraction table: a word as annotators type it -> the contraction.

  A contraction with one apostrophe is typed without it ("dont" -> "don't"); one with several, with
  any one of them left out ("couldnt've", "couldn'tve" -> "couldn't've"). The official table's entries
  for "I'm", "I've" and "I'd've" have capital keys that never match its lowercased text, so they are
  not here; and it maps "somebody'd" to "somebodyd", which we keep.
  """
  forms = """ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
      haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've
      might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
      shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's
      something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've
      they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's
      where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
      wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've""".split()
  table = {"somebody'd": "somebodyd"}
  for form in forms:
    parts = form.split("'")
    if len(parts) == 2:
      table["".join(parts)] = form
      continue
    for i in range(1, len(parts)):  # the apostrophe between parts[i - 1] and parts[i] left out.
      table["'".join(parts[:i - 1] + [parts[i - 1] + parts[i]] + parts[i + 1:])] = form
  return table


CONTRACTIONS = _contractions()


def _strip_punctuation(text: str) -> str:
  remove = _COMMA_IN_NUMBER.search(text) is not None
  out = text
  for p in _PUNCTUATION:
    if remove or f"{p} " in text or f" {p}" in text:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD.sub("", out)


def normalize_answer(answer: str) -> str:
  """An answer as the official VQA evaluation compares them (see the module docstring)."""
  text = _strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip())
  words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
  return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def soft_score(matching: int, num_annotators: int = 10) -> float:
  """The VQA accuracy of an answer that `matching` of `num_annotators` gave: min(#matches / 3, 1) over
  the subsets that leave one annotator out, averaged. For ten annotators this is min(0.3 * matching, 1)
  (0.3, 0.6, 0.9, 1.0 for 1, 2, 3, 4+ matches). With a single annotator it is an exact match."""
  if num_annotators <= 1:
    return float(matching > 0)
  left_out_matches = matching * min(1.0, (matching - 1) / 3)  # the left-out annotator gave this answer.
  left_out_other = (num_annotators - matching) * min(1.0, matching / 3)
  return (left_out_matches + left_out_other) / num_annotators
