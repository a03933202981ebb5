"""Host batches assembled ahead on a background thread while the device computes.

    Batches(make_batch, start, stop, depth)  a thread calls make_batch(step) for start, start+1, ...
        keeping at most `depth` ready; `next()` -> (step, batch, wait_ms)

`wait_ms` is how long the training loop waited for the batch (the thread had not finished it):
near 0 when the data keeps up, the whole batch-assembly time when it does not, so a data-bound
run shows in `metrics.jsonl` as `data_wait_ms`. With depth 0 no thread is started and the wait is
the time `make_batch` takes in the loop itself (today's behaviour, measured).

Order: one producer thread walks the steps in order into a FIFO queue, and `next()` checks the
step it receives, so the batches the loop sees are exactly `make_batch(start), make_batch(start+1)...`.
An exception in the thread is raised in the loop at the step it belongs to.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

_STOP_POLL_SECONDS = 0.1


class Batches:
    def __init__(self, make_batch: Callable[[int], Any], start: int, stop: int, depth: int = 2):
        self._make_batch, self._next_step, self._stop = make_batch, start, stop
        self._depth = max(0, int(depth))
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self._depth))
        self._closed = threading.Event()
        self._thread = None
        if self._depth and start < stop:
            self._thread = threading.Thread(target=self._produce, args=(start,), name="batch-prefetch", daemon=True)
            self._thread.start()

    def _produce(self, start: int) -> None:
        for step in range(start, self._stop):
            try:
                item = (step, self._make_batch(step), None)
            except BaseException as error:  # handed to the loop, raised there
                item = (step, None, error)
            while not self._closed.is_set():
                try:
                    self._queue.put(item, timeout=_STOP_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            if self._closed.is_set() or item[2] is not None:
                return

    def next(self) -> tuple[int, Any, float]:
        """(step, host batch, milliseconds the caller waited for it)."""
        expected = self._next_step
        if expected >= self._stop:
            raise StopIteration
        begin = time.perf_counter()
        if self._thread is None:
            step, batch, error = expected, self._make_batch(expected), None
        else:
            step, batch, error = self._queue.get()
        wait_ms = 1000.0 * (time.perf_counter() - begin)
        if error is not None:
            raise error
        if step != expected:
            raise RuntimeError(f"prefetch delivered the batch of step {step} where step {expected} was due")
        self._next_step += 1
        return step, batch, wait_ms

    def close(self) -> None:
        """Stops the thread (it may be blocked on a full queue) and waits for it."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
