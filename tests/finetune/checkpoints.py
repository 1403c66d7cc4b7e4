"""Shared by the fine-tuning tests: a workdir holding one checkpoint of random parameters."""

import json
import os

import jax
import numpy as np

from vlfusion import configuration
from vlfusion.training import checkpointing
from vlfusion.training.train_state import TrainState
from vlfusion.training.trainer import Setup


def random_like(abstract, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)


def save_random_checkpoint(workdir, config, step=7, seed=0):
  """Writes `workdir/checkpoints/<step>` with random parameters (no compile) and `config.json`."""
  abstract = Setup(config).abstract_state
  zeros = lambda tree: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)
  state = TrainState(step=np.int32(step), params=random_like(abstract.params, seed),
                     opt_state=zeros(abstract.opt_state), rng=zeros(abstract.rng))
  config_dict = json.loads(configuration.to_json(config))
  manager = checkpointing.make_manager(workdir, config.train)
  checkpointing.save(manager, step, state, {"step": step}, config_dict)
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(configuration.to_json(config))
  return state.params
