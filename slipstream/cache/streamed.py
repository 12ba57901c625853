"""Heaps whose chunk files arrive on demand: the reader's side of a streamed cache.

A streamed cache is a cache directory whose metadata and small arrays are all present but
whose heap chunk files (``FIELD/heap/c/N``, ``FIELD/FORMAT/heap/c/N``) are not. Something
outside the cache format (``slipstream/stores/streaming.py``) makes a chunk file present
when asked: a :class:`ChunkSource`. The reader asks at chunk-map time, never per sample:
a batch pins the chunks it reads (:func:`pin_batch`), which maps them, and unpins them
when it is done, which unmaps them and lets the source evict the files.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .arrays import ByteHeap

__all__ = ["ChunkSource", "StreamedByteHeap", "BatchPins", "pin_batch", "read_ahead",
           "stop_read_ahead", "is_streamed"]


@runtime_checkable
class ChunkSource(Protocol):
    """Makes the chunk files of one streamed cache present on local disk."""

    def acquire(self, path: Path) -> bool:
        """Make chunk file ``path`` present (fetched and verified) and pinned: it stays on
        disk until as many :meth:`release` calls as ``acquire`` calls were made.

        True if the file pinned is the very one this source downloaded and checked
        against the manifest (so the reader need not hash it again); False if it was
        here already (kept from an earlier run, or fetched by another process), and the
        reader hashes it on first touch as any cache's chunk."""
        ...

    def release(self, path: Path) -> None:
        """Unpin ``path``: once no pin holds it, it may be evicted."""
        ...

    def read_ahead(self, batches: Sequence[Sequence[Path]]) -> None:
        """The chunk files each coming batch reads, in order: fetch them ahead of need
        (within the source's budget). Replaces an earlier plan."""
        ...

    def batch_started(self) -> None:
        """The consumer pinned the next batch of the plan."""
        ...

    def stop_read_ahead(self) -> None:
        """Stop fetching ahead and release what the plan holds (idempotent)."""
        ...


class StreamedByteHeap(ByteHeap):
    """A :class:`ByteHeap` that maps a chunk file only while it is pinned.

    :meth:`view` of a value whose chunk is not pinned (a read outside a batch: one
    sample, an error message) pins it for that one read and returns a copy.
    """

    def __init__(self, array_dir: Path, offsets: np.ndarray, sizes: np.ndarray,
                 source: ChunkSource) -> None:
        self.source = source
        self._pins: list[int] = []
        self._pin_lock = threading.Lock()
        super().__init__(array_dir, offsets, sizes)

    def _map_chunks(self) -> None:
        self._views = [None] * self.num_chunks  # type: ignore[list-item]
        self._stamps = [None] * self.num_chunks
        self._pins = [0] * self.num_chunks
        # hashed on first touch like any heap's chunks, unless the source says it has just
        # checked that very file (a chunk kept from an earlier run may have rotted since)
        self._verified = [False] * self.num_chunks

    def pin(self, chunks: Sequence[int]) -> None:
        """Fetch (if needed), pin and map ``chunks``."""
        done: list[int] = []
        try:
            for c in chunks:
                with self._pin_lock:
                    first = self._pins[c] == 0
                    self._pins[c] += 1
                if first:
                    try:
                        self._acquire_and_map(c)
                    except BaseException:
                        with self._pin_lock:
                            self._pins[c] -= 1
                        raise
                done.append(c)
        except BaseException:
            self.unpin(done)
            raise

    def _acquire_and_map(self, c: int) -> None:
        path = self.chunk_path(c)
        checked = self.source.acquire(path)
        try:
            self._views[c], self._stamps[c] = self._map_chunk(c)
        except BaseException:
            self.source.release(path)
            raise
        if checked:  # the pin keeps the file the source checked under the path we mapped
            self._verified[c] = True

    def unpin(self, chunks: Sequence[int]) -> None:
        """Undo :meth:`pin`; a chunk no pin holds is unmapped and released."""
        for c in chunks:
            with self._pin_lock:
                self._pins[c] -= 1
                last = self._pins[c] == 0
                if last:
                    self._views[c] = None  # type: ignore[call-overload]
                    self._stamps[c] = None
            if last:
                self.source.release(self.chunk_path(c))

    def _chunk_bases(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The chunks mapped now (pins come and go): computed afresh on every call."""
        with self._pin_lock:
            views = list(self._views)
        keep = [v for v in views if v is not None]
        bases = np.fromiter((0 if v is None else v.ctypes.data for v in views), np.uint64,
                            len(views))
        return bases, keep

    def view(self, i: int) -> np.ndarray:
        try:
            return super().view(i)
        except TypeError:  # a chunk not mapped (None): a read outside a pinned batch
            chunks = self.chunks_of(np.array([i]))
            self.pin(chunks)
            try:
                return super().view(i).copy()
            finally:
                self.unpin(chunks)

    def close(self) -> None:
        held = [c for c, n in enumerate(self._pins) for _ in range(n)]
        self.unpin(held)
        super().close()


def is_streamed(columns: Sequence[Any]) -> bool:
    """Whether any of ``columns`` (or heaps) is streamed."""
    return bool(_streamed(columns))


def _streamed(heaps: Sequence[Any]) -> list[StreamedByteHeap]:
    """The streamed heaps among columns (anything with a ``heap``) or heaps."""
    out = []
    for h in heaps:
        heap = getattr(h, "heap", h)
        if isinstance(heap, StreamedByteHeap):
            out.append(heap)
    return out


class BatchPins:
    """The chunks one batch pinned; :meth:`release` (idempotent) unpins them."""

    def __init__(self, pinned: list[tuple[StreamedByteHeap, list[int]]]) -> None:
        self._pinned = pinned

    def release(self) -> None:
        pinned, self._pinned = self._pinned, []
        for heap, chunks in pinned:
            heap.unpin(chunks)


def pin_batch(columns: Sequence[Any], indices: np.ndarray) -> BatchPins | None:
    """Pin the chunks of the streamed ``columns`` that samples ``indices`` read (None if
    no column is streamed)."""
    heaps = _streamed(columns)
    if not heaps:
        return None
    pinned: list[tuple[StreamedByteHeap, list[int]]] = []
    try:
        for source in {id(h.source): h.source for h in heaps}.values():
            source.batch_started()
        for heap in heaps:
            chunks = heap.chunks_of(indices)
            heap.pin(chunks)
            pinned.append((heap, chunks))
    except BaseException:
        BatchPins(pinned).release()
        raise
    return BatchPins(pinned)


def read_ahead(columns: Sequence[Any], batches: Sequence[np.ndarray]) -> None:
    """Tell the sources of the streamed ``columns`` which chunk files ``batches`` read,
    in order, so that they fetch them ahead of need."""
    heaps = _streamed(columns)
    by_source: dict[int, tuple[ChunkSource, list[list[Path]]]] = {}
    for heap in heaps:
        _, plan = by_source.setdefault(id(heap.source), (heap.source, [[] for _ in batches]))
        for b, indices in enumerate(batches):
            plan[b].extend(heap.chunk_path(c) for c in heap.chunks_of(indices))
    for source, plan in by_source.values():
        source.read_ahead(plan)


def stop_read_ahead(columns: Sequence[Any]) -> None:
    """Stop the sources of the streamed ``columns`` fetching ahead."""
    for source in {id(h.source): h.source for h in _streamed(columns)}.values():
        source.stop_read_ahead()
