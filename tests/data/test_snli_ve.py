"""SNLI-VE from files in the release's layout: hypotheses grouped by image, bad lines counted and named."""

import json
import os

import ml_collections
import numpy as np
import pytest

from tests.data import fixtures as fx
from vlfusion.data import datasets, local_datasets, local_files, snli_ve
from vlfusion.data.local_files import DataFileError

IMAGES = os.path.join("Flickr30K", "flickr30k_images")
# (Flickr30K_ID, sentence2, gold_label) by release split; None leaves gold_label out.
LINES = {
    "train": [("1001", "a dog runs", "entailment"), ("1001", "a cat sleeps", "contradiction"),
              ("1002", "two people ride", "neutral"), ("1001", "an animal is outside", "-"),
              ("1002", "people are outdoors", None), ("1002", "someone waits", "maybe"),
              ("1003", "a bus on a street", "entailment"), ("1003", "a bus is parked", "neutral"),
              ("1004", "a plate of pasta", "contradiction"), ("1002", "people ride bikes", "Entailment"),
              ("1001", "  ", "neutral")],
    "dev": [("2001", "a child plays", "neutral"), ("2002", "a man cooks", "entailment")],
    "test": [("3001", "a woman sings", "contradiction")],
}


def write_release(root, lines=LINES, missing=("1003",), corrupt=("1004",), image_dir=IMAGES):
  """snli_ve_<split>.jsonl under data/ and a JPEG per Flickr30K id, except `missing`."""
  os.makedirs(os.path.join(root, "data"), exist_ok=True)
  for split, rows in lines.items():
    with open(os.path.join(root, "data", f"snli_ve_{split}.jsonl"), "w") as f:
      for n, (image, text, gold) in enumerate(rows):
        record = {"Flickr30K_ID": image, "sentence1": "a caption of the image", "sentence2": text,
                  "pairID": f"{image}.jpg#{n}"}
        if gold is not None:
          record["gold_label"] = gold
        f.write(json.dumps(record) + "\n")
      for image in {image for image, _, _ in rows} - set(missing):
        path = os.path.join(root, image_dir, f"{image}.jpg")
        (fx.write_corrupt if image in corrupt else fx.write_jpeg)(path, int(image))


def _build(root, data_dir, name="snli_ve/images"):
  builder = snli_ve.make_builder(name, str(data_dir))
  local_datasets.prepare(builder, str(root))
  return snli_ve.make_builder(name, str(data_dir))  # a fresh builder reads what was written.


def test_hypotheses_are_grouped_by_image_and_bad_lines_counted(tmp_path):
  write_release(str(tmp_path / "snli"))
  builder = _build(tmp_path / "snli", tmp_path / "tfds")
  splits = builder.info.splits
  assert (splits["train"].num_examples, splits["validation"].num_examples, splits["test"].num_examples) == (
      2, 2, 1)
  records = {r["image_id"].decode(): r for r in builder.as_data_source("train")}
  assert set(records) == {"1001", "1002"}
  assert [h.decode() for h in records["1001"]["hypotheses"]] == ["a dog runs", "a cat sleeps"]
  assert records["1001"]["hypothesis_labels"].tolist() == [0, 2]
  assert [h.decode() for h in records["1002"]["hypotheses"]] == ["two people ride", "people ride bikes"]
  assert records["1002"]["hypothesis_labels"].tolist() == [1, 0]
  assert records["1002"]["hypothesis_labels"].dtype == np.int32
  pixels = local_files.decode_image(records["1001"]["image_bytes"], 32)
  assert pixels.shape == (32, 32, 3)
  metadata = builder.info.metadata
  assert metadata["labels"] == ["entailment", "neutral", "contradiction"]
  # Every bad line is counted under its split and named with its file and line.
  assert metadata["skipped"] == {"train": {"no_label": 2, "unknown_label": 1, "missing_image": 2,
                                           "corrupt_image": 1, "no_text": 1}}
  named = metadata["skipped_examples"]
  line = lambda detail: detail.split("snli_ve_train.jsonl: ")[1].split(":")[0]
  assert [line(d) for d in named["no_label"]] == ["line 4", "line 5"]
  assert [line(d) for d in named["unknown_label"]] == ["line 6"] and "'maybe'" in named["unknown_label"][0]
  assert [line(d) for d in named["missing_image"]] == ["line 7", "line 8"]
  assert all(d.endswith(os.path.join(IMAGES, "1003.jpg")) for d in named["missing_image"])
  assert [line(d) for d in named["corrupt_image"]] == ["line 9"]
  assert [line(d) for d in named["no_text"]] == ["line 11"]


def test_regions_are_joined_by_flickr_id(tmp_path):
  root = tmp_path / "snli"
  write_release(str(root), missing=(), corrupt=())
  fx.write_regions(str(root), [], [1001, 1003, 1004, 2001, 2002, 3001])  # 1002 has none
  builder = _build(root, tmp_path / "tfds", "snli_ve/regions")
  records = {r["image_id"].decode(): r for r in builder.as_data_source("train")}
  assert set(records) == {"1001", "1003", "1004"}
  np.testing.assert_array_equal(records["1003"]["region_features"], fx.region_arrays(1003)["features"])
  assert builder.info.metadata["skipped"]["train"]["missing_regions"] == 2  # the two lines of 1002


def test_the_data_pipeline_opens_it_by_name(tmp_path):
  write_release(str(tmp_path / "snli"), image_dir="images")
  config = ml_collections.ConfigDict({"data": {"name": "snli_ve/images", "data_dir": str(tmp_path / "tfds"),
                                               "manual_dir": str(tmp_path / "snli")}})
  source, builder = datasets.open_dataset(config, "validation", process_index=0, process_count=1)
  assert isinstance(builder, snli_ve.SnliVe) and len(source) == 2
  assert builder.info.metadata["inputs"]["files"].keys() == {
      os.path.join("data", f"snli_ve_{s}.jsonl") for s in ("train", "dev", "test")}


@pytest.mark.parametrize("damage,needle", [
    ("no_sentence", r"snli_ve_train\.jsonl: line 2: missing field 'sentence2'"),
    ("no_image_id", r"snli_ve_train\.jsonl: line 2: missing field 'Flickr30K_ID'"),
    ("leak", r"snli_ve_dev\.jsonl: line 1: image 1001 is also in .*snli_ve_train\.jsonl \(line 1\)"),
    ("no_files", r"none of \['snli_ve_train\.jsonl'"),
])
def test_malformed_files_are_refused_naming_file_and_line(tmp_path, damage, needle):
  root = tmp_path / "snli"
  write_release(str(root))
  train = root / "data" / "snli_ve_train.jsonl"
  lines = train.read_text().splitlines()
  if damage in ("no_sentence", "no_image_id"):
    record = json.loads(lines[1])
    del record["sentence2" if damage == "no_sentence" else "Flickr30K_ID"]
    lines[1] = json.dumps(record)
    train.write_text("\n".join(lines) + "\n")
  elif damage == "leak":
    write_release(str(root), {**LINES, "dev": [("1001", "a dog runs", "entailment")]})
  else:
    for split in ("train", "dev", "test"):
      os.remove(root / "data" / f"snli_ve_{split}.jsonl")
  with pytest.raises(DataFileError, match=needle):
    _build(root, tmp_path / "tfds")
