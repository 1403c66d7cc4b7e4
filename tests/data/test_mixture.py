"""A weighted mixture of datasets: rows drawn by weight, a pure function of the step, resumable."""

import numpy as np
import pytest

from configs.pretrain import single_stream
from tests.conftest import tiny_config
from tests.data import fixtures as fx
from tests.data.test_pipeline import BERT_VOCAB, _assert_same
from vlfusion.configuration import ConfigError
from vlfusion.data import pipeline


@pytest.fixture(scope="module")
def web_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("web"))
  fx.write_jsonl(root, num_train=20)
  return root


def _config(data_dir, web_dir, tmp_path, **overrides):
  """Shapes-world scenes (weight 3) mixed with JSONL web captions (weight 1), BERT vocab for both."""
  return tiny_config(single_stream, data_dir, **{
      "data.vocab_path": BERT_VOCAB, "model.text.vocab_size": 30522, "model.image.input": "patches",
      "model.image.patch_size": 8, "data.global_batch_size": 16,
      "data.mixture": {"shapes": {"name": "shapes_world/tiny", "weight": 3.0},
                       "web": {"name": "image_text_jsonl/images", "manual_dir": web_dir,
                               "data_dir": str(tmp_path / "web_tfds"), "weight": 1.0}},
      **overrides})


def test_mixture_rows_follow_the_weights_and_the_step(data_dir, web_dir, tmp_path):
  config = _config(data_dir, web_dir, tmp_path)
  source = pipeline.make_batch_source(config, "train")
  assert source.labels == ["shapes", "web"]
  drawn = np.concatenate([source.components(s) for s in range(20)])
  assert 0.65 < (drawn == 0).mean() < 0.85  # weight 3 of 4
  batch = source.get_batch(3)
  assert batch["image"].shape == (16, 64, 64, 3)
  # each row is the example its dataset's permutation puts there, built as that dataset builds it.
  web = source.sources[1]
  captions = {" ".join(web.tokenizer.decode(web.tokenizer.encode(c)[1:-1]).split()) for c in fx.CAPTIONS}
  rows = np.flatnonzero(source.components(3) == 1)
  assert len(rows)
  for r in rows:
    if batch["itm_labels"][r]:
      ids = batch["text_ids"][r][batch["text_mask"][r]][1:-1]
      assert web.tokenizer.decode(ids) in captions
  # resumable: a fresh source (a new run, other process layout) gives the same batches.
  for process_count in (1, 2):
    parts = [pipeline.make_batch_source(config, "train", process_index=p, process_count=process_count)
             .get_batch(3) for p in range(process_count)]
    _assert_same(batch, {k: np.concatenate([p[k] for p in parts]) for k in batch})
  assert source.state(3)["dataset"].startswith("mixture(shapes=shapes_world/tiny:0.75,web=")


def test_mixture_errors_name_the_component(data_dir, web_dir, tmp_path):
  config = _config(data_dir, web_dir, tmp_path)
  config.data.mixture.web.weight = 0.0
  with pytest.raises(ConfigError, match=r"config.data.mixture.web.weight=0.0 must be > 0"):
    pipeline.make_batch_source(config, "train")
  config = _config(data_dir, web_dir, tmp_path)
  config.data.mixture.web.colour = "red"
  with pytest.raises(ConfigError, match=r"config.data.mixture.web.colour: config.data has no field"):
    pipeline.make_batch_source(config, "train")
