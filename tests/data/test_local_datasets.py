"""Real-format datasets from disk: COCO Karpathy, VQA v2, image-text JSONL, region TSV/npz; errors."""

import json
import os

import numpy as np
import pytest

from tests.data import fixtures as fx
from vlfusion.data import local_datasets as ld
from vlfusion.data import local_files
from vlfusion.data.local_files import DataFileError


def _build(name, manual_dir, data_dir):
  builder = ld.make_builder(name, str(data_dir))
  ld.prepare(builder, str(manual_dir))
  return ld.make_builder(name, str(data_dir))  # a fresh builder reads what was written.


def test_coco_karpathy_splits_and_corrupt_image_counted(tmp_path):
  ids = fx.write_coco(str(tmp_path / "coco"), corrupt_ids=(101,))
  builder = _build("coco_captions/images", tmp_path / "coco", tmp_path / "tfds")
  splits = builder.info.splits
  assert (splits["train"].num_examples, splits["validation"].num_examples, splits["test"].num_examples) == (
      len(ids["train"]) + len(ids["restval"]) - 1, 2, 2)
  assert builder.info.metadata["skipped"] == {"train": {"corrupt_image": 1}}
  records = {r["image_id"].decode(): r for r in builder.as_data_source("train")}
  assert "101" not in records and "100" in records
  assert [c.decode() for c in records["100"]["captions"]] == fx.CAPTIONS[:2]
  pixels = local_files.decode_image(records["100"]["image_bytes"], 32)
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


def test_soft_score_is_the_official_leave_one_out_average():
  for matching in range(11):
    subsets = []
    for left_out in range(10):  # humans 0..matching-1 gave the answer
      others = matching - (left_out < matching)
      subsets.append(min(1.0, others / 3))
    assert ld.soft_score(matching) == pytest.approx(np.mean(subsets))
    assert ld.soft_score(matching) == pytest.approx(min(1.0, 0.3 * matching))


def test_answer_normalisation():
  assert ld.normalize_answer("Two.") == "2"
  assert ld.normalize_answer("a Dog") == "dog"
  assert ld.normalize_answer(" 2.5 ") == "2.5"
  assert ld.normalize_answer("t-shirt!") == "t shirt"  # a hyphen between letters becomes a space.


def test_vqa_v2_soft_scores_and_answer_counts(tmp_path):
  fx.write_vqa(str(tmp_path / "vqa"))
  builder = _build("vqa_v2/images", tmp_path / "vqa", tmp_path / "tfds")
  assert builder.info.splits["train"].num_examples == 8
  assert builder.info.metadata["answer_counts"] == {"yes": 2, "3": 2, "blue": 2, "cat": 2}
  records = {int(r["question_id"]): r for r in builder.as_data_source("train")}
  scores = lambda r: dict(zip([a.decode() for a in r["answers"]], r["answer_scores"].tolist(), strict=True))
  assert scores(records[11]) == pytest.approx({"2": 1.0, "3": 1.0})  # "two" normalises to "2": 5 of 10
  assert scores(records[12]) == pytest.approx({"red": 0.3, "blue": 1.0})
  assert scores(records[13]) == pytest.approx({"dog": 1.0, "cat": 0.6})
  # each image is stored once; the 4 questions of an image point at it.
  images = builder.as_data_source("train_images")
  assert builder.info.splits["train_images"].num_examples == 2
  for r in records.values():
    assert r["image_bytes"] == b"" and images[int(r["image_index"])]["image_id"] == r["image_id"]
  assert sorted(int(i["image_id"]) for i in images) == [1, 2]
  assert all(len(i["image_bytes"]) > 100 for i in images)


def test_regions_from_tsv_and_npz_joined_by_image_id(tmp_path):
  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  # image 1 in a bottom-up TSV under its COCO file name, 2 and 3 as .npz
  fx.write_regions(str(root), ["COCO_train2014_000000000001"], [2, 3])
  builder = _build("vqa_v2/regions", root, tmp_path / "tfds")
  for r in builder.as_data_source("train_images"):
    expected = fx.region_arrays(int(r["image_id"]))
    np.testing.assert_array_equal(r["region_features"], expected["features"])
    np.testing.assert_allclose(r["boxes"], expected["boxes"] / np.array([200, 100, 200, 100]))
    np.testing.assert_array_equal(r["labels"], expected["objects_id"])


def test_missing_regions_are_skipped_and_counted(tmp_path):
  root = tmp_path / "jsonl"
  os.makedirs(root)
  fx.write_jsonl(str(root), num_train=6)
  fx.write_regions(str(root), [], [0, 1, 2])  # train_0..2 have features (keys from the file names)
  builder = _build("image_text_jsonl/regions", root, tmp_path / "tfds")
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.metadata["skipped"]["train"] == {"missing_regions": 3}


def test_jsonl_builder(tmp_path):
  root = tmp_path / "jsonl"
  os.makedirs(root)
  fx.write_jsonl(str(root), num_train=10, corrupt=(3,))
  os.remove(root / "img" / "train_4.jpg")
  builder = _build("image_text_jsonl/images", root, tmp_path / "tfds")
  assert builder.info.splits["train"].num_examples == 8
  assert builder.info.metadata["skipped"]["train"] == {"corrupt_image": 1, "missing_image": 1}
  assert builder.info.splits["validation"].num_examples == 8


@pytest.mark.parametrize("damage,needle", [
    ("bad_json", r"train\.jsonl: line 3: malformed JSON"),
    ("no_text", r"train\.jsonl: line 2: missing field 'text'"),
    ("no_file", r"image-text train file not found: .*train\.jsonl"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, damage, needle):
  root = tmp_path / "jsonl"
  os.makedirs(root)
  fx.write_jsonl(str(root), num_train=4)
  lines = (root / "train.jsonl").read_text().splitlines()
  if damage == "bad_json":
    lines[2] = lines[2][:-3]
  elif damage == "no_text":
    lines[1] = json.dumps({"image": "img/train_1.jpg"})
  (root / "train.jsonl").write_text("\n".join(lines) + "\n")
  if damage == "no_file":
    os.remove(root / "train.jsonl")
  with pytest.raises(DataFileError, match=needle):
    _build("image_text_jsonl/images", root, tmp_path / "tfds")


def test_coco_and_vqa_errors_name_the_record(tmp_path):
  root = tmp_path / "coco"
  fx.write_coco(str(root))
  data = json.loads((root / "dataset_coco.json").read_text())
  del data["images"][4]["sentences"]
  (root / "dataset_coco.json").write_text(json.dumps(data))
  with pytest.raises(DataFileError, match=r"dataset_coco\.json: images\[4\]: missing field 'sentences'"):
    _build("coco_captions/images", root, tmp_path / "tfds")
  vqa = tmp_path / "vqa"
  fx.write_vqa(str(vqa))
  os.remove(vqa / "v2_mscoco_train2014_annotations.json")
  with pytest.raises(DataFileError, match=r"VQA annotations file not found: .*v2_mscoco_train2014"):
    _build("vqa_v2/images", vqa, tmp_path / "tfds")


def test_malformed_tsv_names_its_line(tmp_path):
  directory = tmp_path / "regions"
  os.makedirs(directory)
  good = fx.tsv_line(5, fx.region_arrays(5))
  bad = fx.tsv_line(6, fx.region_arrays(6)).rsplit("\t", 1)[0] + "\tnot-base64!"
  (directory / "f.tsv").write_text(good + "\n" + bad + "\n")
  store = local_files.RegionStore(str(directory), fx.FEATURE_DIM)
  assert store.get("5").features.shape == (3, fx.FEATURE_DIM)
  with pytest.raises(DataFileError, match=r"f\.tsv: line 2: field 'features' is not valid base64"):
    store.get("6")
  with pytest.raises(DataFileError, match="features of shape"):
    local_files.RegionStore(str(directory), 1024).get("5")


def _source(kind, manual_dir, data_dir):
  from configs.pretrain import single_stream
  from tests.conftest import tiny_config
  from tests.data.test_pipeline import BERT_VOCAB
  from vlfusion.data import pipeline

  overrides = {"data.name": f"{kind}/images", "data.manual_dir": str(manual_dir),
               "data.vocab_path": BERT_VOCAB, "data.global_batch_size": 2, "model.text.vocab_size": 30522,
               "model.image.input": "patches", "model.image.image_size": 32, "model.image.patch_size": 8}
  if kind == "vqa_v2":
    overrides.update({"data.vqa_min_answer_count": 2, "objectives.mlm": 0.0, "objectives.itm": 0.0,
                      "objectives.vqa": 1.0, "model.heads": ("vqa",), "model.vqa.num_answers": 4})
  return pipeline.make_batch_source(tiny_config(single_stream, str(data_dir), **overrides), "train")


def test_prepared_dataset_never_serves_another_manual_dir(tmp_path):
  """Prepared from one folder, requested with another or with changed files: refused, naming both."""
  from vlfusion.configuration import ConfigError

  first, second = tmp_path / "first", tmp_path / "second"
  for root, n in ((first, 6), (second, 9)):
    os.makedirs(root)
    fx.write_jsonl(str(root), num_train=n)
  data_dir = tmp_path / "tfds"
  assert _source("image_text_jsonl", first, data_dir).num_examples == 6
  assert _source("image_text_jsonl", first, data_dir).num_examples == 6  # same inputs: reused.
  with pytest.raises(ConfigError, match=r"config.data.manual_dir=.*second.*prepared from .*first"):
    _source("image_text_jsonl", second, data_dir)
  with open(first / "train.jsonl", "a") as f:  # the same folder with a changed annotation file.
    f.write(json.dumps({"image": "img/train_0.jpg", "text": "one more line"}) + "\n")
  with pytest.raises(ConfigError, match=r"train\.jsonl .*changed since"):
    _source("image_text_jsonl", first, data_dir)


def test_prepared_vqa_refuses_changed_annotations(tmp_path):
  from vlfusion.configuration import ConfigError

  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  assert _source("vqa_v2", root, tmp_path / "tfds").num_examples == 8
  path = root / "v2_mscoco_train2014_annotations.json"
  os.utime(path, ns=(1, 1))  # touched, same content: still the same data.
  assert _source("vqa_v2", root, tmp_path / "tfds").num_examples == 8
  data = json.loads(path.read_text())
  data["annotations"][0]["multiple_choice_answer"] = "no"
  path.write_text(json.dumps(data))
  with pytest.raises(ConfigError, match=r"v2_mscoco_train2014_annotations\.json .*changed since"):
    _source("vqa_v2", root, tmp_path / "tfds")


def test_vqa_v2_unreadable_image_skips_its_questions(tmp_path):
  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  fx.write_corrupt(str(root / "train2014" / fx.coco_filename("train2014", 2)))
  builder = _build("vqa_v2/images", root, tmp_path / "tfds")
  splits = builder.info.splits
  assert splits["train"].num_examples == 4 and splits["train_images"].num_examples == 1
  assert builder.info.metadata["skipped"]["train_images"] == {"corrupt_image": 1}
  assert builder.info.metadata["skipped"]["train"] == {"corrupt_image": 4}
  assert {r["image_id"] for r in builder.as_data_source("train")} == {b"1"}


def test_coco_image_without_sentences_is_skipped_counted_and_named(tmp_path, caplog):
  root = tmp_path / "coco"
  ids = fx.write_coco(str(root))
  fx.edit_json(str(root / "dataset_coco.json"), lambda d: d["images"][2].update(sentences=[]))
  with caplog.at_level("WARNING"):
    builder = _build("coco_captions/images", root, tmp_path / "tfds")
  assert builder.info.splits["train"].num_examples == len(ids["train"]) + len(ids["restval"]) - 1
  assert builder.info.metadata["skipped"] == {"train": {"no_text": 1}}
  assert "102" not in {r["image_id"].decode() for r in builder.as_data_source("train")}
  assert "image 102 (COCO_train2014_000000000102.jpg)" in caplog.text


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_non_utf8_annotation_names_the_file_and_where(tmp_path, kind):
  root = tmp_path / "data"
  os.makedirs(root)
  if kind == "jsonl":
    fx.write_jsonl(str(root), num_train=4)
    path, name, needle = root / "train.jsonl", "image_text_jsonl/images", r"train\.jsonl: line 3: not UTF-8"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"image", b"im\xffage", 1)
    path.write_bytes(b"".join(lines))
  else:
    fx.write_coco(str(root))
    path, name = root / "dataset_coco.json", "coco_captions/images"
    data = path.read_bytes()
    offset = data.index(b"a dog runs")
    path.write_bytes(data[:offset] + b"\xe9" + data[offset + 1:])
    needle = rf"dataset_coco\.json: byte {offset} \(line 1\): not UTF-8"
  with pytest.raises(DataFileError, match=needle):
    _build(name, root, tmp_path / "tfds")


def _duplicate_coco(root):
  fx.write_coco(str(root))
  fx.edit_json(str(root / "dataset_coco.json"), lambda d: d["images"][3].update(cocoid=101))
  return "coco_captions/images", (r"dataset_coco\.json: images\[3\]: image 101 is listed twice "
                                 r"\(first at images\[1\]\)")


def _duplicate_question(root):
  fx.write_vqa(str(root))
  fx.edit_json(str(root / "v2_OpenEnded_mscoco_train2014_questions.json"),
               lambda d: d["questions"][2].update(question_id=10))
  return "vqa_v2/images", (r"questions\.json: questions\[2\]: question_id 10 is listed twice "
                           r"\(first at questions\[0\]\)")


@pytest.mark.parametrize("make", [_duplicate_coco, _duplicate_question])
def test_duplicate_ids_are_refused_naming_the_id_and_file(tmp_path, make):
  name, needle = make(tmp_path / "data")
  with pytest.raises(DataFileError, match=needle):
    _build(name, tmp_path / "data", tmp_path / "tfds")


def _annotations(root):
  return str(root / "v2_mscoco_train2014_annotations.json")


def test_vqa_question_without_answers_is_skipped_and_counted(tmp_path):
  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  fx.edit_json(_annotations(root), lambda d: d["annotations"][1].update(answers=[]))
  builder = _build("vqa_v2/images", root, tmp_path / "tfds")
  assert builder.info.splits["train"].num_examples == 7
  assert builder.info.metadata["skipped"] == {"train": {"no_answers": 1}}
  assert 11 not in {int(r["question_id"]) for r in builder.as_data_source("train")}
  assert "question 11" in builder.info.metadata["skipped_examples"]["no_answers"][0]


def _non_dict_answers(d):
  d["annotations"][1]["answers"] = [3, 4]


def _twice_annotated(d):
  d["annotations"].append(dict(d["annotations"][1], multiple_choice_answer="7"))


def _other_image(d):
  d["annotations"][1]["image_id"] = 2


@pytest.mark.parametrize("edit,needle", [
    (_non_dict_answers, r"annotations\.json: annotations\[1\] \(question_id 11\): answers\[0\] is int, "
                        r"not an object with an 'answer'"),
    (_twice_annotated, r"annotations\.json: annotations\[8\]: question_id 11 is listed twice "
                       r"\(first at annotations\[1\]\)"),
    (_other_image, r"question_id 11 is about image_id 1 in .*questions\.json: questions\[1\] but image_id 2 "
                   r"in .*annotations\.json: annotations\[1\]"),
])
def test_vqa_inconsistent_annotations_are_refused_naming_the_question(tmp_path, edit, needle):
  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  fx.edit_json(_annotations(root), edit)
  with pytest.raises(DataFileError, match=needle):
    _build("vqa_v2/images", root, tmp_path / "tfds")


def test_empty_texts_dropped_and_long_texts_cut_at_preparation(tmp_path):
  root = tmp_path / "jsonl"
  os.makedirs(root)
  fx.write_jsonl(str(root), num_train=5)
  lines = (root / "train.jsonl").read_text().splitlines()
  lines[0] = json.dumps({"image": "img/train_0.jpg", "text": ""})
  lines[1] = json.dumps({"image": "img/train_1.jpg", "text": ["  ", "a dog"]})
  lines[2] = json.dumps({"image": "img/train_2.jpg", "text": "a cat " * 1_000_000})  # 6 MB
  (root / "train.jsonl").write_text("\n".join(lines) + "\n")
  builder = _build("image_text_jsonl/images", root, tmp_path / "tfds")
  metadata = builder.info.metadata
  assert builder.info.splits["train"].num_examples == 4
  assert metadata["skipped"] == {"train": {"no_text": 1}}
  assert metadata["amended"] == {"train": {"empty_text": 1, "long_text": 1}}
  records = {r["image_id"].decode(): [c.decode() for c in r["captions"]]
             for r in builder.as_data_source("train")}
  assert "0" not in records and records["1"] == ["a dog"]  # keys are the numbers of the file names.
  assert len(records["2"][0]) == ld.MAX_TEXT_CHARS < 6_000_000
  assert "line 3" in metadata["amended_examples"]["long_text"][0]


def test_vqa_empty_question_is_skipped(tmp_path):
  root = tmp_path / "vqa"
  fx.write_vqa(str(root))
  fx.edit_json(str(root / "v2_OpenEnded_mscoco_train2014_questions.json"),
               lambda d: d["questions"][0].update(question=" "))
  builder = _build("vqa_v2/images", root, tmp_path / "tfds")
  assert builder.info.metadata["skipped"] == {"train": {"no_text": 1}}
  assert builder.info.splits["train"].num_examples == 7
