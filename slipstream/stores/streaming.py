"""Streaming a committed remote cache through a bounded local area.

The local part of a streamed cache is ``ROOT/.stream/KEY/`` (:meth:`LocalStore.stream_dir`):
its root ``zarr.json`` (the remote manifest) and every small file (array metadata,
offsets, sizes, numeric columns, indexes) are fetched when it is opened; the heap chunk
files come on demand and ahead of need (:class:`StreamedChunks`, the cache reader's
:class:`~slipstream.cache.streamed.ChunkSource`), each downloaded under a private
name, checked against the manifest's size and SHA-256, and only then renamed into place.
A chunk file under its own name is therefore always a good one, whatever was killed when.

Local disk stays within ``limit`` bytes: before a chunk is fetched, the least recently
used chunk files no reader pins are evicted. A reader pins a chunk with a shared
``flock`` on its file; eviction takes the lock exclusively without waiting, so a chunk
any process reads is never removed. Processes streaming the same cache share the area:
a per-chunk lock file (``.N.fetch-lock``) makes one of them download a chunk while the
others wait for it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._filelock import FileLock
from .._parallel import bounded_map
from ..cache import Cache, layout, manifest
from ..errors import ConfigurationError
from ._transfer import DEFAULT_THREADS, run_parallel
from .base import CacheStore
from .local import LocalStore, _alive, _local_pid_of, build_dir_name
from .pull import committed_manifest, fetch_one_verified

__all__ = ["LIMIT_ENV", "StreamedChunks", "open_streamed", "should_stream", "parse_size",
           "local_cache_limit", "is_chunk_file"]

#: Environment variable with the default ``local_cache_limit``.
LIMIT_ENV = "SLIPSTREAM_LOCAL_CACHE_LIMIT"
#: Chunk downloads the read-ahead runs at once: enough to hide a request's latency,
#: few enough that the chunk needed first is not slowed down by those needed later.
READ_AHEAD_THREADS = 4

log = logging.getLogger("slipstream.stores")

_CHUNK = re.compile(r"(^|/)heap/c/\d+$")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*", re.IGNORECASE)


def is_chunk_file(rel: str) -> bool:
    """Whether ``rel`` (a path inside a cache) is a heap chunk file, streamed on demand."""
    return bool(_CHUNK.search(rel))


def parse_size(value: int | str, what: str = "local_cache_limit") -> int:
    """Bytes in ``value``: an integer, or a size like ``"50GB"``, ``"1.5 TB"``, ``"200MiB"``
    (decimal units, ``i`` for binary ones)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise ConfigurationError(
                f"{what}={value!r}: expected a number of bytes or a size such as '50GB', "
                f"'1.5TB' or '200MiB'")
        base = 1024 if m.group(3) else 1000
        n = int(float(m.group(1)) * base ** "_kmgtp".index((m.group(2) or "_").lower()))
    if n <= 0:
        raise ConfigurationError(f"{what}={value!r}: the limit must be positive")
    return n


def local_cache_limit(value: int | str | None) -> int | None:
    """The limit in bytes: ``value`` if given, else ``$SLIPSTREAM_LOCAL_CACHE_LIMIT``, else
    None (no limit: caches are pulled whole)."""
    if value is None:
        value = os.environ.get(LIMIT_ENV) or None
        if value is None:
            return None
        return parse_size(value, f"${LIMIT_ENV}")
    return parse_size(value)


def should_stream(remote: CacheStore, key: str, limit: int) -> bool:
    """Whether committed cache ``key`` of ``remote`` is larger than ``limit`` bytes, so
    that it is streamed rather than pulled whole (False if the remote has no such cache)."""
    attrs = remote.read_commit(key)
    return attrs is not None and sum(int(e["size"]) for e in attrs["files"].values()) > limit


def open_streamed(
    remote: CacheStore,
    key: str,
    store: LocalStore,
    limit: int,
    *,
    threads: int = DEFAULT_THREADS,
    progress: bool = False,
) -> Cache:
    """Committed cache ``key`` of ``remote``, opened at once from a local area of at most
    ``limit`` bytes (``store.stream_dir(key)``); heap chunks are fetched as batches need
    them. A local part left by an earlier run is reused where the remote manifest still
    lists its files unchanged."""
    marker, attrs = committed_manifest(remote, key)
    files: dict[str, Any] = attrs["files"]
    area = store.stream_dir(key)
    with store.stream_lock(key):
        area.mkdir(parents=True, exist_ok=True)
        _drop_stale(area, files, marker)
        small = {rel: e for rel, e in files.items()
                 if not is_chunk_file(rel) and not (area / rel).is_file()}

        def fetch(rel: str) -> None:
            _fetch_into_place(remote, key, rel, files[rel], area / rel)

        run_parallel(((rel, int(e["size"])) for rel, e in small.items()), fetch,
                     threads=threads, desc=f"opening streamed cache {key[:12]}",
                     progress=progress)
        if not (area / layout.MANIFEST_NAME).is_file() or \
                (area / layout.MANIFEST_NAME).read_bytes() != marker:
            _write_atomically(area / layout.MANIFEST_NAME, marker)
    source = StreamedChunks(remote, key, area, files, limit, threads=threads)
    return Cache(area, chunk_source=source)


def _drop_stale(area: Path, files: Mapping[str, Any], marker: bytes) -> None:
    """Remove what a killed download left, and every file the (new) remote manifest does
    not list with the same checksum as the local one did."""
    for p in area.rglob(".*"):
        pid = _local_pid_of(p.name)
        if p.is_file() and ".part." in p.name and pid is not None and not _alive(pid):
            p.unlink(missing_ok=True)
    root = area / layout.MANIFEST_NAME
    if not root.is_file() or root.read_bytes() == marker:
        return
    old = (manifest.parse_committed(root.read_bytes()) or {}).get("files", {})
    root.unlink()  # the area is not a complete cache until the new manifest is written
    for rel, entry in old.items():
        if files.get(rel) != entry:
            (area / rel).unlink(missing_ok=True)


def _write_atomically(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.{build_dir_name('part')}")
    try:
        tmp.write_bytes(data)
        os.rename(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_into_place(remote: CacheStore, key: str, rel: str, entry: Mapping[str, Any],
                      dest: Path, checked: Callable[[int], None] | None = None) -> None:
    """Download ``rel`` under a private name, verify it, rename it to ``dest``.
    ``checked(inode)`` is called with the verified file's inode before the rename makes
    it visible, so that no reader can find it under ``dest`` before it is known."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{build_dir_name('part')}")
    try:
        fetch_one_verified(remote, key, rel, entry, tmp)
        if checked is not None:
            checked(os.stat(tmp).st_ino)
        os.rename(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class StreamedChunks:
    """The chunk files of one streamed cache, fetched into a bounded local area.

    Implements :class:`slipstream.cache.streamed.ChunkSource`. ``fetched`` counts the
    downloads this object made, by chunk (a chunk fetched again after eviction counts
    twice); ``evicted`` the chunk files it removed.
    """

    def __init__(self, remote: CacheStore, key: str, area: Path, files: Mapping[str, Any],
                 limit: int, *, threads: int = DEFAULT_THREADS) -> None:
        self.remote, self.key, self.area = remote, key, area
        self.files = files
        self.limit = limit
        self._small_bytes = sum(int(e["size"]) for rel, e in files.items()
                                if not is_chunk_file(rel))
        self._largest_chunk = max((int(e["size"]) for rel, e in files.items()
                                   if is_chunk_file(rel)), default=0)
        self.threads = max(1, threads)
        self.fetched: Counter[str] = Counter()
        #: the chunk files this object evicted, by chunk
        self.evicted: Counter[str] = Counter()
        self._pins: dict[str, list[int]] = {}  # rel -> [fd, count]
        #: rel -> inode of the file this object downloaded, checked and renamed into place
        self._checked: dict[str, int] = {}
        #: rel -> set when this process's download of it (by any thread) has ended
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.RLock()
        self._reserved = 0  # bytes of this process's downloads in progress
        self._warned = False
        # read-ahead: the plan, the consumer's position in it, and the fetching thread
        self._plan: list[list[str]] = []
        self._consumer = -1
        self._ahead_to = -1  # the last batch of the plan the read-ahead has reached
        self._queued: set[str] = set()  # chunks handed to a read-ahead thread
        self._refused: dict[str, int] = {}  # chunk -> the consumer's batch when refused room
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- pins ----------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        return path.relative_to(self.area).as_posix()

    def acquire(self, path: Path) -> bool:
        rel = self._rel(path)
        with self._lock:
            pin = self._pins.get(rel)
            if pin is not None:
                pin[1] += 1
                return self._checked_here(rel, pin[0])
        fd = self._present_and_locked(path, rel)
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        with self._lock:
            pin = self._pins.get(rel)
            if pin is not None:  # another thread pinned it meanwhile
                pin[1] += 1
                os.close(fd)
                fd = pin[0]
            else:
                self._pins[rel] = [fd, 1]
            return self._checked_here(rel, fd)

    def _present_and_locked(self, path: Path, rel: str) -> int:
        """A descriptor of chunk file ``path``, fetched if need be, holding a shared lock."""
        while True:
            self._ensure_present(rel)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # evicted by another process between the two: fetch again
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # evicted while we waited for the lock

    def _checked_here(self, rel: str, fd: int) -> bool:
        """Whether the file open as ``fd`` is the one this object downloaded and checked."""
        return self._checked.get(rel) == os.fstat(fd).st_ino

    def release(self, path: Path) -> None:
        rel = self._rel(path)
        with self._lock:
            pin = self._pins.get(rel)
            if pin is None:
                return
            pin[1] -= 1
            if pin[1] == 0:
                del self._pins[rel]
                os.close(pin[0])
                self._wake.notify_all()  # the read-ahead's budget grew

    # -- fetching ------------------------------------------------------------------------
    def _ensure_present(self, rel: str, *, ahead: bool = False) -> bool:
        """Fetch ``rel`` unless it is here; whether it is here now. ``ahead`` (read-ahead):
        only if room can be made without evicting a chunk the plan needs sooner, and not
        if another thread is fetching it; else leave it for later.

        Threads of this process wait for one another's download of a chunk on an event
        (no polling, no lock file); processes sharing the area, on the chunk's lock file."""
        dest = self.area / rel
        if rel not in self.files:
            raise FileNotFoundError(f"{dest}: not in the manifest of cache {self.key}")
        while not dest.is_file():
            with self._lock:
                running = self._inflight.get(rel)
                if running is None:
                    done = self._inflight[rel] = threading.Event()
            if running is not None:
                if ahead:
                    return False
                running.wait()  # then look again: that fetch may have made no room
                continue
            try:
                return self._fetch_once(rel, dest, ahead=ahead)
            finally:
                with self._lock:
                    del self._inflight[rel]
                done.set()
        return True

    def _fetch_once(self, rel: str, dest: Path, *, ahead: bool) -> bool:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(dest.with_name(f".{dest.name}.fetch-lock"), poll=0.005):
            if dest.is_file():  # another process fetched it while we waited
                return True
            size = int(self.files[rel]["size"])
            if not self._make_room(size, ahead=ahead):
                return False

            def checked(inode: int) -> None:
                with self._lock:
                    self._checked[rel] = inode

            try:
                _fetch_into_place(self.remote, self.key, rel, self.files[rel], dest, checked)
            except BaseException:
                with self._lock:
                    self._checked.pop(rel, None)
                raise
            finally:
                with self._lock:
                    self._reserved -= size
            with self._lock:
                self.fetched[rel] += 1
        return True

    def _listing(self) -> list[tuple[str, int, int]]:
        """``(rel, size, mtime_ns)`` of the cache's files in the area: chunk files and
        the small files the manifest lists (not the root ``zarr.json`` holding the
        manifest, nor hidden files: locks, downloads in progress)."""
        out = []
        root = str(self.area)
        for dirpath, _, names in os.walk(root):
            prefix = dirpath[len(root) + 1:].replace(os.sep, "/")
            for name in names:
                rel = f"{prefix}/{name}" if prefix else name
                if name.startswith(".") or rel == layout.MANIFEST_NAME:
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # evicted meanwhile
                out.append((rel, st.st_size, st.st_mtime_ns))
        return out

    def disk_used(self) -> int:
        """Bytes of the cache's files in the area (chunk files and the small files the
        manifest lists; the root ``zarr.json`` holding the manifest is not counted)."""
        return sum(size for _, size, _ in self._listing())

    def _make_room(self, size: int, *, ahead: bool = False) -> bool:
        """Evict unpinned chunk files until ``size`` more bytes fit in the limit, and
        reserve them: first those the read-ahead plan does not need soon, least recently
        used first, then (not for a read-ahead) the others. False if a read-ahead found
        no room (nothing reserved)."""
        with self._lock:
            listing = self._listing()
            used = sum(size for _, size, _ in listing) + self._reserved
            if used + size > self.limit:
                later, soon = self._eviction_order(listing)
                for rel in later + ([] if ahead else soon):
                    if used + size <= self.limit:
                        break
                    freed = self._evict(self.area / rel)
                    if freed:
                        used -= freed
                        self.evicted[rel] += 1
                        self._checked.pop(rel, None)
            if used + size > self.limit:
                if ahead:
                    return False
                if not self._warned:
                    self._warned = True
                    log.warning("streamed cache %s: the chunks in use need more than "
                                "local_cache_limit=%d bytes; going over it", self.key,
                                self.limit)
            self._reserved += size
            return True

    def _eviction_order(self, listing: list[tuple[str, int, int]]
                        ) -> tuple[list[str], list[str]]:
        """The chunk files of ``listing`` in the order to evict them: (those the plan
        does not need soon, least recently used first; those it does, the one needed
        last first)."""
        next_use: dict[str, int] = {}
        for b in range(max(0, self._consumer), min(self._ahead_to + 1, len(self._plan))):
            for rel in self._plan[b]:
                next_use.setdefault(rel, b)
        chunks = sorted((mtime, rel) for rel, _, mtime in listing if is_chunk_file(rel))
        later = [rel for _, rel in chunks if rel not in next_use]
        soon = sorted((rel for _, rel in chunks if rel in next_use),
                      key=lambda rel: -next_use[rel])
        return later, soon

    def _evict(self, path: Path) -> int:
        """Remove ``path`` unless some reader pins it; the bytes freed."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return 0
        try:
            size = os.fstat(fd).st_size
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return 0
            path.unlink()
            return size
        except FileNotFoundError:
            return 0
        finally:
            os.close(fd)

    # -- read-ahead ------------------------------------------------------------------------
    def read_ahead(self, batches: Sequence[Sequence[Path]]) -> None:
        self.stop_read_ahead()
        with self._lock:
            self._plan = [sorted({self._rel(p) for p in b}) for b in batches]
            self._consumer = -1
            self._ahead_to = -1
            self._queued.clear()
            self._refused.clear()
            self._stop = False
        self._thread = threading.Thread(target=self._read_ahead_loop, daemon=True,
                                        name=f"slipstream-stream-{self.key[:8]}")
        self._thread.start()

    def batch_started(self) -> None:
        with self._lock:
            self._consumer += 1
            self._wake.notify_all()

    def stop_read_ahead(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _ahead_budget(self, pinned: set[str]) -> int:
        """Bytes of chunks the read-ahead may hold beyond the ``pinned`` ones: at most half
        the area, and no more than the limit leaves once the small files, the pinned
        chunks and one chunk (room for a batch that must fetch on demand) are counted,
        so that fetching ahead never has to evict a chunk it fetched and that is still
        to be read."""
        pinned_bytes = sum(int(self.files[rel]["size"]) for rel in pinned)
        return min(self.limit // 2,
                   self.limit - self._small_bytes - pinned_bytes - self._largest_chunk)

    def _next_job(self) -> str | None:
        """The chunk the coming batches need first that is not here, not being fetched,
        and not refused room since the consumer last moved; None if there is none within
        the budget. Call with the lock held.

        The budget counts the chunks the coming batches read besides those pinned (by
        the batches in flight, and the one being pinned): those are on disk whatever
        happens."""
        pinned = set(self._pins)
        if self._consumer >= 0:
            pinned.update(self._plan[self._consumer])
        budget = self._ahead_budget(pinned)
        seen, ahead_bytes = set(pinned), 0
        for b in range(self._consumer + 1, len(self._plan)):
            for rel in self._plan[b]:
                if rel in seen:
                    continue
                seen.add(rel)
                ahead_bytes += int(self.files[rel]["size"])
                if ahead_bytes > budget and b > self._consumer + 1:
                    return None
                self._ahead_to = max(self._ahead_to, b)
                if rel in self._queued or self._refused.get(rel) == self._consumer:
                    continue
                if not (self.area / rel).is_file():
                    return rel
        return None

    def _jobs(self) -> Iterator[str]:
        """Chunk files to fetch, each time the one needed first (see :meth:`_next_job`):
        a chunk refused room is tried again once the consumer has moved on."""
        while True:
            with self._lock:
                while True:
                    if self._stop or self._consumer + 1 >= len(self._plan):
                        return
                    rel = self._next_job()
                    if rel is not None:
                        break
                    self._wake.wait(0.5)
                self._queued.add(rel)
            yield rel

    def _read_ahead_loop(self) -> None:
        def fetch(rel: str) -> None:
            here = True
            try:
                if not self._stop:
                    here = self._ensure_present(rel, ahead=True)
            except Exception as exc:  # the batch that needs it fetches it and reports
                log.debug("read-ahead of %s failed: %s", rel, exc)
            finally:
                with self._lock:
                    self._queued.discard(rel)
                    if not here:
                        self._refused[rel] = self._consumer
                    self._wake.notify_all()

        for _ in bounded_map(fetch, self._jobs(), threads=min(self.threads, READ_AHEAD_THREADS),
                             thread_name="slipstream-stream-fetch"):
            if self._stop:
                break
