"""A changed setting or a torn step never costs a run its checkpoints, its history or its saved config."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion import experiment
from vlfusion.training import checkpointing, trainer, window

STEPS = {"train.num_steps": 6, "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
         "train.keep_checkpoints": 10}


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lost") / "run")
  experiment.train_and_evaluate(tiny_config(co_attention, data_dir, **STEPS), workdir)
  return workdir


def _copy(run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(run, workdir)
  return workdir


def _snapshot(workdir):
  ckpts = os.path.join(workdir, "checkpoints")
  with open(os.path.join(workdir, "metrics.jsonl")) as f, open(os.path.join(workdir, "config.json")) as g:
    return sorted(os.listdir(ckpts)), f.read(), g.read()


def test_resuming_with_a_changed_optimizer_stops_and_changes_nothing(run, data_dir, tmp_path):
  workdir = _copy(run, tmp_path)
  before = _snapshot(workdir)
  config = tiny_config(co_attention, data_dir, **{**STEPS, "train.num_steps": 8,
                                                  "optimizer.grad_clip_norm": 0.0})
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r"checkpoints/6 holds a train state of another structure .*grad_clip_norm.*"
                           r"/opt_state: checkpoint 2 entries, config 1 entries.*Nothing was changed"):
    experiment.train_and_evaluate(config, workdir, allow_config_change=True)
  # Every checkpoint, every logged step and the saved config are as they were.
  assert _snapshot(workdir) == before
  assert json.loads(before[2])["optimizer"]["grad_clip_norm"] == 1.0


def _no_marker(step_dir):
  os.remove(os.path.join(step_dir, checkpointing.COMMIT_MARKER))


def _no_state(step_dir):
  shutil.rmtree(os.path.join(step_dir, "state"))


def _unreadable_metadata(step_dir):
  with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
    f.write("{not json")


@pytest.mark.parametrize("tear", [_no_marker, _no_state, _unreadable_metadata])
def test_a_torn_latest_step_is_moved_aside_and_saved_again(run, data_dir, tmp_path, caplog, tear):
  workdir = _copy(run, tmp_path)
  ckpts = os.path.join(workdir, "checkpoints")
  tear(os.path.join(ckpts, "6"))
  config = tiny_config(co_attention, data_dir, **{**STEPS, "train.num_steps": 8})
  with caplog.at_level("WARNING"):
    experiment.train_and_evaluate(config, workdir)  # used to fail with StepAlreadyExistsError at step 6.
  aside = [n for n in os.listdir(ckpts) if n.startswith("6.torn-")]
  assert len(aside) == 1, os.listdir(ckpts)
  assert f"Moved checkpoint {ckpts}/6 aside to {aside[0]}" in caplog.text
  assert sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) == [2, 4, 6, 8]
  assert not checkpointing.incomplete_checkpoints(ckpts) or all(
      ".torn-" in n for n in checkpointing.incomplete_checkpoints(ckpts))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, 9))


def _flip_bytes(step_dir, count=64, every_large_file=False):
  """Flips `count` bytes in the middle of the largest data file of the step's state (silent damage), or
  of every data file over 64 KiB."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
           if d.endswith(os.sep + "d")]
  paths = ([p for p in files if os.path.getsize(p) > 65536] if every_large_file
           else [max(files, key=os.path.getsize)])
  for path in paths:
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      chunk = bytearray(f.read(count))
      f.seek(os.path.getsize(path) // 2)
      f.write(bytes(b ^ 0xFF for b in chunk))


def test_flipped_bytes_in_a_checkpoint_are_detected_and_the_run_goes_back_a_step(run, data_dir, tmp_path,
                                                                                  caplog):
  workdir = _copy(run, tmp_path)
  ckpts = os.path.join(workdir, "checkpoints")
  _flip_bytes(os.path.join(ckpts, "6"))
  config = tiny_config(co_attention, data_dir, **{**STEPS, "train.num_steps": 8})
  with caplog.at_level("WARNING"):
    experiment.train_and_evaluate(config, workdir)
  assert any(n.startswith("6.torn-") for n in os.listdir(ckpts))
  assert re.search(r"checkpoints/6 is damaged: 1 of its arrays differ from the checksums saved with it "
                   r"\(\['(params|opt_state)'\]", caplog.text), caplog.text
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # resumed from step 4: 5 and 6 ran again.
    assert [json.loads(line)["step"] for line in f] == list(range(1, 9))
  assert sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) == [2, 4, 6, 8]


def test_evaluation_names_a_damaged_or_unreadable_checkpoint(run, data_dir, tmp_path):
  workdir = _copy(run, tmp_path)
  ckpts = os.path.join(workdir, "checkpoints")
  _flip_bytes(os.path.join(ckpts, "6"), every_large_file=True)
  _unreadable_metadata(os.path.join(ckpts, "4"))
  setup = trainer.Setup(tiny_config(co_attention, data_dir, **STEPS))
  with pytest.raises(OSError, match=r"checkpoints/6 (is damaged|cannot be read)"):
    experiment.restore_params(workdir, setup, 6)
  with pytest.raises(OSError, match=r"checkpoints/4 cannot be read: its state metadata "
                                    r"\(.*checkpoints/4/state/_METADATA\) is damaged"):
    experiment.restore_params(workdir, setup, 4)
  params, step = experiment.restore_params(workdir, setup, 2)
  assert step == 2


def test_watching_beside_training_skips_a_step_rotated_out(run, data_dir, tmp_path, monkeypatch, caplog):
  workdir = _copy(run, tmp_path)
  config = tiny_config(co_attention, data_dir, **{**STEPS, "eval.tasks": ("itm",), "eval.batch_size": 64})
  job = experiment.CheckpointEvaluator(config, workdir)
  evaluate = job.evaluate

  def rotate_then_evaluate(step=None):  # training deletes step 2 between the listing and the restore.
    if step == 2:
      shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
    return evaluate(step)

  monkeypatch.setattr(job, "evaluate", rotate_then_evaluate)
  with caplog.at_level("WARNING"):
    results = job.watch(poll_seconds=0.1, timeout_seconds=600)
  assert [r["step"] for r in results] == [4, 6]
  assert "Step 2 was removed (rotated out by the training run)" in caplog.text


class _Manager:
  def all_steps(self):
    return [10]


def _window(pattern, start=11):
  """A window read after steps `start`.. whose non-finite ones are the 1s of `pattern`."""
  w = window.empty(("loss", "nonfinite"))
  for i, bad in enumerate(pattern):
    w = window.add(w, {"loss": np.float32(1.0), "nonfinite": np.float32(bad)}, start + i)
  return window.read(w)


def test_mostly_nonfinite_steps_stop_the_run_before_a_save_even_without_five_in_a_row():
  train = tiny_config(co_attention, "unused").train  # skip policy, 5 in a row, fraction 0.5.
  since_save = trainer.NonfiniteSinceSave()
  pattern = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1]  # never more than 2 in a row; 6 of the first 8 skipped.
  with pytest.raises(trainer.NonFiniteError, match=r"6 of the 8 steps since the last checkpoint were "
                                                   r"non-finite .*max_nonfinite_fraction=0.5.*not saved"):
    for i in range(0, 10, 2):  # read every 2 steps (log_every_steps=2): each window alone passes.
      trainer.apply_nonfinite_policy(_window(pattern[i:i + 2], 11 + i), 11 + i + 1, train, _Manager(),
                                     since_save=since_save)
  since_save = trainer.NonfiniteSinceSave()  # 2 of 10: a few bad batches are skipped and training goes on.
  trainer.apply_nonfinite_policy(_window([1, 1]), 12, train, _Manager(), since_save=since_save)  # 2 of 2.
  since_save.reset()
  trainer.apply_nonfinite_policy(_window([0, 1, 0, 0, 0, 1, 0, 0, 0, 0]), 20, train, _Manager(),
                                 since_save=since_save)
  since_save.reset()
  trainer.apply_nonfinite_policy(_window([1]), 21, train, _Manager(), since_save=since_save)  # 1 of 1.


def test_a_truncated_data_file_is_moved_aside_and_the_run_goes_back_a_step(run, data_dir, tmp_path, caplog):
  # orbax raises a bare Exception (wrapping tensorstore's OUT_OF_RANGE) for a data file cut short; it used
  # to escape the fallback and stop the run at every restart.
  workdir = _copy(run, tmp_path)
  ckpts = os.path.join(workdir, "checkpoints")
  state = os.path.join(ckpts, "6", "state")
  files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs if d.endswith(os.sep + "d")]
  largest = max(files, key=os.path.getsize)
  os.truncate(largest, os.path.getsize(largest) // 2)
  config = tiny_config(co_attention, data_dir, **{**STEPS, "train.num_steps": 8})
  with caplog.at_level("WARNING"):
    experiment.train_and_evaluate(config, workdir)
  assert re.search(rf"Moved checkpoint {ckpts}/6 aside to 6\.torn-\S+ \(it could not be read", caplog.text)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # resumed from step 4: 5 and 6 ran again.
    assert [json.loads(line)["step"] for line in f] == list(range(1, 9))
  assert sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) == [2, 4, 6, 8]
