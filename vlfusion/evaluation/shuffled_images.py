"""Which row lends its image to which in the shuffled-image evaluation (`accuracy_shuffled_images`).

Row i is shown the image of a row drawn uniformly among the rows of *other* images of the whole split
(an image is named by `BatchSource.image_identities`: the data's image id, or a digest of the pixels or
region features). Moving images within a batch would not do: in VQA v2's layout the questions of one
image are consecutive, so a neighbour's image is mostly the row's own. The draw is per row, so the
questions of one image see different images, and it is keyed by a fixed seed, so every evaluation of a
split, whatever the run's seed, shows each row the same other image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SEED = 20_260_323  # fixed: every run and every checkpoint is scored on the same shuffle.


def image_donors(identities: Sequence[str], seed: int = SEED) -> np.ndarray | None:
  """The row whose image each row is shown [N], never a row of the same identity; None when the split
  holds a single image (no shuffle is possible).

  Rows are grouped by identity; the donor of a row of group g is the u-th row outside g in group order,
  with u uniform in [0, N - |g|): exact, with no rejection loop however large one group is.
  """
  names, group = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
  if len(names) < 2:
    return None
  order = np.argsort(group, kind="stable")  # rows by group: g's are order[start[g]:start[g] + size[g]].
  size = np.bincount(group, minlength=len(names))
  start = np.concatenate([[0], np.cumsum(size)[:-1]])
  rows = len(group)
  u = np.random.default_rng(seed).integers(0, rows - size[group])
  return order[np.where(u < start[group], u, u + size[group])]
