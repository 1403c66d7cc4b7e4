"""Digests that tie a reported number to the exact config and weights that produced it."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def params_digest(params: Any) -> str:
  """SHA-256 over (tree path, dtype, shape, bytes) of every parameter, in sorted path order."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  h = hashlib.sha256()
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      leaf = multihost_utils.process_allgather(leaf, tiled=True)
    array = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{array.dtype}{array.shape}".encode())
    h.update(array.tobytes())
  return h.hexdigest()
