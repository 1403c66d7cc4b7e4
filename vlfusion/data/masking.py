"""BERT masked-language-model corruption: 15% of tokens chosen, of those 80% [MASK], 10% random, 10% kept.

With `word_starts`, whole words are chosen (every wordpiece of a chosen word is corrupted, each with its
own 80/10/10 draw), as BERT's whole-word-masking models were trained.
"""

from __future__ import annotations

import numpy as np


def mask_tokens(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, *, probability: float,
                mask_id: int, random_ids: np.ndarray,
                word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Corrupts `ids` [L] at a random `probability` fraction of the `maskable` positions.

  Returns (inputs, targets, weights): targets are the original ids, weights 1.0 where a position was
  chosen (and must be predicted) and 0.0 elsewhere. `random_ids` are the ids a random replacement draws
  from (ordinary tokens, never special ones). `word_starts` [L] (True where a token begins a word, False
  on `##` continuations) switches to whole-word masking: a word is chosen with `probability`.
  """
  ids = np.asarray(ids, np.int32)
  draws = rng.random(ids.shape)
  if word_starts is None:
    chosen = (draws < probability) & maskable
  else:
    word = np.cumsum(np.asarray(word_starts, bool)) - 1  # each position's word number.
    chosen = (draws[np.flatnonzero(word_starts)][np.maximum(word, 0)] < probability) & maskable
  action = rng.random(ids.shape)
  inputs = ids.copy()
  inputs[chosen & (action < 0.8)] = mask_id
  replace = chosen & (action >= 0.8) & (action < 0.9)
  inputs[replace] = rng.choice(random_ids, size=int(replace.sum()))
  return inputs, ids.copy(), chosen.astype(np.float32)
