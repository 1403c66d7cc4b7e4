"""Scalars to the console, `workdir/metrics.jsonl` and TensorBoard, from process 0 only."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
from absl import logging
from clu import metric_writers


class MetricsReporter:
  """Writes one record of scalars per logged step to every sink; silent on other processes."""

  def __init__(self, workdir: str):
    self.is_lead = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=not self.is_lead, asynchronous=False
    )

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    if not self.is_lead:
      return
    self.writer.write_scalars(step, scalars)
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()
    if self.is_lead:
      logging.flush()
