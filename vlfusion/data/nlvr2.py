"""NLVR2 (Suhr et al., 2019) from its release on disk, as a tfds builder (`nlvr2/images`).

Each line of the release's `train.json`, `dev.json` and `test1.json` (test-P) is a JSON object with an
`identifier` ("dev-850-0-1"), a `sentence` about two images and a `label` ("True"/"False"). The two images
are named from the identifier without its last part: `dev-850-0-img0.png` (left) and `...-img1.png`
(right), in `images/<dir>/` or `<dir>/` of manual_dir, where <dir> is train (with the line's
`directory` as a subfolder when given), dev or test1. Splits: train, validation (dev), test (test-P).

Records carry the shapes-world pair fields, so the pipeline's `pairs` objective and evaluation read
both alike: `pair_statement`, `pair_label` (1 = true), `image_bytes` (left) and `pair_image_bytes`
(right). A line whose image is missing or cannot be decoded, or whose sentence is blank, is skipped and
counted; a sentence over `MAX_TEXT_CHARS` is cut (counted); an identifier listed twice in a file is
refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vlfusion.data import local_files
from vlfusion.data.local_datasets import LOCAL_CONFIGS, MAX_TEXT_CHARS, Example, LocalBuilder
from vlfusion.data.local_files import DataFileError, field

SPLITS = {"train": "train", "validation": "dev", "test": "test1"}
_LABELS = {"true": 1, "false": 0}


def image_names(identifier: str) -> tuple[str, str]:
  """The left and right image file names of an NLVR2 example ("dev-850-0-1" -> dev-850-0-img0.png, ...)."""
  stem = identifier.rsplit("-", 1)[0]
  return f"{stem}-img0.png", f"{stem}-img1.png"


class Nlvr2(LocalBuilder):
  """NLVR2 statements about pairs of images, true or false."""

  name = "vlf_nlvr2"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "train, dev and test-P statements with both images.",
                   "1.1.0": f"Blank sentences skipped, sentences over {MAX_TEXT_CHARS} characters cut; "
                            "a repeated identifier refused."}
  BUILDER_CONFIGS = [c for c in LOCAL_CONFIGS if c.source == "images"]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds the release's train.json, dev.json, test1.json (or
  under data/) and the images under images/{train/<directory>,dev,test1}/ (or {train,dev,test1}/)."""

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({
            "identifier": f.Text(), "pair_statement": f.Text(), "pair_label": np.int32,
            "image_bytes": f.Tensor(shape=(), dtype=np.object_),
            "pair_image_bytes": f.Tensor(shape=(), dtype=np.object_)}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    files = {split: self.find_release_file(manual_dir, f"{name}.json") for split, name in SPLITS.items()}
    if files["validation"] is None:
      raise DataFileError(f"{self.name}: no dev.json in {manual_dir} or {manual_dir}/data")
    return {split: self._generate(split, SPLITS[split], path) for split, path in files.items() if path}

  def annotation_files(self, manual_dir: str) -> list[str]:
    """The release's JSON lines files present (the prepared dataset's fingerprint covers them)."""
    found = (self.find_release_file(manual_dir, f"{name}.json") for name in SPLITS.values())
    return [os.path.relpath(path, manual_dir) for path in found if path]

  def _image_dir(self, release_split: str, record: dict[str, Any]) -> str:
    images = os.path.join(self._manual_dir, "images")
    root = os.path.join(images if local_files.is_dir(images) else self._manual_dir, release_split)
    return os.path.join(root, str(record["directory"])) if "directory" in record else root

  def _generate(self, split: str, release_split: str, path: str) -> Iterator[Example]:
    generated, first = 0, {}
    for number, record in local_files.read_jsonl(path, f"NLVR2 {release_split} file"):
      where = f"{path}: line {number}"
      identifier = field(record, "identifier", where, str)
      if identifier in first:
        raise DataFileError(f"{where}: identifier {identifier!r} is listed twice (first at line "
                            f"{first[identifier]}); remove one of them")
      first[identifier] = number
      sentence = field(record, "sentence", where, str)
      label = field(record, "label", where, (str, bool))
      label = str(label).lower()
      if label not in _LABELS:
        raise DataFileError(f"{where}: label {record['label']!r} is neither 'True' nor 'False'")
      sentence = self._texts(split, [sentence], f"{where}: {identifier}")
      if sentence is None:
        continue
      directory = self._image_dir(release_split, record)
      left, right = (self._media(split, identifier, os.path.join(directory, name))
                     for name in image_names(identifier))
      if left is None or right is None:
        continue
      generated += 1
      yield identifier, {"identifier": identifier, "pair_statement": sentence[0],
                         "pair_label": np.int32(_LABELS[label]), "image_bytes": left["image_bytes"],
                         "pair_image_bytes": right["image_bytes"]}
    self._finish(split, generated, path)


def make_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder for `nlvr2` or `nlvr2/images` under `data_dir`."""
  config = name.partition("/")[2] or "images"
  if config != "images":
    raise ValueError(f"nlvr2 has only the 'images' config, not {config!r}")
  return Nlvr2(data_dir=data_dir, config=config)
