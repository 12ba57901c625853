"""The one bounded parallel map: work on a thread pool with a cap on what is in flight."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["bounded_map"]

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    threads: int,
    window: int | None = None,
    ordered: bool = False,
    thread_name: str = "slipstream-worker",
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` for every item, running ``fn`` on up to ``threads``
    threads with at most ``window`` (default: ``threads``) items submitted and not yet
    yielded, so memory stays bounded however many items there are. Results come as they
    complete, or in input order if ``ordered``. With ``threads <= 1`` it runs inline.

    The first failure is raised (once the calls already running have returned) and the
    items not yet started are dropped; closing the iterator early does the same.
    """
    if threads <= 1:
        for item in items:
            yield item, fn(item)
        return
    window = max(threads, window or threads)
    with cf.ThreadPoolExecutor(threads, thread_name_prefix=thread_name) as pool:
        pending: dict[cf.Future[R], T] = {}  # in submission order
        try:
            for item in items:
                pending[pool.submit(fn, item)] = item
                if len(pending) >= window:
                    yield from _take(pending, ordered)
            while pending:
                yield from _take(pending, ordered)
        finally:
            for fut in pending:
                fut.cancel()


def _take(pending: dict[cf.Future[R], T], ordered: bool) -> Iterator[tuple[T, R]]:
    """The oldest result (``ordered``), or every one that is done (waiting for one)."""
    if ordered:
        fut = next(iter(pending))
        done: Iterable[cf.Future[R]] = [fut]
    else:
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
    for fut in done:
        item = pending.pop(fut)
        yield item, fut.result()
