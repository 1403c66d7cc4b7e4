"""Batches built ahead by worker processes and a prefetch thread are the batches of their steps."""

import os
import signal
import subprocess
import sys
import time

import pytest

from configs.pretrain import co_attention
from tests.conftest import tiny_config
from tests.data.test_pipeline import _assert_same
from vlfusion.data import pipeline, prefetch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def source(data_dir):
  return pipeline.make_batch_source(tiny_config(co_attention, data_dir, **{"data.global_batch_size": 8}),
                                    "train")


def test_workers_and_prefetch_give_the_batches_of_their_steps(source):
  put_steps = []

  def put(batch):
    put_steps.append(len(put_steps))
    return batch

  with prefetch.TrainBatches(source, 3, 9, num_workers=2, prefetch_batches=3, put=put) as batches:
    got = list(batches)
    assert batches.step == 9
    workers = list(batches._pool._processes.values())
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
  assert len(got) == 6 and len(put_steps) == 6
  for step, batch in zip(range(3, 9), got, strict=True):
    _assert_same(batch, source.get_batch(step))
  assert not any(w.is_alive() for w in workers)  # closed with the iterator.
  # synchronous (no thread, no workers): the same batches.
  for step, batch in zip(range(3, 5), prefetch.TrainBatches(source, 3, 5), strict=True):
    _assert_same(batch, source.get_batch(step))


def test_an_error_while_prefetching_is_raised_by_next(source):
  def put(batch):
    raise RuntimeError("device full")

  batches = prefetch.TrainBatches(source, 0, 5, prefetch_batches=2, put=put)
  with pytest.raises(RuntimeError, match="device full"):
    next(batches)
  batches.close()


def test_workers_exit_when_the_training_process_is_killed(data_dir, tmp_path):
  """kill -9 of the training process leaves no worker behind (they watch their parent)."""
  script = f"""
import sys
sys.path.insert(0, {ROOT!r})
from configs.pretrain import co_attention
from tests.conftest import tiny_config
from vlfusion.data import pipeline, prefetch
config = tiny_config(co_attention, {data_dir!r}, **{{"data.global_batch_size": 8}})
batches = prefetch.TrainBatches(pipeline.make_batch_source(config, "train"), 0, 100, num_workers=2,
                                prefetch_batches=2)
next(batches)
print(" ".join(str(p) for p in batches._pool._processes), flush=True)
import time; time.sleep(600)
"""
  proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  pids = [int(p) for p in proc.stdout.readline().split()]
  assert len(pids) == 2
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 10
  alive = pids
  while alive and time.time() < deadline:
    time.sleep(0.2)
    alive = [p for p in alive if _alive(p)]
  assert not alive, f"workers {alive} outlived their training process"


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split()[2] != "Z"
  except FileNotFoundError:
    return False
