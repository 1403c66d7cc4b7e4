"""Reading the files of real datasets from disk: JSON, JSONL, images, and region features.

Every error names the file and, where there is one, the line or record at fault. Paths may be local or
remote (`gs://...`): every file is listed, stat-ed and opened through `etils.epath`. Images that cannot be
read are not errors: the builders skip them and count them in a `SkipCounter`, which logs each skip and
ends up in the dataset's metadata.

Region features come in the two formats that bottom-up-attention style extractors write, joined to
captions and questions by `image_key`:

- TSV, one image per line, tab-separated fields `TSV_FIELDS`; `boxes` and `features` are base64 of
  float32 arrays ([num_boxes, 4] in pixels, [num_boxes, D]), `objects_id` and `attrs_id` base64 of int64,
  `objects_conf` and `attrs_conf` base64 of float32.
- one `.npz` file per image named by its key, with `features` [N, D], `boxes` [N, 4] in pixels, `img_h`,
  `img_w`, and optionally `objects_id` [N].
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath

TSV_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf",
              "num_boxes", "boxes", "features")
_MAX_LOGGED_SKIPS = 20


class DataFileError(ValueError):
  """A dataset file that is missing or malformed; the message names the file and line or record."""


def is_remote(path: str) -> bool:
  return "://" in os.fspath(path)


def is_file(path: str) -> bool:
  return epath.Path(path).is_file()


def is_dir(path: str) -> bool:
  return epath.Path(path).is_dir()


def open_file(path: str, mode: str = "r"):
  """`path` opened for reading, text as UTF-8."""
  return epath.Path(path).open(mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def file_stat(path: str) -> dict[str, int]:
  """{"size", "mtime_ns"} of a file (remote stores give the time in whole seconds)."""
  if is_remote(path):
    stat = epath.Path(path).stat()
    return {"size": int(stat.length), "mtime_ns": int(stat.mtime) * 1_000_000_000}
  stat = os.stat(path)
  return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def files_under(directory: str, suffixes: tuple[str, ...]) -> list[str]:
  """The files under `directory` (recursively) whose names end with one of `suffixes`, sorted; hidden
  files and folders left out."""
  found = []
  for root, dirs, names in epath.Path(directory).walk():
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    found += [os.path.join(os.fspath(root), n) for n in names
              if n.endswith(suffixes) and not n.startswith(".")]
  return sorted(found)


def require_file(path: str, what: str) -> str:
  """`path`, or a `DataFileError` saying which file of which dataset is missing."""
  if not is_file(path):
    raise DataFileError(f"{what} not found: {path}")
  return path


def _utf8_error(path: str, data: bytes, error: UnicodeDecodeError) -> DataFileError:
  line = data.count(b"\n", 0, error.start) + 1
  return DataFileError(f"{path}: byte {error.start} (line {line}): not UTF-8 ({error.reason}, "
                       f"{data[error.start:error.end]!r}); re-encode the file as UTF-8")


def read_json(path: str, what: str) -> Any:
  """The parsed JSON file at `path`; a syntax error names its line and column, a byte that is not UTF-8
  its offset and line."""
  require_file(path, what)
  with open_file(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _utf8_error(path, data, e) from e
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFileError(f"{path}: line {e.lineno} column {e.colno}: malformed JSON ({e.msg})") from e


def read_jsonl(path: str, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-empty line of a JSON-lines file; a line that is not UTF-8 or not
  a JSON object raises naming its number."""
  require_file(path, what)
  with open_file(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: line {number}: not UTF-8 at byte {e.start} of the line "
                            f"({e.reason}, {raw[e.start:e.end]!r}); re-encode the file as UTF-8") from e
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: line {number}: malformed JSON ({e.msg})") from e
      if not isinstance(record, dict):
        raise DataFileError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
      yield number, record


def field(record: dict[str, Any], name: str, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
  """`record[name]`, or a `DataFileError` naming `where` (file and line or record) and the field."""
  if name not in record:
    raise DataFileError(f"{where}: missing field {name!r}")
  value = record[name]
  if kind is not None and not isinstance(value, kind):
    raise DataFileError(f"{where}: field {name!r} is {type(value).__name__}, not the expected type")
  return value


def image_key(value: Any) -> str:
  """The join key of an image id or file name: the number at its end (COCO_val2014_000000000042.jpg and
  42 are both '42'), or the file name without extension when it has no number."""
  stem = os.path.splitext(os.path.basename(str(value)))[0]
  match = re.search(r"(\d+)$", stem)
  return str(int(match.group(1))) if match else stem


@dataclasses.dataclass
class SkipCounter:
  """Counts, logs and describes what a builder left out, by split and reason: examples skipped whole
  (`skip`), and texts of kept examples dropped or cut (`amend`). Every one is named in the log (the first
  `_MAX_LOGGED_SKIPS` of a reason as warnings, the rest at INFO level so that a damaged file does not
  bury the log) and counted in the dataset's metadata."""

  dataset: str
  counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  amended: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  amended_examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def skip(self, split: str, reason: str, detail: str) -> None:
    self._count(self.counts, self.examples, split, reason, detail, "skipped an example")

  def amend(self, split: str, reason: str, detail: str) -> None:
    self._count(self.amended, self.amended_examples, split, reason, detail, "changed an example")

  def _count(self, counts: dict[str, dict[str, int]], examples: dict[str, list[str]], split: str, reason: str,
             detail: str, what: str) -> None:
    by_reason = counts.setdefault(split, {})
    by_reason[reason] = by_reason.get(reason, 0) + 1
    logged = examples.setdefault(reason, [])
    if len(logged) < _MAX_LOGGED_SKIPS:
      logged.append(detail)
      logging.warning("%s/%s: %s (%s): %s", self.dataset, split, what, reason, detail)
    else:
      logging.info("%s/%s: %s (%s): %s", self.dataset, split, what, reason, detail)

  def total(self, split: str | None = None) -> int:
    splits = [split] if split else list(self.counts)
    return sum(sum(self.counts.get(s, {}).values()) for s in splits)

  def as_metadata(self) -> dict[str, Any]:
    return {"skipped": self.counts, "skipped_examples": self.examples, "amended": self.amended,
            "amended_examples": self.amended_examples}


def relative_name(path: str, root: str) -> str:
  """`path` relative to the folder `root` when it lies under it, else `path` as given (absolute or
  remote)."""
  prefix = root.rstrip("/") + "/"
  return path[len(prefix):] if path.startswith(prefix) else path


def decodes(data: bytes) -> bool:
  """Whether `data` is an image PIL decodes whole."""
  from PIL import Image

  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
  except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError) for bad files.
    return False
  return True


def read_image(path: str) -> tuple[bytes | None, str]:
  """(encoded bytes, "") of a readable image file, or (None, reason) when it is missing or cannot be
  decoded. The bytes are the file's own: decoding here only proves that decoding works."""
  try:  # opened straight away: one request per image on remote storage, not a stat and then a read.
    with open_file(path, "rb") as f:
      data = f.read()
  except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
    return None, "missing_image"
  return (data, "") if decodes(data) else (None, "corrupt_image")


def decode_image(data: bytes, size: int) -> np.ndarray:
  """uint8 [size, size, 3] RGB pixels of an encoded image, stretched to a square (see `images`)."""
  from vlfusion.data import images

  return images.resize_square(images.open_image(data, size), size)


@dataclasses.dataclass
class Regions:
  """Detector outputs for one image: features [N, D], boxes [N, 4] normalised to [0, 1], labels [N]."""

  features: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray


def _b64_array(text: str, dtype: Any, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
  try:
    raw = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as e:
    raise DataFileError(f"{where}: field {name!r} is not valid base64") from e
  itemsize = np.dtype(dtype).itemsize
  count = int(np.prod([d for d in shape if d != -1]))
  if len(raw) % itemsize or (count and len(raw) // itemsize % count):
    raise DataFileError(f"{where}: field {name!r} has {len(raw)} bytes, which is not a whole number of "
                        f"{np.dtype(dtype).name} arrays of shape {shape}")
  return np.frombuffer(raw, dtype).reshape(shape)


def _normalise_boxes(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
  scale = np.array([width, height, width, height], np.float32)
  return np.clip(boxes.astype(np.float32) / scale, 0.0, 1.0)


class RegionStore:
  """Region features by image key, from TSV files and .npz files, read lazily.

  The TSV files are indexed once (image key -> file and byte offset) without decoding them, and a line is
  decoded only when its image is asked for, so features larger than memory are fine.
  """

  def __init__(self, directory: str, feature_dim: int):
    if not is_dir(directory):
      raise DataFileError(f"region feature directory not found: {directory}")
    self.directory = directory
    self.feature_dim = feature_dim
    self._tsv: dict[str, tuple[str, int, int]] = {}
    self._npz: dict[str, str] = {}
    csv.field_size_limit(sys.maxsize)
    for path in files_under(directory, (".tsv",)):
      with open_file(path, "rb") as f:
        offset, number = 0, 0
        for line in f:
          number += 1
          if line.strip():
            self._tsv.setdefault(image_key(line.split(b"\t", 1)[0].decode()), (path, number, offset))
          offset += len(line)
    for path in files_under(directory, (".npz",)):
      self._npz.setdefault(image_key(path), path)
    if not self._tsv and not self._npz:
      raise DataFileError(f"no region features (*.tsv or *.npz) under {directory}")

  def __len__(self) -> int:
    return len(set(self._tsv) | set(self._npz))

  def get(self, key: str) -> Regions | None:
    """The regions of image `key`, or None when there are none; malformed records raise."""
    if key in self._tsv:
      return self._read_tsv(*self._tsv[key])
    if key in self._npz:
      return self._read_npz(self._npz[key])
    return None

  def _read_tsv(self, path: str, number: int, offset: int) -> Regions:
    where = f"{path}: line {number}"
    with open_file(path, "rb") as f:
      f.seek(offset)
      row = next(csv.reader([f.readline().decode("utf-8")], delimiter="\t"))
    if len(row) != len(TSV_FIELDS):
      raise DataFileError(f"{where}: {len(row)} tab-separated fields, expected {len(TSV_FIELDS)} "
                          f"({', '.join(TSV_FIELDS)})")
    item = dict(zip(TSV_FIELDS, row, strict=True))
    try:
      n, height, width = int(item["num_boxes"]), float(item["img_h"]), float(item["img_w"])
    except ValueError as e:
      raise DataFileError(f"{where}: num_boxes, img_h and img_w must be numbers ({e})") from e
    boxes = _b64_array(item["boxes"], np.float32, (n, 4), where, "boxes")
    features = _b64_array(item["features"], np.float32, (n, -1), where, "features")
    labels = _b64_array(item["objects_id"], np.int64, (n,), where, "objects_id")
    return self._check(Regions(features, _normalise_boxes(boxes, height, width), labels.astype(np.int32)),
                       where)

  def _read_npz(self, path: str) -> Regions:
    try:
      with open_file(path, "rb") as f, np.load(f) as z:
        features, boxes = z["features"], z["boxes"]
        height, width = float(z["img_h"]), float(z["img_w"])
        labels = z["objects_id"] if "objects_id" in z else np.zeros(len(features), np.int64)
    except KeyError as e:
      raise DataFileError(f"{path}: missing array {e} (needs features, boxes, img_h, img_w)") from e
    except Exception as e:  # a truncated or non-zip file.
      raise DataFileError(f"{path}: unreadable .npz file ({e})") from e
    if boxes.shape != (len(features), 4) or len(labels) != len(features):
      raise DataFileError(f"{path}: boxes {boxes.shape} and objects_id {labels.shape} do not match "
                          f"features {features.shape}")
    return self._check(Regions(features.astype(np.float32), _normalise_boxes(boxes, height, width),
                               np.asarray(labels, np.int32)), path)

  def _check(self, regions: Regions, where: str) -> Regions:
    if regions.features.ndim != 2 or regions.features.shape[1] != self.feature_dim:
      raise DataFileError(f"{where}: features of shape {regions.features.shape}, expected "
                          f"[num_boxes, {self.feature_dim}]")
    return regions
