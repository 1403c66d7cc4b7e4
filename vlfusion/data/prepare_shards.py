"""Prepares image-text shards (`image_text_shards/images`) and prints what was kept and what was not.

  python -m vlfusion.data.prepare_shards --manual_dir=cc3m --data_dir=tfds

prints one JSON object: the prepared folder, the examples of each split, and the samples skipped and the
captions changed, by split and reason (`info.metadata["skipped"]` / `["amended"]`, the first of each
reason named in `skipped_examples`). Training with the same `config.data.manual_dir`, `data_dir`,
`shards` and `shards_validation_share` reads this dataset without preparing it again.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlfusion import runtime


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m vlfusion.data.prepare_shards", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manual_dir", required=True, help="the img2dataset output folder "
                      "(config.data.manual_dir)")
  parser.add_argument("--data_dir", default=None, help="where the prepared dataset goes "
                      "(config.data.data_dir; default: tfds's)")
  parser.add_argument("--shards", default="", help="config.data.shards (default: the folder's *.tar, "
                      "else its *.parquet)")
  parser.add_argument("--validation_share", type=float, default=None,
                      help="config.data.shards_validation_share (default: 0.01)")
  parser.add_argument("--verbose", action="store_true", help="show TensorFlow and tfds logs")
  args = parser.parse_args(argv)
  runtime.initialize(verbose=args.verbose)
  from absl import logging

  from vlfusion.data import local_datasets, shards  # after runtime setup: imports TensorFlow.

  logging.set_verbosity(logging.WARNING)
  share = shards.DEFAULT_VALIDATION_SHARE if args.validation_share is None else args.validation_share
  try:
    shards.resolve_shards(args.shards, args.manual_dir)  # names a missing folder or shard before tfds.
    builder = shards.make_builder("image_text_shards/images", args.data_dir, args.shards, share)
    local_datasets.prepare(builder, args.manual_dir)
    builder = shards.make_builder("image_text_shards/images", args.data_dir, args.shards, share)
    changes = local_datasets.input_changes(builder, args.manual_dir)
  except shards.DataFileError as e:  # a missing folder or shard, a malformed shard: the message says which.
    sys.exit(f"error: {e}")
  if changes:
    sys.exit("; ".join(changes) + f". Delete {builder.data_dir} or choose another --data_dir.")
  metadata = builder.info.metadata
  print(json.dumps({"prepared": str(builder.data_dir),
                    "examples": {name: split.num_examples for name, split in builder.info.splits.items()},
                    "skipped": metadata.get("skipped", {}), "amended": metadata.get("amended", {}),
                    "skipped_examples": metadata.get("skipped_examples", {})}, indent=2))


if __name__ == "__main__":
  main(sys.argv[1:])
