"""Evaluates checkpoints and writes workdir/eval/step_<N>.json (every evaluator of config.evals).

A result records the digest of the evaluator config that produced it (model, evaluation data, tasks,
batch sizes). The run's own config writes eval/step_<N>.json; another --config writes
eval/<its digest>/step_<N>.json, never over the run's. --all and --watch skip only the steps this
evaluator config has evaluated.

  python eval.py --workdir=/tmp/vlf                 # the latest checkpoint, with the run's config.json
  python eval.py --workdir=/tmp/vlf --step=400      # one checkpoint
  python eval.py --workdir=/tmp/vlf --all           # every checkpoint in order, skipping evaluated ones
  python eval.py --workdir=/tmp/vlf --watch         # each checkpoint as the running job writes it
  python eval.py --config=configs/pretrain/co_attention.py:tiny --workdir=/tmp/vlf   # another config

Only the parameters are restored, never the optimizer state.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from vlfusion import distributed, runtime

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (path[:arg]); default: the run's workdir/config.json.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_ALL = flags.DEFINE_bool("all", False, "Evaluate every checkpoint in step order, skipping those that "
                         "already have a result of this evaluator config.")
_WATCH = flags.DEFINE_bool("watch", False, "Evaluate each new checkpoint as it is written, until the "
                           "run's final step (config.train.num_steps) is evaluated.")
_POLL = flags.DEFINE_float("watch_poll_seconds", 30.0, "How often --watch looks for new checkpoints.")
_TIMEOUT = flags.DEFINE_float("watch_timeout_seconds", 0.0, "Stop --watch after this long (0: never).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  if sum([_STEP.value is not None, _ALL.value, _WATCH.value]) > 1:
    raise app.UsageError("--step, --all and --watch exclude each other")
  distributed.initialize()  # before anything touches a JAX backend.
  runtime.initialize()
  from vlfusion import experiment

  workdir = _WORKDIR.value
  if _WATCH.value and _CONFIG.value is None:
    experiment.wait_for_config(workdir, _POLL.value, _TIMEOUT.value)
  config = _CONFIG.value if _CONFIG.value is not None else experiment.saved_config(workdir)
  runner = experiment.CheckpointEvaluator(config, workdir)
  if _WATCH.value:
    results = runner.watch(_POLL.value, _TIMEOUT.value)
  elif _ALL.value:
    results = runner.evaluate_all()
  else:
    results = [runner.evaluate(_STEP.value)]
  for result in results:
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
