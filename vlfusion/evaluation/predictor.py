"""What an evaluator is given of a model: its forward pass at evaluation time and the mesh it runs on.

Evaluators are built from a `Predictor` and their data, the way big_vision's are built from a
`predict_fn`: they know nothing of training (no optimizer, train state or checkpoint). Whoever holds a
model builds one (`Predictor.of_model`); `vlfusion.experiment` does it for training runs and eval.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax

from vlfusion import partitioning

# (params, batch) -> the model's outputs by name ("vqa_logits", "itc_text_embeds", ...).
PredictFn = Callable[[Any, dict[str, Any]], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A model's evaluation-time forward pass (`predict_fn`), its mesh and its logical axis rules."""

  predict_fn: PredictFn
  mesh: jax.sharding.Mesh
  rules: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def of_model(cls, model: nn.Module, mesh: jax.sharding.Mesh, rules: Any = ()) -> Predictor:
    """The predictor of a Flax model: `model.apply` with `train=False` (no dropout, no masking)."""
    return cls(lambda params, batch: model.apply({"params": params}, batch, train=False), mesh,
               tuple(rules))

  @contextlib.contextmanager
  def placed(self) -> Iterator[None]:
    """The mesh and axis rules the model's sharding constraints are read under."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def global_batch(self, local: dict[str, Any]) -> dict[str, jax.Array]:
    """This process's rows of a batch as the global batch, sharded over the mesh's batch axes."""
    return partitioning.to_global_batch(local, self.mesh)

  def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` jit-compiled with its outputs replicated: every process holds every row of them."""
    return jax.jit(fn, out_shardings=partitioning.replicated(self.mesh))
