"""Torn checkpoints, non-finite steps and misuse: each fails clearly and loses nothing saved."""

import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs.pretrain import co_attention, single_stream
from tests.conftest import tiny_config
from vlfusion import experiment
from vlfusion.training import checkpointing, trainer
from vlfusion.training.workdir import IncompatibleWorkdirError

STEPS = {"train.num_steps": 6, "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
         "train.keep_checkpoints": 10}


def _restore(config, workdir, step=None):
  setup = trainer.Setup(config)
  manager = checkpointing.make_manager(workdir, config.train, read_only=True)
  try:
    return checkpointing.restore(manager, setup.abstract_state, step)
  finally:
    manager.close()


def _assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("faults"))
  config = tiny_config(co_attention, data_dir, **STEPS)
  experiment.train_and_evaluate(config, workdir)
  return config, workdir


def test_torn_checkpoints_are_skipped(run, tmp_path, caplog):
  config, source = run
  workdir = str(tmp_path / "copy")
  shutil.copytree(source, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  intact, _, _ = _restore(config, workdir, step=4)
  # Step 6 lost its commit marker (a crash mid-save); a temporary directory was left behind;
  # step 8 has a marker but its state is garbage.
  os.remove(os.path.join(ckpts, "6", checkpointing.COMMIT_MARKER))
  os.makedirs(os.path.join(ckpts, "7.orbax-checkpoint-tmp-123", "state"))
  shutil.copytree(os.path.join(ckpts, "4"), os.path.join(ckpts, "8"))
  shutil.rmtree(os.path.join(ckpts, "8", "state"))
  os.makedirs(os.path.join(ckpts, "8", "state"))
  with caplog.at_level("WARNING"):
    state, data_state, step = _restore(config, workdir)
  assert step == 4 and data_state["step"] == 4
  _assert_trees_equal(state.params, intact.params)
  log = caplog.text
  assert "checkpoints/6 is incomplete" in log
  assert "7.orbax-checkpoint-tmp-123 is incomplete" in log
  assert "Skipping checkpoint" in log and "/8" in log
  with pytest.raises(FileNotFoundError, match="cannot restore step 6"):
    _restore(config, workdir, step=6)


def test_restore_onto_another_mesh(run):
  """A checkpoint saved from a pure data-parallel mesh restores onto an FSDP x tensor mesh."""
  config, workdir = run
  saved, _, _ = _restore(config, workdir)
  other = tiny_config(co_attention, config.data.data_dir, **STEPS,
                      **{"mesh.fsdp": 2, "mesh.tensor": 2})
  state, data_state, step = _restore(other, workdir)
  assert step == 6 and data_state["step"] == 6
  _assert_trees_equal(state.params, saved.params)
  _assert_trees_equal(state.opt_state, saved.opt_state)
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
  assert any("tensor" in s for s in specs) and any("fsdp" in s for s in specs), specs


def test_eval_on_another_architecture_names_the_parameters(run):
  config, workdir = run
  other = tiny_config(single_stream, config.data.data_dir, **STEPS)
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    experiment.evaluate(other, workdir)
  message = str(info.value)
  assert "another architecture" in message
  assert "not in the checkpoint" in message and "encoder" in message
  assert "PyTreeDef" not in message and len(message) < 4000


def test_incompatible_workdir_config_is_refused_and_listed(run):
  config, workdir = run
  changed = tiny_config(co_attention, config.data.data_dir, **STEPS)
  changed.model.fusion_layers = 3
  changed.optimizer.learning_rate = 0.5
  with pytest.raises(IncompatibleWorkdirError) as info:
    experiment.train_and_evaluate(changed, workdir)
  message = str(info.value)
  assert "config.model.fusion_layers: saved 2, given 3" in message
  assert "config.optimizer.learning_rate" in message
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [2, 4, 6]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["fusion_layers"] == 2  # the saved config is untouched.


def test_unwritable_workdir_is_named(data_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  config = tiny_config(co_attention, data_dir, **STEPS)
  with pytest.raises(OSError, match="a_file.*not writable"):
    experiment.train_and_evaluate(config, str(blocker / "workdir"))


def test_full_disk_at_save_keeps_earlier_checkpoints(data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = tiny_config(co_attention, data_dir, **STEPS)
  real_save = checkpointing.ocp.CheckpointManager.save

  def save_until_full(self, step, *args, **kwargs):
    if step >= 4:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", save_until_full)
  with pytest.raises(OSError, match="step 4.*No space left.*intact"):
    experiment.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  _, _, step = _restore(config, workdir)
  assert step == 2


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_step_is_skipped_or_stops(data_dir, tmp_path, policy, caplog):
  workdir = str(tmp_path / policy)
  config = tiny_config(
      co_attention, data_dir,
      **dict(STEPS, **{"train.checkpoint_every_steps": 1, "train.inject_nan_at_step": 3,
                       "train.inject_nan_objective": "mlm", "train.nonfinite_policy": policy}))
  if policy == "stop":
    with pytest.raises(trainer.NonFiniteError, match="stopping at step 4: non-finite mlm"):
      experiment.train_and_evaluate(config, workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
    assert steps == [1, 2, 3]  # nothing saved at or after the bad step.
    return
  with caplog.at_level("WARNING"):
    experiment.train_and_evaluate(config, workdir)
  assert "step 4: non-finite mlm" in caplog.text
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = {r["step"]: r for r in map(json.loads, f)}
  assert records[4]["nonfinite"] == 1.0 and records[3]["nonfinite"] == 0.0
  assert records[5]["nonfinite"] == 0.0 and np.isfinite(records[5]["loss"])
  s3, s4, s5 = (_restore(config, workdir, step=k)[0] for k in (3, 4, 5))
  _assert_trees_equal(s3.params, s4.params)  # the bad update was skipped ...
  _assert_trees_equal(s3.opt_state, s4.opt_state)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(s4.params))
  assert not np.array_equal(  # ... and training went on after it.
      np.asarray(jax.tree.leaves(s4.params)[0]), np.asarray(jax.tree.leaves(s5.params)[0]))
