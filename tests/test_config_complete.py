"""A saved config read back takes today's defaults for the fields it lacks, in one place."""

import json
import os
import types

import jax
import numpy as np
import pytest

from configs.finetune import retrieval
from configs.pretrain import co_attention
from vlfusion import configuration


def _saved(module=co_attention, arg="tiny", drop=(), **values):
  """config.json's dict of `module`'s config, with `values` ({"eval.batch_size": 16}) set and the dotted
  fields of `drop` deleted, as a config written before they existed would read."""
  saved = json.loads(configuration.to_json(module.get_config(arg)))
  for dotted, value in values.items():
    *parents, leaf = dotted.split(".")
    node = saved
    for p in parents:
      node = node[p]
    node[leaf] = value
  for dotted in drop:
    *parents, leaf = dotted.split(".")
    node = saved
    for p in parents:
      node = node[p]
    del node[leaf]
  return saved


def test_missing_fields_take_today_s_defaults_and_saved_values_stay():
  saved = _saved(drop=("eval.retrieval_rerank_k", "train.profile_steps", "model.image.stem"),
                 **{"eval.batch_size": 16, "train.seed": 7, "model.image.embedding": "lxmert"})
  saved["evals"] = {"held": {"data": {"split": "test"}, "tasks": ["itm"]}}
  saved["train"]["retired_field"] = 3  # a field since removed stays as it was saved.
  config = configuration.complete(saved)
  base = configuration.base_config()
  assert config.eval.retrieval_rerank_k == base.eval.retrieval_rerank_k
  assert config.train.profile_steps == base.train.profile_steps and config.model.image.stem == "linear"
  assert (config.eval.batch_size, config.train.seed, config.model.image.embedding) == (16, 7, "lxmert")
  assert config.evals.held.data.split == "test" and list(config.evals.held.tasks) == ["itm"]
  assert config.train.retired_field == 3
  assert "retrieval_rerank_k" not in saved["eval"]  # the saved dict is not changed.


def test_a_complete_config_reads_back_as_it_was_saved():
  config = co_attention.get_config("tiny")
  again = configuration.complete(json.loads(configuration.to_json(config)))
  assert configuration.to_json(again) == configuration.to_json(config)
  assert configuration.digest(again) == configuration.digest(config)
  assert configuration.complete(config).to_dict() == again.to_dict()


def _write(workdir, saved):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(saved, f)


def test_eval_reads_a_saved_config_with_today_s_defaults(tmp_path):
  from vlfusion import experiment

  _write(str(tmp_path), _saved(drop=("train.best_mode", "data.prefetch_batches")))
  config = experiment.saved_config(str(tmp_path))
  assert config.train.best_mode == "max" and config.data.prefetch_batches == 2


def test_a_resume_compares_the_saved_config_completed(tmp_path):
  from vlfusion.training import workdir as workdir_lib

  config = co_attention.get_config("tiny")
  _write(str(tmp_path), _saved(drop=("train.profile_steps",)))
  saved = workdir_lib.prepare(str(tmp_path), config, write=False)  # no IncompatibleWorkdirError.
  assert saved["train"]["profile_steps"] == 0


def test_a_sweep_workdir_saved_before_a_field_existed_is_the_same_config(tmp_path):
  from vlfusion.analysis import sweep

  run = types.SimpleNamespace(workdir=str(tmp_path), label="pre/s0",
                              config=lambda: co_attention.get_config("tiny"))
  _write(str(tmp_path), _saved(drop=("optimizer.schedule_steps",)))
  sweep.check_workdir_config(run)
  _write(str(tmp_path), _saved(**{"optimizer.schedule_steps": 9}))
  with pytest.raises(sweep.SweepError, match="optimizer.schedule_steps"):
    sweep.check_workdir_config(run)


def test_retrieval_re_ranks_the_base_config_s_top_k_for_a_saved_config_without_it(tmp_path):
  """The re-ranking depth has one default, base_config's, also for a run saved before the field."""
  from vlfusion import experiment
  from vlfusion.evaluation.predictor import Predictor
  from vlfusion.evaluation.retrieval import RetrievalEvaluator

  _write(str(tmp_path), _saved(retrieval, drop=("eval.retrieval_rerank_k",),
                               **{"eval.tasks": ["retrieval"]}))
  config = experiment.saved_config(str(tmp_path))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  evaluator = RetrievalEvaluator(Predictor.of_model(None, mesh), config, source=None)
  assert evaluator.rerank_k == configuration.base_config().eval.retrieval_rerank_k == 16


_PRETRAIN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "pretrain")


@pytest.mark.parametrize("name", sorted(
    f[:-3] for f in os.listdir(_PRETRAIN) if f.endswith(".py") and not f.startswith("_")))
def test_a_run_s_evaluator_key_is_the_same_saved_and_read_back(name):
  """eval.py reads a run's config.json completed with today's defaults; its results must be keyed as the
  run's own (eval/step_<N>.json), whatever fields the config file leaves to the defaults."""
  import importlib

  module = importlib.import_module(f"configs.pretrain.{name}")
  config = module.get_config("tiny")
  saved = json.loads(configuration.to_json(config))
  digest = configuration.evaluator_digest(saved)
  assert configuration.evaluator_digest(configuration.complete(saved)) == digest
  assert configuration.evaluator_digest(config) == digest
  # A config written before a field existed keys its results as one written after.
  older = _saved(module, drop=("model.image.stem",))
  completed = configuration.complete(older)
  assert configuration.evaluator_digest(older) == configuration.evaluator_digest(completed)
