"""Scalars to the console, `workdir/metrics.jsonl` and TensorBoard, from process 0 only; throughput,
FLOPs per step from XLA's cost analysis, and MFU."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
from absl import logging
from clu import metric_writers
from etils import epath

from vlfusion.rundir import Workdir

# Dense bf16 peak FLOP/s per device (one chip; one GPU), by a substring of `device.device_kind`.
# Checked in order, so the more specific names come first.
PEAK_FLOPS_BY_DEVICE_KIND = (
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v4", 275e12),
    ("H100", 989e12),  # SXM; PCIe parts are slower: set config.train.peak_flops_per_device.
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_flops_per_device(configured: float = 0.0, device_kind: str | None = None) -> float | None:
  """`configured` if > 0, else the known peak of this device kind, else None (e.g. CPU)."""
  if configured and configured > 0:
    return float(configured)
  kind = device_kind if device_kind is not None else jax.devices()[0].device_kind
  for name, peak in PEAK_FLOPS_BY_DEVICE_KIND:
    if name.lower() in kind.lower():
      return peak
  return None


def cost_flops(analysis: Any) -> float | None:
  """The `flops` entry of a `cost_analysis()` result (a dict, or a list of one in older JAX)."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  flops = float(analysis["flops"])
  return flops if flops > 0 else None


def drop_records_after(path: Any, step: int) -> int:
  """Rewrites the JSON-lines file `path` without the records of steps after `step` (and without a line
  a crash cut short); returns how many records were dropped.

  A resumed run restarts at its checkpoint's step and logs the later steps again: without this,
  `metrics.jsonl` would hold those steps twice.
  """
  path = epath.Path(path)
  if not path.exists():
    return 0
  kept, dropped = [], 0
  for line in path.read_text().splitlines(keepends=True):
    try:
      record = json.loads(line) if line.endswith("\n") else None
    except json.JSONDecodeError:
      record = None
    if record is not None and record.get("step", 0) <= step:
      kept.append(line)
    else:
      dropped += 1
  if dropped:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)
  return dropped


class MetricsReporter:
  """Writes one record of scalars per logged step to every sink; silent on other processes.

  `start_step` is the step the run starts from: records of later steps, left by a run that was killed
  after logging them but before checkpointing them, are dropped, so each step is recorded once.
  """

  def __init__(self, workdir: Any, start_step: int = 0):
    self.is_lead = jax.process_index() == 0
    self.path = Workdir(workdir).metrics_path
    if self.is_lead:
      dropped = drop_records_after(self.path, start_step)
      if dropped:
        logging.info("Dropped %d records after step %d from %s: those steps run again.", dropped,
                     start_step, self.path)
    self.writer = metric_writers.create_default_writer(
        os.fspath(Workdir(workdir).tensorboard_dir), just_logging=not self.is_lead,
        asynchronous=False
    )

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    if not self.is_lead:
      return
    self.writer.write_scalars(step, scalars)
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()
    if self.is_lead:
      logging.flush()


class Throughput:
  """Steps/s, examples/s, ETA and (when FLOPs and a peak are known) TFLOP/s per device and MFU.

  Attributes:
    examples_per_step: the global batch size.
    num_steps: the step the run ends at, for the ETA.
    flops_per_device_step: FLOPs one device executes per step (XLA's count), or None.
    peak_flops: peak FLOP/s of one device, or None.
  """

  def __init__(self, examples_per_step: int, num_steps: int, flops_per_device_step: float | None,
               peak_flops: float | None, start_step: int):
    self.examples_per_step = examples_per_step
    self.num_steps = num_steps
    self.flops_per_device_step = flops_per_device_step
    self.peak_flops = peak_flops
    self.reset(start_step)

  def reset(self, step: int) -> None:
    """Starts timing at `step` (after compilation, so it is not counted)."""
    self.last_time, self.last_step = time.perf_counter(), step

  def measure(self, step: int) -> dict[str, float]:
    """Rates over the steps since the last call; the caller has blocked on step `step`'s results."""
    now = time.perf_counter()
    steps_per_sec = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_time, self.last_step = now, step
    out = {
        "steps_per_sec": steps_per_sec,
        "examples_per_sec": steps_per_sec * self.examples_per_step,
        "eta_seconds": (self.num_steps - step) / max(steps_per_sec, 1e-9),
    }
    if self.flops_per_device_step:
      achieved = self.flops_per_device_step * steps_per_sec
      out["tflops_per_sec_per_device"] = achieved / 1e12
      if self.peak_flops:
        out["mfu"] = achieved / self.peak_flops
    return out
