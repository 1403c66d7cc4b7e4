"""img2dataset shards (WebDataset tar, parquet): prepared, counted, round-tripped, and pretrained on."""

import glob
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.data import fixtures as fx
from vlfusion.data import local_datasets, shards
from vlfusion.data.local_files import DataFileError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARE = 0.3  # of tiny corpora: enough keys fall in validation.
CORRUPT = b"\xff\xd8\xff\xe0 not really a jpeg"


def image(seed, kind="JPEG"):
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format=kind)
  return out.getvalue()


def write_tar(path, samples):
  """A WebDataset shard: `samples` is [(key, {extension: bytes})], members in that order."""
  with tarfile.open(path, "w") as tar:
    for key, parts in samples:
      for extension, data in parts.items():
        info = tarfile.TarInfo(f"{key}.{extension}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def good(key, n):
  meta = json.dumps({"key": key, "status": "success"}).encode()
  return key, {"jpg": image(n), "txt": fx.CAPTIONS[n % len(fx.CAPTIONS)].encode(), "json": meta}


def tar_corpus(root):
  """Two shards as img2dataset names them (and its parquet of metadata beside each); returns
  {key: (caption, image bytes)} of the usable samples and {key: reason} of the bad ones."""
  os.makedirs(root, exist_ok=True)
  first = [good(f"00000{i:04d}", i) for i in range(20)]
  first[3] = (first[3][0], {"png": image(3, "PNG"), "txt": first[3][1]["txt"]})  # a PNG sample.
  bad = {"000000020": ("corrupt_image", {"jpg": CORRUPT, "txt": b"a broken picture"}),
         "000000021": ("no_text", {"jpg": image(9)}),  # an image but no caption.
         "000000022": ("missing_image", {"txt": b"a caption alone", "json": b"{}"})}
  second = [good(f"00001{i:04d}", 20 + i) for i in range(16)]
  bad2 = {"000010016": ("no_text", {"jpg": image(40), "txt": b"   "}),
          "000010017": ("undecodable_text", {"jpg": image(41), "txt": b"caf\xe9 in latin-1"})}
  write_tar(os.path.join(root, "00000.tar"), first + [(k, p) for k, (_, p) in bad.items()])
  write_tar(os.path.join(root, "00001.tar"), second + [(k, p) for k, (_, p) in bad2.items()])
  for n in range(2):  # the metadata img2dataset writes beside a WebDataset shard: never read.
    pq.write_table(pa.table({"key": ["x"], "caption": ["y"], "status": ["success"]}),
                   os.path.join(root, f"0000{n}.parquet"))
  usable = {k: (p["txt"].decode(), p.get("jpg", p.get("png"))) for k, p in first + second}
  return usable, {k: reason for k, (reason, _) in {**bad, **bad2}.items()}


def parquet_corpus(root):
  """One img2dataset parquet shard of three row groups, with a failed download and a null caption."""
  os.makedirs(root, exist_ok=True)
  n = 20
  keys = [f"00000{i:04d}" for i in range(n)]
  captions = [fx.CAPTIONS[i % len(fx.CAPTIONS)] for i in range(n)]
  images = [image(100 + i) for i in range(n)]
  status = ["success"] * n
  images[4], status[4] = None, "failed_to_download"
  captions[7] = None
  table = pa.table({"key": keys, "caption": captions, "jpg": images, "status": status,
                    "error_message": [None] * 4 + ["HTTP 404"] + [None] * (n - 5)})
  pq.write_table(table, os.path.join(root, "00000.parquet"), row_group_size=8)
  usable = {k: (c, b) for k, c, b in zip(keys, captions, images, strict=True) if c and b}
  return usable, {keys[4]: "missing_image", keys[7]: "no_text"}


def prepare(root, data_dir, spec="", share=SHARE):
  builder = shards.make_builder("image_text_shards/images", str(data_dir), spec, share)
  local_datasets.prepare(builder, str(root))
  return shards.make_builder("image_text_shards/images", str(data_dir), spec, share)


def split_of(key):
  return "validation" if shards.in_validation(key, SHARE) else "train"


def expected_counts(bad):
  counts = {}
  for key, reason in bad.items():
    by_reason = counts.setdefault(split_of(key), {})
    by_reason[reason] = by_reason.get(reason, 0) + 1
  return counts


def check_records(builder, usable):
  """Every usable sample is in the split its key picks, caption and image bytes as written."""
  seen = {}
  for split in builder.info.splits:
    for record in builder.as_data_source(split):
      key = record["image_id"].decode()
      assert split == split_of(key), key
      seen[key] = ([c.decode() for c in record["captions"]], record["image_bytes"])
  assert set(seen) == set(usable)
  for key, (caption, data) in usable.items():
    assert seen[key] == ([caption], data)
  assert {split_of(k) for k in usable} == {"train", "validation"}  # both splits hold samples.


@pytest.fixture(scope="module")
def tar_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tar_shards"))
  return root, *tar_corpus(root)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("parquet_shards"))
  return root, *parquet_corpus(root)


def test_tar_shards_round_trip_and_count_each_bad_sample(tar_dir, tmp_path):
  root, usable, bad = tar_dir
  builder = prepare(root, tmp_path / "tfds")
  splits = builder.info.splits
  assert splits["train"].num_examples + splits["validation"].num_examples == len(usable)
  check_records(builder, usable)
  assert builder.info.metadata["skipped"] == expected_counts(bad)
  named = " ".join(d for ds in builder.info.metadata["skipped_examples"].values() for d in ds)
  for key in bad:  # each skipped sample is named with its shard.
    assert re.search(rf"0000[01]\.tar: sample {key}", named), key
  pixels = np.asarray(Image.open(io.BytesIO(builder.as_data_source("train")[0]["image_bytes"])))
  assert pixels.shape == (24, 32, 3)


def test_parquet_shards_read_row_group_by_row_group(parquet_dir, tmp_path):
  root, usable, bad = parquet_dir
  builder = prepare(root, tmp_path / "tfds")
  check_records(builder, usable)
  assert builder.info.metadata["skipped"] == expected_counts(bad)
  named = " ".join(d for ds in builder.info.metadata["skipped_examples"].values() for d in ds)
  assert "row 4, sample 000000004 (status 'failed_to_download'; error_message 'HTTP 404')" in named


@pytest.mark.parametrize("cut", ["inside a member", "between members"])
def test_a_truncated_shard_keeps_what_came_before_and_is_counted_once(tmp_path, cut):
  root = tmp_path / "web"
  os.makedirs(root)
  samples = [good(f"{i:09d}", i) for i in range(6)]
  write_tar(str(root / "00000.tar"), samples)
  data = (root / "00000.tar").read_bytes()
  with tarfile.open(root / "00000.tar") as tar:
    boundary = tar.getmembers()[12].offset  # the header of sample 4's first member.
  end = len(data) * 2 // 3 if cut == "inside a member" else boundary
  (root / "00000.tar").write_bytes(data[:end])  # a download that broke off.
  builder = prepare(root, tmp_path / "tfds", share=0.0)
  assert list(builder.info.splits) == ["train"]  # share 0: no validation split.
  kept = builder.info.splits["train"].num_examples
  assert 2 <= kept < 6
  assert builder.info.metadata["skipped"] == {"train": {"unreadable_shard": 1}}
  detail = builder.info.metadata["skipped_examples"]["unreadable_shard"][0]
  assert f"00000.tar: unreadable tar shard after {kept} samples" in detail


def test_shards_spec_globs_lists_and_ranges(tmp_path):
  for n in range(3):
    write_tar(str(tmp_path / f"{n:05d}.tar"), [good(f"{n:05d}0000", n)])
  names = lambda spec: [os.path.basename(p) for p in shards.resolve_shards(spec, str(tmp_path))]
  assert names("") == ["00000.tar", "00001.tar", "00002.tar"]
  assert names("{00001..00002}.tar") == ["00001.tar", "00002.tar"]
  assert names(f"00002.tar, {tmp_path}/0000[01].tar") == ["00002.tar", "00000.tar", "00001.tar"]
  with pytest.raises(DataFileError, match=r"'\*\.tgz' matches no file"):
    shards.resolve_shards("*.tgz", str(tmp_path))
  with pytest.raises(DataFileError, match=r"shard '00007.tar' not found"):
    shards.resolve_shards("00007.tar", str(tmp_path))
  with pytest.raises(DataFileError, match=r"00001.tar is named twice"):
    shards.resolve_shards("00001.tar,*.tar", str(tmp_path))
  with pytest.raises(DataFileError, match=r"no shards in .*set config.data.shards"):
    shards.resolve_shards("", str(tmp_path / "missing"))


def test_malformed_shards_are_refused_naming_file_and_key(tmp_path):
  write_tar(str(tmp_path / "dup.tar"), [good("k1", 1), good("k2", 2), ("k1", {"txt": b"again"})])
  with pytest.raises(DataFileError, match=r"dup.tar: key 'k1' appears twice \(member 'k1.jpg'"):
    list(shards.tar_samples(str(tmp_path / "dup.tar"), lambda key: True))
  pq.write_table(pa.table({"key": ["a"], "caption": ["b"], "status": ["success"]}), tmp_path / "m.parquet")
  with pytest.raises(DataFileError, match=r"m.parquet: no image column .* \['key', 'caption', 'status'\]"):
    list(shards.parquet_samples(str(tmp_path / "m.parquet"), lambda key: True))


def test_a_prepared_corpus_is_refused_for_another_validation_share_or_shard_list(tar_dir, tmp_path):
  root, _, _ = tar_dir
  prepare(root, tmp_path / "tfds")
  other = shards.make_builder("image_text_shards/images", str(tmp_path / "tfds"), "", 0.1)
  assert local_datasets.input_changes(other, root) == [
      f"config.data.shards_validation_share=0.1 but vlf_image_text_shards/images in {other.data_dir} was "
      f"prepared with {SHARE}"]
  fewer = shards.make_builder("image_text_shards/images", str(tmp_path / "tfds"), "00000.tar", SHARE)
  assert [c.split(" (")[0] for c in local_datasets.input_changes(fewer, root)] == ["00001.tar"]


def test_pretraining_reads_tar_and_parquet_shards_mixed(tar_dir, parquet_dir, tmp_path):
  """Two steps of MLM + ITM + ITC on a mixture of a tar corpus and a parquet corpus."""
  from configs.pretrain import vilt
  from tests.conftest import tiny_config
  from vlfusion import experiment
  from vlfusion.data.tokenizer import SPECIAL_TOKENS

  workdir = str(tmp_path / "run")
  vocab = tmp_path / "vocab.txt"  # the captions' words: a small embedding keeps the test quick.
  words = sorted({w for c in fx.CAPTIONS for w in c.split()} | {"a", "broken", "picture", "caption", "alone"})
  vocab.write_text("\n".join([*SPECIAL_TOKENS, *words]) + "\n")
  entry = lambda root, weight: {"name": "image_text_shards/images", "manual_dir": root,
                                "data_dir": str(tmp_path / os.path.basename(root)),
                                "shards_validation_share": SHARE, "weight": weight}
  config = tiny_config(vilt, str(tmp_path / "tfds"), **{
      "data.name": "image_text_shards/images", "data.manual_dir": tar_dir[0],
      "data.data_dir": str(tmp_path / os.path.basename(tar_dir[0])), "data.shards_validation_share": SHARE,
      "data.mixture": {"tar": entry(tar_dir[0], 1.0), "parquet": entry(parquet_dir[0], 1.0)},
      "data.vocab_path": str(vocab), "model.image.image_size": 32,
      "data.global_batch_size": 8, "objectives.itc": 1.0, "model.heads": ("mlm", "itm", "itc"),
      "train.num_steps": 2, "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
      "eval.every_steps": 0})
  experiment.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["loss"]) and r["itc_loss"] > 0 for r in records)


def _walkthrough_commands():
  """The `python ...` lines of the "Your own data" walkthrough in docs/data.md, in order."""
  with open(os.path.join(ROOT, "docs", "data.md")) as f:
    text = f.read()
  section = text.split("## Your own data", 1)[1].split("\n## ", 1)[0]
  block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
  commands, current = [], ""
  for line in block.splitlines():
    current += line.rstrip("\\").strip() + " "
    if not line.endswith("\\"):
      if current.strip().startswith("python "):
        commands.append(current.split())
      current = ""
  return commands


@pytest.mark.slow
def test_the_walkthrough_commands_run(tar_dir, tmp_path):
  """docs/data.md's three commands as written, in a folder holding the walkthrough's names (`shards/`
  an img2dataset folder, `vocab.txt` a BERT vocab), made small enough for 36 samples: 2 steps of 8, and
  a validation share that gives the validation split a batch."""
  from tests.conftest import FAST_XLA
  from tests.data.test_pipeline import BERT_VOCAB

  commands = _walkthrough_commands()
  assert [c[1] for c in commands] == ["-m", "train.py", "eval.py"], commands
  os.symlink(tar_dir[0], tmp_path / "shards")
  os.symlink(BERT_VOCAB, tmp_path / "vocab.txt")
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}",
             PYTHONPATH=ROOT)
  smaller = {"-m": [f"--validation_share={SHARE}"],
             "train.py": [f"--config.data.shards_validation_share={SHARE}",
                          "--config.data.global_batch_size=8", "--config.train.num_steps=2",
                          "--config.train.checkpoint_every_steps=2", "--config.train.log_every_steps=1",
                          "--config.eval.every_steps=0"],
             "eval.py": []}
  for n, command in enumerate(commands):
    argv = [sys.executable, *[os.path.join(ROOT, a) if a.endswith(".py") else a for a in command[1:]]]
    argv = [a.replace("--config=configs/", f"--config={ROOT}/configs/") for a in argv]
    result = subprocess.run(argv + smaller[command[1]], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    if n == 0:
      report = json.loads(result.stdout)
      assert sum(report["examples"].values()) == len(tar_dir[1])
      assert sum(sum(r.values()) for r in report["skipped"].values()) == len(tar_dir[2])
  evaluated = json.loads(result.stdout)
  assert evaluated["step"] == 2 and 0.0 <= evaluated["default"]["itm"]["accuracy"] <= 1.0
  assert glob.glob(str(tmp_path / "runs" / "shards" / "eval" / "**" / "step_2.json"), recursive=True)
