"""Process setup shared by the entry points: keep TensorFlow off accelerators, and keep logs quiet.

By default the console shows vlfusion's own lines: TensorFlow's C++ logs (oneDNN notices included),
XLA/libtpu/gRPC chatter and tfds's "Downloading and preparing dataset Unknown size ..." lines are hidden.
`--verbose` shows them all.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

_VERBOSE = flags.DEFINE_bool(
    "verbose", False,
    "Show TensorFlow, XLA, libtpu and tfds logs (hidden by default so the console shows the run).")

# Environment defaults that silence native libraries; a value the user set is kept.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow C++ (oneDNN notices, CUDA probing).
    "TPU_STDERR_LOG_LEVEL": "3",  # libtpu.
    "TPU_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}


def initialize(verbose: bool | None = None) -> None:
  """Hides accelerators from TensorFlow (the input pipeline runs on CPU) and, unless `verbose` (default:
  the `--verbose` flag), quiets the libraries' logs. Call before JAX or TensorFlow is imported."""
  if verbose is None:
    verbose = _VERBOSE.value if flags.FLAGS.is_parsed() else False
  if not verbose:
    for name, value in QUIET_ENVIRONMENT.items():
      os.environ.setdefault(name, value)
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  if not verbose:
    quiet_tfds()


def quiet_tfds() -> None:
  """tfds prints its download/prepare lines and progress bars to stdout: route the lines to the log."""
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  builder = tfds.core.DatasetBuilder
  builder._log_download_bytes = lambda self: logging.info("Preparing %s in %s.", self.name, self.data_dir)
  builder._log_download_done = lambda self: logging.info("Prepared %s in %s.", self.name, self.data_dir)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), with an override of a config field
  that does not exist named as a flags error (`--config.model.nonexistent: config.model has no field
  'nonexistent'; its fields: ...`) instead of ml_collections' bare AttributeError."""
  from absl import app

  try:
    return app.parse_flags_with_usage(argv)  # prints absl's own errors and exits 1.
  except (AttributeError, KeyError):
    message = unknown_override(argv)
    if message is None:
      raise
  sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
  sys.exit(1)


def unknown_override(argv: list[str], flag: str = "config") -> str | None:
  """The first `--<flag>.a.b=` in `argv` that names no field of the `--<flag>=path[:arg]` config, as a
  message listing the valid fields at the level where it went wrong; None when all exist."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
  if spec is None:
    return None
  from vlfusion.configuration import load_config_file  # only on an error: it imports the config file.

  config = load_config_file(spec)
  for arg in argv:
    if not arg.startswith(f"--{flag}."):
      continue
    dotted = arg[len(flag) + 3:].split("=", 1)[0]
    node, walked = config, flag
    for part in dotted.split("."):
      if not hasattr(node, "keys") or part not in node:
        fields = sorted(node.keys()) if hasattr(node, "keys") else []
        return (f"--{flag}.{dotted}: {walked} has no field {part!r}"
                + (f"; its fields: {', '.join(fields)}" if fields else f" ({walked} is a value)"))
      node, walked = node[part], f"{walked}.{part}"
  return None
