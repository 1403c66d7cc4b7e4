"""Training batches built ahead of the step: worker processes, and batches waiting on the devices.

`TrainBatches(source, start, stop, ...)` yields the device batches of steps `start, start + 1, ...`. The
batch of step s is `source.get_batch(s)` whichever process builds it (a pure function of the config and
the step), so neither the number of workers nor the prefetch depth changes a single value, and a resumed
run needs nothing but the step to continue.

- `num_workers` > 0: a pool of that many worker processes (spawned: JAX's threads make fork unsafe), each
  with its own `BatchSource` over the prepared dataset, builds whole batches of the next steps (reading
  records, JPEG decoding and resizing, tokenising, masking); at most `2 * num_workers` batches are in
  flight, and they are consumed in step order.
- `prefetch_batches` >= 2: a background thread takes the host batches in order, places them on the devices
  (`put`) and keeps up to `prefetch_batches` of them waiting, so the transfer of the next batch overlaps
  the current step. 0 or 1: the step asks for its batch and waits for it (no thread).

Workers ignore SIGINT and SIGTERM (preemption is the main process's to handle: it saves and then closes
the pool) and exit on their own when the main process is gone, so a `kill -9` leaves nothing behind.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_SOURCE = None  # the worker process's BatchSource.


def _watch_parent(parent_pid: int) -> None:
  def watch():
    while True:
      if os.getppid() != parent_pid:
        os._exit(0)
      time.sleep(0.5)

  threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _init_worker(config: Any, split: str, process_index: int, process_count: int, parent_pid: int):
  global _SOURCE
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  _watch_parent(parent_pid)
  from vlfusion.data import pipeline

  _SOURCE = pipeline.make_batch_source(config, split, process_index=process_index,
                                      process_count=process_count, prepare=False)


def _build(step: int) -> dict[str, Any]:
  return _SOURCE.get_batch(step)


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


class TrainBatches(Iterator):
  """The training batches of steps [start, stop), built ahead (see the module docstring)."""

  def __init__(self, source: Any, start: int, stop: int, *, num_workers: int = 0,
               prefetch_batches: int = 0, put: Callable[[dict[str, Any]], Any] = lambda b: b):
    self.source = source
    self.step = start
    self._stop_step = stop
    self._put = put
    self._pool = None
    self._pending: collections.deque = collections.deque()
    self._next_submit = start
    if num_workers > 0:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
          initargs=(source.config, source.split, source.process_index, source.process_count,
                    os.getpid()))
      self._in_flight = 2 * num_workers
      self._submit()  # the workers start (and open the dataset) while the caller compiles.
    self._queue: queue.Queue | None = None
    self._thread = None
    self._closed = threading.Event()
    if prefetch_batches >= 2:
      self._queue = queue.Queue(maxsize=prefetch_batches)
      self._thread = threading.Thread(target=self._fill, daemon=True, name="prefetch-batches")
      self._thread.start()

  # -- host batches, in step order -------------------------------------------------------------------

  def _submit(self) -> None:
    while len(self._pending) < self._in_flight and self._next_submit < self._stop_step:
      self._pending.append(self._pool.submit(_build, self._next_submit))
      self._next_submit += 1

  def _host_batch(self, step: int) -> dict[str, Any]:
    if self._pool is None:
      return self.source.get_batch(step)
    future = self._pending.popleft()
    self._submit()
    return future.result()

  # -- device batches --------------------------------------------------------------------------------

  def _fill(self) -> None:
    """The background thread: host batches in order, put on the devices, queued."""
    step = self.step
    try:
      while step < self._stop_step and not self._closed.is_set():
        item = self._put(self._host_batch(step))
        step += 1
        while not self._closed.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it.
      self._queue.put(_Failed(e))

  def __next__(self) -> Any:
    if self.step >= self._stop_step:
      raise StopIteration
    if self._queue is None:
      item = self._put(self._host_batch(self.step))
    else:
      item = self._queue.get()
      if isinstance(item, _Failed):
        self.close()
        raise item.error
    self.step += 1
    return item

  def close(self) -> None:
    """Stops the thread and the workers (idempotent; batches already built are dropped)."""
    self._closed.set()
    if self._thread is not None and self._thread is not threading.current_thread():
      while self._thread.is_alive():
        try:
          self._queue.get(timeout=0.1)  # unblocks a put waiting for room.
        except queue.Empty:
          pass
      self._thread = None
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None

  def __enter__(self) -> TrainBatches:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def train_batches(source: Any, start: int, stop: int, data_config: Any,
                  put: Callable[[dict[str, Any]], Any] = lambda b: b) -> TrainBatches:
  """`TrainBatches` with `config.data.num_workers` and `config.data.prefetch_batches`."""
  return TrainBatches(source, start, stop, num_workers=int(data_config.num_workers),
                      prefetch_batches=int(data_config.prefetch_batches), put=put)
