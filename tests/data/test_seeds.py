"""One seed varies everything: `data.seed` follows `train.seed` unless set on its own."""

import json

import numpy as np
import pytest

from configs.pretrain import single_stream
from tests.conftest import tiny_config
from vlfusion import configuration
from vlfusion.analysis import sweep as sweep_lib
from vlfusion.data import pipeline
from vlfusion.training import workdir as workdir_lib


def _batch(config, step=0):
  return pipeline.make_batch_source(config, config.data.train_split).get_batch(step)


def _same(a, b):
  return a.keys() == b.keys() and all(
      _same(a[k], b[k]) if isinstance(a[k], dict) else np.array_equal(a[k], b[k]) for k in a)


def test_two_train_seeds_train_on_different_batches_and_negatives(data_dir):
  a = _batch(tiny_config(single_stream, data_dir, **{"train.seed": 0}))
  b = _batch(tiny_config(single_stream, data_dir, **{"train.seed": 1}))
  assert not np.array_equal(a["regions"]["features"], b["regions"]["features"])  # other examples.
  assert not np.array_equal(a["itm_labels"], b["itm_labels"])  # other ITM negatives.
  assert not np.array_equal(a["mlm_weights"], b["mlm_weights"])  # other masks.


def test_an_explicit_data_seed_pins_the_data_whatever_the_train_seed(data_dir):
  pinned = [_batch(tiny_config(single_stream, data_dir, **{"train.seed": s, "data.seed": 5})) for s in (0, 1)]
  assert _same(*pinned)
  # Unset, data.seed is train.seed: train.seed 5 reads what data.seed 5 pins.
  assert _same(pinned[0], _batch(tiny_config(single_stream, data_dir, **{"train.seed": 5})))


def test_evaluation_examples_are_the_same_for_every_train_seed(data_dir):
  """Seeds of a sweep are scored on the same examples (the same questions, negatives), so their spread is
  the runs', not the evaluation sets'."""
  first, second = (next(pipeline.make_batch_source(tiny_config(single_stream, data_dir, **{"train.seed": s}),
                                                   "validation").eval_batches(16)) for s in (0, 3))
  assert _same(first, second)


def test_the_sweep_seed_axis_gives_different_step_0_batches(data_dir, tmp_path):
  sweep = sweep_lib.load_sweep("configs/sweeps/fusion_ablation.py")
  by_name = {v.name: v for v in sweep_lib.variants(sweep)}
  pretrain = sweep.stages[0]
  batches = []
  for name in ("co_lxmert-s0", "co_lxmert-s1"):
    overrides = sweep_lib.stage_overrides(pretrain, by_name[name], str(tmp_path))
    config = sweep_lib.build_config(pretrain.config, {**overrides, "data.data_dir": data_dir})
    configuration.validate(config)
    batches.append(_batch(config))
  assert not np.array_equal(batches[0]["image"], batches[1]["image"])
  assert not np.array_equal(batches[0]["text_ids"], batches[1]["text_ids"])


def test_a_run_saved_before_data_seed_followed_train_seed_still_resumes(tmp_path):
  config = tiny_config(single_stream, str(tmp_path / "tfds"))
  assert config.data.seed is None and configuration.data_seed(config) == config.train.seed == 0
  saved = json.loads(configuration.to_json(config))
  saved["data"]["seed"] = 0  # what every config.json held before: data.seed 0 written out.
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
  workdir_lib.prepare(str(tmp_path / "run"), config)  # the same data: resumes.
  # A saved run with train.seed 1 read data.seed 0; today's default would read seed 1: refused, named.
  saved["train"]["seed"] = 1
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
  config.train.seed = 1
  with pytest.raises(workdir_lib.IncompatibleWorkdirError, match=r"config.data.seed: saved 0, given 1"):
    workdir_lib.prepare(str(tmp_path / "run"), config)
  config.data.seed = 0  # the fix the message points at.
  workdir_lib.prepare(str(tmp_path / "run"), config)


def test_data_seed_is_checked(tmp_path):
  config = tiny_config(single_stream, str(tmp_path), **{"data.seed": -2})
  with pytest.raises(configuration.ConfigError, match=r"config.data.seed=-2"):
    configuration.validate(config)
