"""Process setup shared by the entry points: keep TensorFlow off accelerators, and keep logs quiet.

By default the console shows vlfusion's own lines: TensorFlow's C++ logs (oneDNN notices included),
XLA/libtpu/gRPC chatter and tfds's "Downloading and preparing dataset Unknown size ..." lines are hidden.
`--verbose` shows them all.
"""

from __future__ import annotations

import os

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
