"""Every configs/pretrain/*.py `tiny` trains a few steps through the real trainer path (synthetic batch)."""

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.model_fixtures import add_targets, random_batch, random_params
from vlfusion import partitioning
from vlfusion.training import train_state, trainer

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "pretrain")
NAMES = sorted(os.path.splitext(f)[0] for f in os.listdir(CONFIG_DIR) if f.endswith(".py")
               and not f.startswith("_"))
BATCH = 8  # one row per simulated device.
# The CPU backend's cheapest code generation: the same jitted step and shardings, compiled faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def synthetic_batch(config):
  """A batch with the shapes and targets the data pipeline would give `config` (padded rows included)."""
  m = config.model
  lt = config.data.max_text_len
  valid_text = np.linspace(3, lt, BATCH).astype(int)
  valid_regions = np.linspace(1, m.image.num_regions, BATCH).astype(int)
  batch = random_batch(config, BATCH, lt, m.image.num_regions, valid_text, valid_regions)
  batch = add_targets(config, batch)
  batch["example_mask"][-1] = False  # an eval-style padded row.
  keep = {"text_ids", "text_mask", "regions", "image", "example_mask"}
  active = {n for n, w in config.objectives.items() if w > 0}
  prefixes = {"mlm": ("mlm_",), "itm": ("itm_",), "itc": ("itm_",), "mrm": ("mrm_",),
              "vqa": ("vqa_",), "pairs": ("pair_",)}
  for name in active:
    keep |= {k for k in batch if k.startswith(prefixes[name])}
  return {k: v for k, v in batch.items() if k in keep}


def test_every_config_file_is_covered():
  assert {"vilbert", "lxmert", "visualbert", "uniter", "vilt", "meter_co", "meter_merged", "albef",
          "dual_encoder"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_config_trains(name):
  config = importlib.import_module(f"configs.pretrain.{name}").get_config("tiny")
  config.unlock()
  config.data.global_batch_size = BATCH
  config.model.dropout = 0.0
  config.optimizer.warmup_steps = 0
  config.optimizer.learning_rate = 3e-3
  # Also runs every family's scanned, rematerialised stacks through the trainer.
  config.model.scan_layers = True
  config.model.remat_policy = "full"
  setup = trainer.Setup(config)
  # BERT-initialised parameters from numpy and Setup's optimizer state, placed in Setup's shardings:
  # the random init would cost a compile (or seconds of eager ops) per config; the step is the test.
  params = random_params(setup.model, train_state.example_batch(config), bert_like=True)
  state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=setup.optimizer.init(params), rng=jax.random.PRNGKey(0))
  state = jax.device_put(state, setup.state_shardings)
  with jax.set_mesh(setup.mesh):
    batch = partitioning.to_global_batch(synthetic_batch(config), setup.mesh)
    step = setup.jit_train_step().lower(state, batch).compile(compiler_options=FAST_COMPILE)
    losses = []
    for _ in range(3):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert float(metrics["nonfinite"]) == 0.0
  for objective, weight in config.objectives.items():
    if weight > 0:
      assert np.isfinite(float(metrics[f"{objective}_loss"]))
  assert losses[-1] < losses[0], losses  # the same batch three times: the loss must fall.
