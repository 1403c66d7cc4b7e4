"""Fine-tuning cadences (checkpoints, logs, evaluations) follow the run length the command line gives."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs.finetune import pairs, retrieval, vqa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(*argv):
  """The config as train.py's flags read `--config=<argv[0]> argv[1:]`."""
  argv = ["train.py", f"--config={os.path.join(ROOT, argv[0])}", *argv[1:]]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


@pytest.mark.parametrize("module, points", [(vqa, 10), (retrieval, 4), (pairs, 4)])
def test_cadences_follow_a_num_steps_override(module, points):
  name = os.path.basename(module.__file__)
  config = _parse(f"configs/finetune/{name}:tiny", "--config.train.num_steps=100")
  t = config.train
  assert t.num_steps == 100
  assert (t.checkpoint_every_steps, t.log_every_steps, config.eval.every_steps) == (25, 3, 100 // points)
  written = config.to_dict()  # what config.json records: plain numbers.
  assert written["eval"]["every_steps"] == 100 // points and written["train"]["checkpoint_every_steps"] == 25


def test_an_explicit_cadence_wins_over_the_derived_one():
  config = _parse("configs/finetune/pairs.py:tiny", "--config.eval.every_steps=7",
                  "--config.train.num_steps=100")
  assert config.eval.every_steps == 7 and config.train.checkpoint_every_steps == 25
  config = _parse("configs/finetune/pairs.py:tiny", "--config.train.num_steps=100",
                  "--config.train.log_every_steps=1")
  assert config.train.log_every_steps == 1 and config.eval.every_steps == 25


def test_the_file_s_own_length_sets_the_cadences():
  config = vqa.get_config("tiny")
  assert config.train.num_steps == 5000 and config.eval.every_steps == 500
  assert config.train.checkpoint_every_steps == 1250 and config.train.log_every_steps == 125
