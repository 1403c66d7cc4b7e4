"""What a run reports: peak FLOP/s by device kind, FLOPs per step from XLA's cost analysis (corrected for
gradient accumulation and scanned layers), throughput/ETA/MFU arithmetic, TensorBoard events from process 0,
metrics.jsonl after a resume, and quiet library logs."""

import glob
import json
import os

import jax
import pytest

from tests.scaling.common import FAST_COMPILE, initial_state, small_config, synthetic_batch
from vlfusion import partitioning
from vlfusion.training import reporting, trainer


@pytest.mark.parametrize("kind,peak", [("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12),
                                       ("NVIDIA H100 80GB HBM3", 989e12),
                                       ("NVIDIA A100-SXM4-40GB", 312e12), ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert reporting.peak_flops_per_device(0.0, kind) == peak
  assert reporting.peak_flops_per_device(5e12, kind) == 5e12  # the config wins.


def test_throughput_eta_and_mfu():
  meter = reporting.Throughput(examples_per_step=32, num_steps=100, flops_per_device_step=2e9,
                               peak_flops=1e11, start_step=0)
  meter.last_time -= 10.0  # 20 steps in 10 s.
  out = meter.measure(20)
  assert out["steps_per_sec"] == pytest.approx(2.0, rel=1e-3)
  assert out["examples_per_sec"] == pytest.approx(64.0, rel=1e-3)
  assert out["eta_seconds"] == pytest.approx(40.0, rel=1e-3)
  assert out["tflops_per_sec_per_device"] == pytest.approx(4e-3, rel=1e-3)
  assert out["mfu"] == pytest.approx(0.04, rel=1e-3)
  no_peak = reporting.Throughput(32, 100, 2e9, None, 0).measure(1)
  assert "mfu" not in no_peak and "tflops_per_sec_per_device" in no_peak


def _step_flops(config):
  setup = trainer.Setup(config, devices=jax.devices()[:2])
  with jax.set_mesh(setup.mesh):
    batch = partitioning.to_global_batch(synthetic_batch(config, 0), setup.mesh)
    compiled = None
    if config.optimizer.grad_accum_steps == 1:  # otherwise the count does not use the compiled step.
      compiled = setup.jit_train_step().lower(initial_state(setup), batch).compile(
          compiler_options=FAST_COMPILE)
    return setup.flops_per_device_step(compiled, batch)


def test_flops_per_step_count_every_micro_batch():
  """XLA counts a scan body once; the reported FLOPs of an accumulated step are those of the whole batch."""
  config = small_config("single_stream", **{"mesh.data": 2})
  plain = _step_flops(config)
  config.optimizer.grad_accum_steps = 4
  accumulated = _step_flops(config)
  # A forward + backward over 16 rows of 24 + 8 tokens through ~30k matmul weights is ~1e8 FLOPs.
  print(f"FLOPs per device per step: {plain:.4g} (compiled), {accumulated:.4g} (grad_accum_steps=4)")
  assert 2e7 < plain < 1e9, plain
  assert accumulated == pytest.approx(plain, rel=0.15), (plain, accumulated)


def test_flops_per_step_count_every_scanned_layer():
  """With scanned layer stacks the count is the unrolled model's, not one layer per stack."""
  config = small_config("single_stream", **{"mesh.data": 2, "model.fusion_layers": 4})
  unrolled = _step_flops(config)
  config.model.scan_layers = True
  scanned = _step_flops(config)
  print(f"FLOPs per device per step: {unrolled:.4g} (unrolled), {scanned:.4g} (scan_layers)")
  assert scanned == pytest.approx(unrolled, rel=0.15), (unrolled, scanned)  # as for accumulation.


def test_metrics_reach_tensorboard_from_process_zero(tmp_path):
  reporter = reporting.MetricsReporter(str(tmp_path))
  reporter.write(3, {"loss": 1.5, "mfu": 0.25})
  reporter.close()
  events = glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  assert len(events) == 1
  import tensorflow as tf

  tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value}
  assert {"loss", "mfu"} <= tags


def test_resumed_reporter_drops_records_after_the_checkpoint(tmp_path):
  """A run killed after logging steps 3-4 but checkpointing step 2 logs 3-4 again: each once in the end."""
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(f'{{"step": {s}, "loss": {s}.0}}\n' for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
  reporter = reporting.MetricsReporter(str(tmp_path), start_step=2)
  for s in (3, 4, 5):
    reporter.write(s, {"loss": -s})
  reporter.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  assert [r["loss"] for r in records] == [1.0, 2.0, -3.0, -4.0, -5.0]


def test_tfds_size_lines_are_quiet_unless_verbose(capsys, monkeypatch):
  import tensorflow_datasets as tfds

  from vlfusion import runtime

  class Info:
    download_size = dataset_size = tfds.core.units.Size(0)

  class Builder:
    name, data_dir, info = "shapes_world", "/data", Info()

  for name in ("_log_download_bytes", "_log_download_done"):  # restored after the test.
    monkeypatch.setattr(tfds.core.DatasetBuilder, name, getattr(tfds.core.DatasetBuilder, name))
  tfds.core.DatasetBuilder._log_download_bytes(Builder())
  assert "Downloading and preparing" in capsys.readouterr().out  # what tfds prints by default.
  for name in runtime.QUIET_ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)
  runtime.initialize(verbose=False)
  tfds.core.DatasetBuilder._log_download_bytes(Builder())
  assert capsys.readouterr().out == ""
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["TPU_MIN_LOG_LEVEL"] == "3"
