"""A `gs://` workdir stays a `gs://` path: config.json, metrics.jsonl, checkpoint listing, eval results and
vocab files go through `etils.epath`, here with the `gs://` backend mapped onto a temporary folder.

So are the files read from a dataset's `manual_dir` (annotations, images, region features). Of what is
written, only the files vlfusion writes itself are covered: orbax's array writes (TensorStore) and
TensorBoard's event files (TensorFlow's filesystems) take the `gs://` path as given and do not go
through epath.
"""

import json
import os
import shutil

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath as epath_gpath
from etils.epath import testing as epath_testing

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion.data import tokenizer
from vlfusion.rundir import Workdir
from vlfusion.training import checkpointing, reporting
from vlfusion.training import workdir as workdir_lib
from vlfusion.training.workdir import IncompatibleWorkdirError

BUCKET = "gs://bucket/runs/a"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """`gs://...` paths of epath mapped onto `tmp_path/gcs/...`; returns that folder."""
  root = tmp_path / "gcs"
  root.mkdir()

  def local(path):  # the mock serves local paths too: those pass through.
    text = os.fspath(path)
    return os.path.join(root, text[len("gs://"):]) if text.startswith("gs://") else text

  def one(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def two(original, path, dst, *args, **kwargs):
    return original(local(path), local(dst), *args, **kwargs)

  def remote(path, like):  # a local result back to gs://, when the call was about a gs:// path.
    return "gs://" + os.path.relpath(path, root) if os.fspath(like).startswith("gs://") else path

  def glob(original, pattern):
    return [remote(p, pattern) for p in original(local(pattern))]

  def walk(original, top, **kwargs):
    for dirpath, dirs, files in original(local(top), **kwargs):
      yield remote(dirpath, top), dirs, files

  # With TensorFlow installed epath sends gs:// to tf.io.gfile whatever the backend table says.
  monkeypatch.setattr(epath_gpath, "_is_tf_installed", lambda: False)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # a path mistaken for a local one would land here, as `gs:/...`.
  with epath_testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one, rmtree=one,
      stat=one, rename=two, replace=two, copy=two, glob=glob, walk=walk):
    yield root
  assert not os.listdir(cwd), f"written outside the bucket: {os.listdir(cwd)}"


def test_gs_workdir_files_land_in_the_bucket(fake_gcs, data_dir, monkeypatch):
  config = tiny_config(co_attention, data_dir)
  assert workdir_lib.prepare(BUCKET, config) is None
  assert Workdir(BUCKET).checkpoints_dir == epath.Path(BUCKET) / "checkpoints"
  assert os.fspath(Workdir(BUCKET).checkpoints_dir).startswith("gs://")

  # A resume: the saved config is read back from the bucket and checked.
  assert workdir_lib.prepare(BUCKET, config)["model"]["fusion"] == "co_attention"
  changed = tiny_config(co_attention, data_dir, **{"model.fusion_layers": 3})
  with pytest.raises(IncompatibleWorkdirError, match="config.model.fusion_layers"):
    workdir_lib.prepare(BUCKET, changed)

  # metrics.jsonl (TensorBoard's writer is TensorFlow's, not epath's: a logging writer stands in).
  monkeypatch.setattr(reporting.metric_writers, "create_default_writer",
                      lambda *a, **k: reporting.metric_writers.LoggingWriter())
  reporter = reporting.MetricsReporter(BUCKET)
  reporter.write(1, {"loss": 2.0})
  reporter.write(2, {"loss": 1.0})
  reporter.close()
  resumed = reporting.MetricsReporter(BUCKET, start_step=1)
  resumed.write(2, {"loss": 0.5})
  resumed.close()

  # The checkpoint listing and evaluation results.
  (Workdir(BUCKET).checkpoints_dir / "3").mkdir(parents=True)
  assert checkpointing.incomplete_checkpoints(Workdir(BUCKET).checkpoints_dir) == {
      "3": f"no {checkpointing.COMMIT_MARKER}: the save did not complete"}
  result = Workdir(BUCKET).eval_result_path(3)
  result.parent.mkdir(parents=True)
  result.write_text(json.dumps({"step": 3}))

  run = fake_gcs / "bucket" / "runs" / "a"
  assert json.loads((run / "config.json").read_text())["model"]["fusion"] == "co_attention"
  assert [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] == [
      {"step": 1, "loss": 2.0}, {"step": 2, "loss": 0.5}]
  assert json.loads((run / "eval" / "step_3.json").read_text()) == {"step": 3}
  assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "eval", "metrics.jsonl"]


def test_vocab_file_on_gs_is_read_through_epath(fake_gcs):
  bucket_vocab = fake_gcs / "bucket" / "vocab.txt"
  bucket_vocab.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy(tokenizer.SHAPES_WORLD_VOCAB, bucket_vocab)
  remote = tokenizer.WordPieceTokenizer("gs://bucket/vocab.txt")
  local = tokenizer.WordPieceTokenizer()
  assert remote.vocab == local.vocab and remote.vocab_path == "gs://bucket/vocab.txt"


def test_manual_dir_on_gs_is_read_through_epath(fake_gcs, tmp_path):
  """A dataset prepared from `gs://` files: annotations, images and region features are listed, stat-ed
  and read through epath, the fingerprint keeps the `gs://` folder, and a changed file is noticed."""
  from tests.data import fixtures as fx
  from vlfusion.data import local_datasets, local_files

  bucket = fake_gcs / "bucket" / "jsonl"
  bucket.mkdir(parents=True)
  fx.write_jsonl(str(bucket), num_train=6)
  builder = local_datasets.make_builder("image_text_jsonl/images", str(tmp_path / "tfds"))
  local_datasets.prepare(builder, "gs://bucket/jsonl")
  prepared = local_datasets.make_builder("image_text_jsonl/images", str(tmp_path / "tfds"))
  assert prepared.info.splits["train"].num_examples == 6
  assert prepared.info.metadata["inputs"]["manual_dir"] == "gs://bucket/jsonl"
  assert local_datasets.input_changes(prepared, "gs://bucket/jsonl") == []
  with open(bucket / "train.jsonl", "a") as f:
    f.write(json.dumps({"image": "img/train_0.jpg", "text": "one more line"}) + "\n")
  assert local_datasets.input_changes(prepared, "gs://bucket/jsonl") == [
      "train.jsonl (in config.data.manual_dir='gs://bucket/jsonl') changed since "
      f"vlf_image_text_jsonl/images in {prepared.data_dir} was prepared"]

  fx.write_regions(str(fake_gcs / "bucket"), tsv_ids=[1, 2], npz_ids=[3])  # gs://bucket/regions/
  store = local_files.RegionStore("gs://bucket/regions", feature_dim=fx.region_arrays(1)["features"].shape[1])
  assert len(store) == 3
  for image_id in (1, 3):
    np.testing.assert_allclose(store.get(str(image_id)).features, fx.region_arrays(image_id)["features"])
