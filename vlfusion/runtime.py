"""Process setup shared by the entry points: quiet TensorFlow, keep it off accelerators."""

from __future__ import annotations

import os


def initialize() -> None:
  """Hides accelerators from TensorFlow (the input pipeline runs on CPU) and quiets its logs."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
