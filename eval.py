"""Evaluates a checkpoint and writes workdir/eval/step_<N>.json.

  python eval.py --config=configs/pretrain/co_attention.py:tiny --workdir=/tmp/vlf [--step=N]
"""

import json

from absl import app, flags
from ml_collections import config_flags

from vlfusion import distributed, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a JAX backend.
  runtime.initialize()
  from vlfusion.evaluation import evaluator

  result = evaluator.evaluate(_CONFIG.value, _WORKDIR.value, step=_STEP.value)
  print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
