"""Image-text shards made by img2dataset, as a tfds builder (`image_text_shards/images`).

img2dataset writes a corpus (CC3M, CC12M, SBU, LAION subsets) as numbered shards in one folder, in one of
two formats, both read here:

- WebDataset tar files (`00000.tar`): per sample `<key>.jpg` (or `.jpeg`, `.png`, `.webp`), `<key>.txt`
  (the caption) and `<key>.json` (metadata, not used), the members of a sample next to each other.
  A `.tar.gz` / `.tgz` shard is read too.
- parquet files (`00000.parquet`, `--output_format=parquet`): a row per sample with `key`, `caption` and
  the encoded image in a column named by its format (`jpg`, `png`, `webp`); rows img2dataset failed to
  download have a null image and their `status` / `error_message`.

`config.data.shards` names the shards: a comma-separated list of paths or glob patterns (`*.tar`,
`part-??/*.parquet`) and WebDataset brace ranges (`{00000..00331}.tar`), relative to
`config.data.manual_dir` unless absolute or remote (`gs://...`). Empty, it is every `*.tar` (and
`.tar.gz`, `.tgz`) directly in manual_dir, or, when there is none, every `*.parquet` there: beside the
tar files of a WebDataset output img2dataset writes a parquet file of metadata per shard, which holds no
images. A parquet shard without an image column is refused naming its columns.

Shards are read one at a time, a tar member or a parquet row group at a time, so memory does not grow
with the corpus. The records are those of `image_text_jsonl/images` (`image_id` = the sample's key,
`captions` = [its caption], `image_bytes` = the image file's own bytes), so every pretraining objective
and mixture reads them unchanged.

Splits: the sample's key decides, not its shard or its place. A sample is in `validation` when the first
8 bytes of SHA-256 of its key, read as a fraction of 2**64, are below
`config.data.shards_validation_share` (1% by default), else in `train`; 0 makes no validation split. So a
sample stays in its split whichever shards are listed and in which order, and a shard copied under two
names puts its samples in the same split twice, never in both.

Bad samples are skipped, named in the log and counted in `info.metadata["skipped"]` by split and reason,
as in the other local datasets: `missing_image` (a key with a caption but no image member, a null parquet
image), `corrupt_image` (bytes that do not decode), `no_text` (no `.txt` member or a null or blank
caption), `undecodable_text` (a caption that is not UTF-8), and `unreadable_shard` (a shard that cannot
be opened or breaks off, e.g. a truncated download: the samples before the break are kept, the shard's
rest counted once, naming how far it was read). A key that appears twice in one shard is refused naming
both places.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlfusion.data import local_files
from vlfusion.data.local_datasets import Example, LocalBuilder, LocalConfig
from vlfusion.data.local_files import DataFileError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the first present is a sample's image.
DEFAULT_VALIDATION_SHARE = 0.01
_GLOB_CHARS = re.compile(r"[*?\[]")
_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


class ShardReadError(DataFileError):
  """A shard that cannot be opened, or breaks off while it is read (the message says how far)."""


@dataclasses.dataclass
class Sample:
  """One sample of a shard as stored: `text` None when it has none, `text_error` when it is not UTF-8,
  `image` None when it has none; `where` names the shard and the key (and the status img2dataset gave)."""

  key: str
  where: str
  image: bytes | None
  text: str | None
  text_error: str = ""


def in_validation(key: str, share: float) -> bool:
  """Whether sample `key` belongs to the validation split at `share` (see the module docstring)."""
  if share <= 0:
    return False
  head = hashlib.sha256(key.encode("utf-8")).digest()[:8]
  return int.from_bytes(head, "big") / 2.0**64 < share


def _expand_braces(entry: str) -> list[str]:
  """`a{08..10}.tar` -> [a08.tar, a09.tar, a10.tar] (numbers zero-padded to the first one's width)."""
  match = _BRACE_RANGE.search(entry)
  if not match:
    return [entry]
  start, end = match.group(1), match.group(2)
  if int(end) < int(start):
    raise DataFileError(f"config.data.shards: range {match.group(0)} in {entry!r} runs backwards")
  head, tail = entry[:match.start()], entry[match.end():]
  return [expanded for n in range(int(start), int(end) + 1)
          for expanded in _expand_braces(f"{head}{n:0{len(start)}d}{tail}")]


def _absolute(path: str, manual_dir: str) -> str:
  return path if local_files.is_remote(path) or os.path.isabs(path) else os.path.join(manual_dir, path)


def _glob(pattern: str) -> list[str]:
  """The files matching `pattern` (local or remote), sorted: the folder before the first component with
  a wildcard is listed with the rest as its pattern."""
  parts = pattern.split("/")
  first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
  base = "/".join(parts[:first]) or "/"
  return sorted(os.fspath(p) for p in epath.Path(base).glob("/".join(parts[first:])) if p.is_file())


def _default_shards(manual_dir: str) -> list[str]:
  for suffixes in (TAR_SUFFIXES, PARQUET_SUFFIXES):
    found = sorted({path for suffix in suffixes for path in _glob(os.path.join(manual_dir, f"*{suffix}"))})
    if found:
      return found
  raise DataFileError(f"no shards in {manual_dir}: no *.tar, *.tar.gz, *.tgz or *.parquet file there; "
                      "set config.data.shards to their paths or a pattern")


def resolve_shards(spec: str, manual_dir: str) -> list[str]:
  """The shard files `config.data.shards=spec` names (see the module docstring), in the order given, each
  pattern's matches sorted; a pattern matching nothing, a missing file, a file of an unknown kind or one
  named twice is a `DataFileError` naming it."""
  if not spec.strip():
    return _default_shards(manual_dir)
  shards: list[str] = []
  for entry in (e.strip() for e in spec.split(",")):
    if not entry:
      continue
    for expanded in _expand_braces(entry):
      path = _absolute(expanded, manual_dir)
      if _GLOB_CHARS.search(expanded):
        matched = _glob(path)
        if not matched:
          raise DataFileError(f"config.data.shards: {expanded!r} matches no file (looked for {path})")
        shards += matched
      elif not local_files.is_file(path):
        raise DataFileError(f"config.data.shards: shard {expanded!r} not found ({path})")
      else:
        shards.append(path)
  seen = set()
  for path in shards:
    if not path.endswith(TAR_SUFFIXES + PARQUET_SUFFIXES):
      raise DataFileError(f"config.data.shards: {path} is neither a tar shard ({', '.join(TAR_SUFFIXES)}) "
                          "nor a parquet shard (.parquet)")
    if path in seen:
      raise DataFileError(f"config.data.shards: {path} is named twice; its samples would be read twice")
    seen.add(path)
  if not shards:
    raise DataFileError(f"config.data.shards={spec!r} names no shard")
  return shards


def _member_key(name: str) -> tuple[str, str]:
  """(key, extension) of a tar member as WebDataset splits it: the extension is everything after the
  first dot of the file name, lowercased."""
  folder, base = os.path.split(name)
  stem, _, extension = base.partition(".")
  return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _sample(key: str, where: str, parts: dict[str, bytes]) -> Sample:
  image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
  if "txt" not in parts:
    return Sample(key, where, image, None)
  try:
    return Sample(key, where, image, parts["txt"].decode("utf-8"))
  except UnicodeDecodeError as e:
    return Sample(key, where, image, None, f"caption not UTF-8 at byte {e.start} ({e.reason})")


def tar_samples(path: str, wanted: Callable[[str], bool]) -> Iterator[Sample]:
  """The samples of a WebDataset tar shard whose key is `wanted`, in shard order; the members of other
  samples are passed over without reading their data. Hidden members (`._x.jpg`) and folders are
  ignored, and so are extensions other than the image's, `txt` and `json`."""
  read = 0
  try:
    with local_files.open_file(path, "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
      first: dict[str, str] = {}  # key -> its first member, this shard only (bounded by the shard).
      key, parts, keep = None, {}, False
      for member in tar:
        if not member.isfile() or os.path.basename(member.name).startswith("."):
          continue
        member_key, extension = _member_key(member.name)
        if member_key != key:
          if keep:
            read += 1
            yield _sample(key, f"{path}: sample {key}", parts)
          if member_key in first:
            raise DataFileError(f"{path}: key {member_key!r} appears twice (member {first[member_key]!r} "
                                f"and, apart from it, {member.name!r}); a shard holds each sample once")
          first[member_key] = member.name
          key, parts, keep = member_key, {}, wanted(member_key)
        if keep and extension in (*IMAGE_EXTENSIONS, "txt"):
          if extension in parts:
            raise DataFileError(f"{path}: member {member.name!r} appears twice")
          parts[extension] = tar.extractfile(member).read()
      # tarfile ends a file cut at a member boundary without a word: only the zero block that closes
      # an archive tells a whole shard from one that broke off there.
      tar.fileobj.seek(tar.offset)
      closed = tar.fileobj.read(tarfile.BLOCKSIZE) == tarfile.NUL * tarfile.BLOCKSIZE
      if keep and closed:
        read += 1
        yield _sample(key, f"{path}: sample {key}", parts)
      if not closed:
        raise EOFError("the file ends without the blocks that close a tar archive (truncated?)")
  except DataFileError:
    raise
  except (tarfile.TarError, EOFError, OSError, ValueError) as e:
    raise ShardReadError(f"{path}: unreadable tar shard after {read} samples ({type(e).__name__}: "
                         f"{e})") from e


def _parquet_columns(path: str, names: list[str]) -> tuple[str | None, str, str]:
  """(key column or None, caption column, image column) of an img2dataset parquet shard."""
  image = next((n for n in IMAGE_EXTENSIONS if n in names), None)
  if image is None:
    raise DataFileError(f"{path}: no image column ({'/'.join(IMAGE_EXTENSIONS)}) among its columns {names}; "
                        "img2dataset writes a parquet of metadata beside each tar shard of a WebDataset "
                        "output: read the .tar shards instead")
  caption = next((n for n in ("caption", "txt") if n in names), None)
  if caption is None:
    raise DataFileError(f"{path}: no caption column ('caption' or 'txt') among its columns {names}")
  return ("key" if "key" in names else None), caption, image


def _status(table: dict[str, list], columns: list[str], j: int) -> str:
  """` (status 'failed_to_download'; error_message '...')` of a row img2dataset did not download, else ''."""
  values = {n: table[n][j] for n in columns}
  if values.get("status") in (None, "success") and not values.get("error_message"):
    return ""
  return " (" + "; ".join(f"{n} {v!r}" for n, v in values.items() if v) + ")"


def _row_sample(key: str, where: str, caption: Any, image: bytes | None) -> Sample:
  """A parquet row as a `Sample`: a caption column may hold strings or UTF-8 bytes."""
  if isinstance(caption, bytes):
    try:
      caption = caption.decode("utf-8")
    except UnicodeDecodeError as e:
      return Sample(key, where, image, None, f"caption not UTF-8 at byte {e.start} ({e.reason})")
  return Sample(key, where, image, caption if isinstance(caption, str) else None)


def parquet_samples(path: str, wanted: Callable[[str], bool]) -> Iterator[Sample]:
  """The samples of an img2dataset parquet shard whose key is `wanted`, a row group at a time: the keys
  of a group are read first, the captions and images only of a group with a wanted key. Without a `key`
  column a row's key is `<shard name>_<row>`."""
  import pyarrow.parquet as pq

  stem = os.path.basename(path).split(".")[0]
  read = 0
  try:
    with local_files.open_file(path, "rb") as f:
      shard = pq.ParquetFile(f)
      names = shard.schema_arrow.names
      key_column, caption, image = _parquet_columns(path, names)
      extra = [n for n in ("status", "error_message") if n in names]
      first: dict[str, int] = {}
      row = 0
      for group in range(shard.num_row_groups):
        rows = shard.metadata.row_group(group).num_rows
        if key_column:
          keys = [str(k) for k in shard.read_row_group(group, columns=[key_column]).column(0).to_pylist()]
        else:
          keys = [f"{stem}_{row + i}" for i in range(rows)]
        for i, key in enumerate(keys):
          if key in first:
            raise DataFileError(f"{path}: key {key!r} appears twice (rows {first[key]} and {row + i}); "
                                "a shard holds each sample once")
          first[key] = row + i
        chosen = [i for i, key in enumerate(keys) if wanted(key)]
        if chosen:
          table = shard.read_row_group(group, columns=[caption, image, *extra]).take(chosen).to_pydict()
          for j, i in enumerate(chosen):
            where = f"{path}: row {row + i}, sample {keys[i]}{_status(table, extra, j)}"
            read += 1
            yield _row_sample(keys[i], where, table[caption][j], table[image][j])
        row += rows
  except DataFileError:
    raise
  except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file.
    raise ShardReadError(f"{path}: unreadable parquet shard after {read} samples ({type(e).__name__}: "
                         f"{e})") from e


def read_samples(path: str, wanted: Callable[[str], bool]) -> Iterator[Sample]:
  """The `wanted` samples of one shard, by its kind."""
  return (tar_samples if path.endswith(TAR_SUFFIXES) else parquet_samples)(path, wanted)


class ImageTextShards(LocalBuilder):
  """Image-text pairs from img2dataset shards (see the module docstring)."""

  name = "vlf_image_text_shards"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "WebDataset tar and img2dataset parquet shards; split by key hash."}
  BUILDER_CONFIGS = [LocalConfig(name="images", description="Encoded image bytes.", source="images")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir is an img2dataset output folder: 00000.tar, 00001.tar, ...
  (output_format=webdataset) or 00000.parquet, ... (output_format=parquet); config.data.shards picks
  other files or patterns."""

  def __init__(self, *, shards: str = "", validation_share: float = DEFAULT_VALIDATION_SHARE, **kwargs: Any):
    if not 0.0 <= validation_share < 1.0:
      raise DataFileError(f"config.data.shards_validation_share={validation_share} must be in [0, 1)")
    self.shards, self.validation_share = shards, float(validation_share)
    super().__init__(**kwargs)
    self._original_state.update(shards=shards, validation_share=validation_share)  # for pickling.

  def annotation_files(self, manual_dir: str) -> list[str]:
    return []

  def data_files(self, manual_dir: str) -> list[str]:
    return resolve_shards(self.shards, manual_dir)

  def settings(self) -> dict[str, Any]:
    return {"shards_validation_share": self.validation_share}

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return self.dataset_info_from_configs(
        features=f.FeaturesDict({"image_id": f.Text(), "captions": f.Sequence(f.Text()),
                                 "image_bytes": f.Tensor(shape=(), dtype=np.object_)}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager.manual_dir)
    shards = resolve_shards(self.shards, manual_dir)
    splits = ("train", "validation") if self.validation_share > 0 else ("train",)
    return {split: self._generate(split, shards) for split in splits}

  def _generate(self, split: str, shards: list[str]) -> Iterator[Example]:
    validation, generated = split == "validation", 0
    wanted = lambda key: in_validation(key, self.validation_share) == validation
    for path in shards:
      name = local_files.relative_name(path, self._manual_dir)
      try:
        for sample in read_samples(path, wanted):
          example = self._example(split, sample)
          if example is not None:
            generated += 1
            yield f"{name}:{sample.key}", example
      except ShardReadError as e:
        self._skips.skip(split, "unreadable_shard", str(e))
    where = (f"{len(shards)} shards ({shards[0]}, ...) with config.data.shards_validation_share="
             f"{self.validation_share}")
    self._finish(split, generated, where)

  def _example(self, split: str, sample: Sample) -> dict[str, Any] | None:
    """The record of `sample`, or None (counted) when it has no usable caption or image."""
    if sample.text_error:
      self._skips.skip(split, "undecodable_text", f"{sample.where}: {sample.text_error}")
      return None
    if sample.text is None:
      self._skips.skip(split, "no_text", f"{sample.where}: no caption")
      return None
    captions = self._texts(split, [sample.text], sample.where)
    if captions is None:
      return None
    if sample.image is None:
      self._skips.skip(split, "missing_image", f"{sample.where}: no image")
      return None
    if not local_files.decodes(sample.image):
      self._skips.skip(split, "corrupt_image", sample.where)
      return None
    return {"image_id": sample.key, "captions": captions, "image_bytes": sample.image}


def make_builder(name: str, data_dir: str | None, shards: str = "",
                 validation_share: float = DEFAULT_VALIDATION_SHARE) -> ImageTextShards:
  """The builder for `image_text_shards/images` (or `image_text_shards`) under `data_dir`."""
  config = name.partition("/")[2] or "images"
  return ImageTextShards(data_dir=data_dir, config=config, shards=shards, validation_share=validation_share)
