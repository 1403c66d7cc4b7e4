"""`rundir.Workdir`: one object knows the run directory's layout, and the sweep, its report, the curves and
the attention maps read a workdir through it, on local disk and on a `gs://` bucket alike."""

import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from tests.reliability.test_cloud_workdir import fake_gcs  # noqa: F401 - a fixture.
from vlfusion import configuration
from vlfusion.analysis import curves, report, sweep
from vlfusion.rundir import COMMIT_MARKER, Workdir, config_differences

BUCKET = "gs://bucket/runs/r"


def _write_run(root: epath.Path, with_state: bool = False) -> dict:
  """A run directory as training and evaluation leave it: a config saved before `train.seed` existed,
  checkpoints 2 (complete) and 4 (torn), the own result of step 2 and another evaluator's, and a
  metrics.jsonl whose last line a crash cut short. Returns the saved config."""
  saved = json.loads(configuration.to_json(configuration.base_config()))
  saved["train"]["num_steps"] = 2
  del saved["train"]["seed"]  # a field added after the run: read back with today's default.
  root.mkdir(parents=True, exist_ok=True)
  (root / "config.json").write_text(json.dumps(saved))
  complete = root / "checkpoints" / "2"
  for item in ("state", "data"):
    (complete / item).mkdir(parents=True, exist_ok=True)
  (complete / COMMIT_MARKER).write_text("ok")
  (root / "checkpoints" / "4" / "state").mkdir(parents=True)  # no commit marker: torn.
  own = {"step": 2, "evaluator_digest": configuration.evaluator_digest(saved), "default": {}}
  (root / "eval").mkdir()
  (root / "eval" / "step_2.json").write_text(json.dumps(own))
  (root / "eval" / "0123456789abcdef").mkdir()
  (root / "eval" / "0123456789abcdef" / "step_2.json").write_text(json.dumps({"step": 2, "other": 1}))
  (root / "metrics.jsonl").write_text(
      '{"step": 1, "loss": 2.0, "examples_per_sec": 10.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  return saved


def _check_reads(run: Workdir, saved: dict) -> None:
  config = run.read_config()
  assert config.train.num_steps == 2
  assert config.train.seed == configuration.base_config().train.seed  # completed with today's default.
  assert run.read_raw_config() == saved
  assert run.complete_steps() == [2]
  assert set(run.incomplete_checkpoints()) == {"4"}
  assert run.checkpoint() == run.path / "checkpoints" / "2"
  assert list(run.eval_results()) == [2] and run.eval_results()[2]["evaluator_digest"]
  assert run.read_eval_result(2) == run.eval_results()[2]
  other = "0123456789abcdef" + "0" * 48
  assert run.eval_result_path(2, other) == run.path / "eval" / "0123456789abcdef" / "step_2.json"
  assert run.read_eval_result(2, other) == {"step": 2, "other": 1}
  assert [r["step"] for r in run.read_metrics()] == [1, 2]


def test_workdir_reads_a_local_run(tmp_path):
  saved = _write_run(epath.Path(tmp_path / "run"))
  run = Workdir(str(tmp_path / "run"))
  assert run.path == epath.Path(tmp_path / "run") and os.fspath(run) == str(tmp_path / "run")
  _check_reads(run, saved)
  with pytest.raises(configuration.ConfigError, match="no complete checkpoint of step 4"):
    run.checkpoint(4)


def test_workdir_of_nothing_reads_nothing_and_creates_nothing(tmp_path):
  run = Workdir(tmp_path / "absent")
  assert run.read_config() is None and run.complete_steps() == [] and run.eval_results() == {}
  assert run.read_metrics() == []
  with pytest.raises(configuration.ConfigError, match="no complete checkpoint"):
    run.checkpoint()
  assert not (tmp_path / "absent").exists()


def test_workdir_reads_a_gs_run(fake_gcs):  # noqa: F811 - the fixture.
  saved = _write_run(epath.Path(BUCKET))
  assert (fake_gcs / "bucket" / "runs" / "r" / "config.json").is_file()
  run = Workdir(BUCKET)
  assert os.fspath(run.path).startswith("gs://")
  _check_reads(run, saved)


def test_sweep_report_and_curves_read_a_gs_run_through_it(fake_gcs):  # noqa: F811 - the fixture.
  saved = _write_run(epath.Path(BUCKET))
  assert sweep.final_step(BUCKET) == 2
  assert sweep.stage_complete(BUCKET, evaluate=True)
  assert list(report.eval_results(BUCKET)) == [2]
  assert report.training_scalars(BUCKET) == {"examples/s": 10.0}
  assert curves.read_metric(BUCKET, "loss") == [(1, 2.0), (2, 1.5)]
  # The run's own result replaced by another evaluator config's: the stage is not complete.
  other = dict(Workdir(BUCKET).eval_results()[2], evaluator_digest="f" * 64)
  Workdir(BUCKET).eval_result_path(2).write_text(json.dumps(other))
  assert not sweep.stage_complete(BUCKET, evaluate=True)
  assert sweep.stage_complete(BUCKET, evaluate=False)
  assert saved["train"]["num_steps"] == 2


def test_restore_params_reads_the_parameters_of_a_step(tmp_path):
  run = Workdir(tmp_path / "run")
  _write_run(run.path)
  params = {"encoder": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "bias": np.ones(2)}
  state_dir = run.step_dir(2) / "state"
  state_dir.rmdir()
  ocp.PyTreeCheckpointer().save(os.fspath(state_dir), {"params": params, "opt_state": {"mu": np.zeros(3)}})
  restored = run.restore_params()
  assert set(restored) == {("encoder", "kernel"), ("bias",)}
  np.testing.assert_array_equal(restored[("encoder", "kernel")], params["encoder"]["kernel"])
  np.testing.assert_array_equal(restored[("bias",)], params["bias"])


def test_config_differences_is_the_one_comparison_of_saved_and_given_configs():
  saved = {"model": {"fusion": "co_attention", "vqa": {"num_answers": 13}}, "eval": {"tasks": ["itm"]}}
  given = {"model": {"fusion": "one_way", "vqa": {"num_answers": 0}}, "eval": {"tasks": ("itm",)}}
  assert config_differences(saved, given) == {"model.fusion": ("co_attention", "one_way"),
                                              "model.vqa.num_answers": (13, 0)}
  # The sweep's rule on top: a field the run resolves when it starts matches any value.
  assert sweep.differing_fields(saved, given) == ["model.fusion"]
