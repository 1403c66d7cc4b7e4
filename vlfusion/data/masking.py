"""BERT masked-language-model corruption: 15% of tokens chosen, of those 80% [MASK], 10% random, 10% kept."""

from __future__ import annotations

import numpy as np


def mask_tokens(ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, *, probability: float,
                mask_id: int, random_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Corrupts `ids` [L] at a random `probability` fraction of the `maskable` positions.

  Returns (inputs, targets, weights): targets are the original ids, weights 1.0 where a position was
  chosen (and must be predicted) and 0.0 elsewhere. `random_ids` are the ids a random replacement draws
  from (ordinary tokens, never special ones).
  """
  ids = np.asarray(ids, np.int32)
  chosen = (rng.random(ids.shape) < probability) & maskable
  action = rng.random(ids.shape)
  inputs = ids.copy()
  inputs[chosen & (action < 0.8)] = mask_id
  replace = chosen & (action >= 0.8) & (action < 0.9)
  inputs[replace] = rng.choice(random_ids, size=int(replace.sum()))
  return inputs, ids.copy(), chosen.astype(np.float32)
