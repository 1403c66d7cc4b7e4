"""A task registered here alone, in no other module, gets its head, rows, loss, validation and metrics."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pretrain import co_attention
from vlfusion import configuration, tasks
from vlfusion.data import compatibility, datasets
from vlfusion.data.rows import RowBuilder
from vlfusion.errors import ConfigError
from vlfusion.evaluation import batched, evaluators
from vlfusion.evaluation.predictor import Predictor
from vlfusion.models import build_model
from vlfusion.tasks import base
from vlfusion.training import losses


class ParityHead(nn.Module):
  """Dense(2) on the pooled output: is the number of objects odd?"""

  @nn.compact
  def __call__(self, pooled):
    return nn.Dense(2, name="classifier")(pooled).astype(jnp.float32)


def own_text(rows, record, rng, ex, step=None):
  ex["parity_labels"] = np.int32(int(record["num_objects"]) % 2)
  return "is the number of objects odd"


PARITY = base.Task(
    name="parity",
    head=lambda c, parts: ParityHead(),
    forward=lambda model, head, batch, fused: {"parity_logits": head(fused.pooled)},
    reads_pooled=True,
    objective=base.classification_loss("parity", "parity_logits", "parity_labels"),
    own_text=own_text,
    data_feature="num_objects",
    host_fields={"parity_count": lambda record: str(record["num_objects"])},
    output="parity_logits",
    image_bound=True,
    eval_counts=base.classification_counts("parity_logits", "parity_labels", ("even", "odd")),
    metrics=lambda groups: base.grouped_metrics(groups, {"label": "by_label"}),
)


@pytest.fixture
def parity():
  tasks.register(PARITY)
  yield PARITY
  del tasks.REGISTRY["parity"]


def _config():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.image.input = "patches"
  config.model.image.image_size = 16
  config.model.image.patch_size = 8
  config.model.heads = ("parity",)
  config.objectives = {**{n: 0.0 for n in config.objectives}, "parity": 1.0}
  config.eval.tasks = ("parity",)
  return config


def _batch(n=4):
  rng = np.random.default_rng(0)
  return {"text_ids": rng.integers(5, 60, (n, 6)).astype(np.int32), "text_mask": np.ones((n, 6), bool),
          "image": rng.random((n, 16, 16, 3)).astype(np.float32), "example_mask": np.ones(n, bool),
          "parity_labels": np.array([0, 1, 1, 0][:n], np.int32)}


def test_the_model_builds_its_head_and_gives_its_output(parity):
  model = build_model(_config().model)
  batch = _batch()
  params = model.init(jax.random.key(0), batch)["params"]
  assert set(params["heads_parity"]) == {"classifier"}
  assert model.apply({"params": params}, batch)["parity_logits"].shape == (4, 2)


def test_its_loss_is_trained_and_reported(parity):
  assert "parity" in losses.OBJECTIVES
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
  batch = _batch()
  total, metrics = losses.total_loss({"parity_logits": logits}, batch, {"parity": 1.0})
  expected = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), batch["parity_labels"]])
  assert float(total) == pytest.approx(float(expected))
  assert float(metrics["parity_accuracy"]) == 0.75  # rows 0, 1, 3 right; row 2 (odd) said even.


def test_its_rows_hold_its_text_and_labels(parity):
  config = _config()
  records = [{"image": np.full((16, 16, 3), 10 * i, np.uint8), "num_objects": i} for i in range(3)]
  builder = types.SimpleNamespace(data_dir="")
  rows = RowBuilder(config, builder, records, None, datasets.make_tokenizer(config), [])
  tokenizer = datasets.make_tokenizer(config)
  for i in range(3):
    ex = rows.example(i, np.random.default_rng(i), keep_text=True)
    assert ex["parity_labels"] == i % 2 and ex["text"] == "is the number of objects odd"
    assert ex["parity_count"] == str(i)  # its host-side string, popped before batches reach devices:
    assert "parity_count" not in batched.host_inputs(dict(ex), {})
    assert "itm_labels" not in ex and "mlm_targets" not in ex  # not a caption row.
    expected = tokenizer.encode(ex["text"], config.data.max_text_len)
    assert list(ex["text_ids"][: ex["text_mask"].sum()]) == expected
    np.testing.assert_allclose(ex["image"], records[i]["image"] / 255.0)


def test_validation_and_data_checks_know_it(parity):
  config = _config()
  configuration.validate(config)
  features = {"image": None, "captions": None}
  builder = types.SimpleNamespace(info=types.SimpleNamespace(features=features),
                                  builder_config=types.SimpleNamespace(image_size=16))
  tokenizer = datasets.make_tokenizer(config)
  with pytest.raises(ConfigError, match=r"config.objectives.parity=1.0 but .* has no parity data"):
    compatibility.check_compatible(config, builder, tokenizer)
  features["num_objects"] = None
  compatibility.check_compatible(config, builder, tokenizer)
  config.objectives["itm"] = 1.0  # its own text cannot share rows with captions.
  config.model.heads = ("parity", "itm")
  with pytest.raises(ConfigError, match="cannot share batches"):
    compatibility.check_compatible(config, builder, tokenizer)


def test_its_evaluation_counts_and_metrics(parity):
  model = build_model(_config().model)
  batch = _batch()
  params = model.init(jax.random.key(0), batch)["params"]
  batch["shuffled_images"] = {"image": batch["image"][::-1]}
  predict = Predictor.of_model(model, mesh=None).predict_fn
  counts = jax.tree.map(float, jax.device_get(batched.eval_counts(predict, params, batch)))
  metrics = batched.metrics_from_counts(counts)["parity"]
  assert metrics["count"] == 4 and set(metrics["by_label"]) == {"even", "odd"}
  assert metrics["by_label"]["odd"]["count"] == 2
  assert {"accuracy", "accuracy_shuffled_images"} <= set(metrics)
  logits = model.apply({"params": params}, {k: v for k, v in batch.items() if k != "shuffled_images"})
  right = np.argmax(np.asarray(logits["parity_logits"]), -1) == batch["parity_labels"]
  assert metrics["accuracy"] == pytest.approx(right.mean())
  assert "parity_accuracy" in evaluators.scalars({"parity": metrics})
