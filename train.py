"""Pretrains a fusion model.

  python train.py --config=configs/pretrain/co_attention.py:tiny --workdir=/tmp/vlf
  python train.py --config=configs/pretrain/single_stream.py:tiny --workdir=/tmp/vlf \
      --config.model.fusion_layers=3 --config.train.num_steps=200

Run again with the same workdir to resume from its latest checkpoint. Over several processes (hosts),
start the same command in each with --coordinator_address=host:port --num_processes=N --process_id=i
(auto-detected on Cloud TPU and SLURM); docs/scaling.md has the launch commands. Library logs
(TensorFlow, libtpu, tfds) are hidden unless --verbose.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from vlfusion import distributed, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir whose saved config differs from --config in fields beyond run length/logging.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  runtime.initialize()  # first: quiets native libraries before they load.
  distributed.initialize()  # before anything touches a JAX backend.
  from vlfusion import experiment  # after runtime setup: imports JAX and TensorFlow.

  experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  logging.info("Training finished.")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
