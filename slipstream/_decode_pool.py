"""Decode threads: workers take slices of a batch and decode them into its slot.

A pool belongs to a loader and lives as long as it does (threads are not restarted per
epoch). Each slice is one call into the native kernel, which releases the GIL for the
whole slice.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["BatchJob", "DecodePool"]

_STOP = None


class BatchJob:
    """One batch in flight: its slices, how many are left, and the first error."""

    def __init__(self, run_slice: Callable[[int, int], None], n: int, slice_size: int) -> None:
        self.run_slice = run_slice
        self.slices = [(lo, min(n, lo + slice_size)) for lo in range(0, n, slice_size)]
        self._left = len(self.slices)
        self._lock = threading.Lock()
        # held until the last slice is done: a bare lock, whose release is one C call
        # (an Event runs a Condition's Python code under the GIL, in the decode thread,
        # at the moment it wakes the consumer)
        self._done = threading.Lock()
        self._done.acquire()
        self.error: BaseException | None = None
        self.cancelled = False
        if not self.slices:
            self._done.release()

    def wait(self) -> None:
        """Block (without the GIL) until every slice has run or been skipped."""
        self._done.acquire()
        self._done.release()

    def _finished_one(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._done.release()

    def run(self, lo: int, hi: int) -> None:
        try:
            if not self.cancelled and self.error is None:
                self.run_slice(lo, hi)
        except BaseException as exc:  # surfaced in the consumer
            with self._lock:
                if self.error is None:
                    self.error = exc
        finally:
            self._finished_one()


class DecodePool:
    """``num_threads`` daemon threads running batch slices from one queue."""

    def __init__(self, num_threads: int, name: str = "slipstream-decode") -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.num_threads = num_threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(num_threads)
        ]
        self._running = 0  # slices being run right now
        self._lock = threading.Lock()
        self.closed = False
        for t in self._threads:
            t.start()
        _live_pools.add(self)

    def _work(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is _STOP:
                return
            job, lo, hi = item
            with self._lock:
                self._running += 1
            try:
                job.run(lo, hi)
            finally:
                with self._lock:
                    self._running -= 1

    def submit(self, job: BatchJob) -> None:
        if self.closed:
            raise RuntimeError("the decode pool is closed")
        for lo, hi in job.slices:
            self._queue.put((job, lo, hi))

    def idle(self) -> bool:
        """No slice queued or running."""
        with self._lock:
            return self._running == 0 and self._queue.empty()

    def runs_current_thread(self) -> bool:
        """Whether the caller is one of this pool's threads (which must not wait for a job)."""
        return threading.current_thread() in self._threads

    def close(self, timeout: float = 30.0) -> None:
        """Stop every thread (after the slices already queued, which cancelled jobs skip)."""
        if self.closed:
            return
        self.closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)


_live_pools: weakref.WeakSet[DecodePool] = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    """Join decode threads before the interpreter tears down (a daemon thread killed
    inside libjpeg aborts the process)."""
    for pool in list(_live_pools):
        pool.close(timeout=5.0)
