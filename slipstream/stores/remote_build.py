"""Building a cache straight into a remote store, through a bounded local disk.

A cache larger than the local disk is built chunk file by chunk file: as the cache
writer finishes each heap chunk file (:class:`~slipstream.cache.layout.FileLedger`'s
hook), a :class:`ChunkUploader` uploads it and removes the local copy, and holds the
writer back while the chunk files waiting for upload, plus the one being written, would
exceed the limit. The small files (offsets, sizes, numeric columns, metadata) are written
at the end as in any build; :func:`commit_build` uploads them, checks that the remote
holds every file of the manifest, and writes the commit marker (``KEY/zarr.json``) last,
create-only. Until then a reader finds no cache under the key; a build stopped at any
point (an error, a kill) leaves only uncommitted objects, which a new run replaces or
keeps (an object already there with the same SHA-256 is not uploaded again).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache import layout
from ..errors import RemoteStoreError
from ._transfer import run_parallel
from .base import CacheStore
from .push import META_SHA256

__all__ = ["ChunkUploader", "CommittedMeanwhile", "commit_build", "upload_file"]


class CommittedMeanwhile(Exception):
    """Another writer committed the key while this build was uploading: its cache stands."""


def upload_file(remote: CacheStore, key: str, rel: str, path: Path,
                entry: Mapping[str, Any]) -> bool:
    """Upload local file ``path`` as ``KEY/rel`` with its SHA-256 as metadata; False if
    an object with that checksum was there already (left by an earlier run of this build).

    The write is create-only, so that an object of a cache another writer committed
    meanwhile is never replaced (:class:`CommittedMeanwhile` is raised instead); an
    uncommitted object of another build (an earlier, stopped run) is replaced."""
    meta = {META_SHA256: str(entry[layout.CHECKSUM])}
    if remote.put_if_absent(key, rel, path, metadata=meta):
        return True
    there = remote.metadata(key, rel) or {}
    if there.get(META_SHA256) == entry[layout.CHECKSUM]:
        return False
    if remote.has(key):
        raise CommittedMeanwhile(key)
    remote.put(key, rel, path, metadata=meta)
    return True


class ChunkUploader:
    """The hook (``on_chunk_file``) of a build that uploads each final heap chunk file of
    cache ``key`` to ``remote`` on up to ``threads`` threads and then removes it.

    The writer calls it in its own thread; the call returns once the chunk files waiting
    for upload leave room under ``limit`` for the next one (``chunk_bytes``) the writer
    starts, so the build's chunk files never take more than ``limit`` bytes, or one chunk
    if the limit is smaller (plus the chunk each other heap field has open). An upload's
    error is raised by the next call (stopping the build) or by :meth:`finish`.
    """

    def __init__(self, remote: CacheStore, key: str, limit: int, chunk_bytes: int, *,
                 threads: int) -> None:
        self.remote, self.key = remote, key
        self.limit, self.chunk_bytes = limit, chunk_bytes
        #: the chunk files uploaded (or found uploaded), by path in the cache, with sizes
        self.uploaded: dict[str, int] = {}
        self._pool = cf.ThreadPoolExecutor(max(1, threads),
                                           thread_name_prefix="slipstream-upload")
        self._cond = threading.Condition()
        self._waiting = 0  # bytes of final chunk files not yet uploaded and removed
        self._error: BaseException | None = None

    def __call__(self, path: Path, rel: str, entry: dict[str, Any]) -> None:
        size = int(entry["size"])
        with self._cond:
            self._raise_if_failed()
            self._waiting += size
        self._pool.submit(self._upload_and_remove, path, rel, entry, size)
        with self._cond:
            while self._error is None and self._waiting and \
                    self._waiting + self.chunk_bytes > self.limit:
                self._cond.wait()
            self._raise_if_failed()

    def _upload_and_remove(self, path: Path, rel: str, entry: dict[str, Any], size: int) -> None:
        try:
            upload_file(self.remote, self.key, rel, path, entry)
            path.unlink()
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._waiting -= size
            self.uploaded[rel] = size
            self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait for the uploads in progress; raise the first one's error."""
        self._pool.shutdown(wait=True)
        with self._cond:
            self._raise_if_failed()

    def abort(self) -> None:
        """Drop the uploads not started and wait for those running (never raises)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def commit_build(remote: CacheStore, key: str, build_dir: Path, uploaded: Mapping[str, int],
                 *, threads: int, progress: bool) -> bool:
    """Upload the files of the finished build in ``build_dir`` that ``uploaded`` does not
    list, check that ``remote`` holds every file of the manifest (size, and SHA-256 where
    the store keeps metadata), then write the commit marker, create-only. False if
    another writer committed ``key`` first (their cache stands)."""
    attrs = layout.read_manifest(build_dir)
    files: dict[str, Any] = attrs["files"]
    rest = [rel for rel in files if rel not in uploaded]

    def put(rel: str) -> None:
        upload_file(remote, key, rel, build_dir / rel, files[rel])

    try:
        run_parallel(((rel, int(files[rel]["size"])) for rel in rest), put, threads=threads,
                     desc=f"uploading cache {key[:12]}", progress=progress)
    except CommittedMeanwhile:
        return False
    _check_uploaded(remote, key, files, threads)
    return remote.write_marker(key, (build_dir / layout.MANIFEST_NAME).read_bytes(),
                               create_only=True)


def _check_uploaded(remote: CacheStore, key: str, files: Mapping[str, Any],
                    threads: int) -> None:
    """Refuse to commit unless every file of the manifest is in ``remote`` as written."""
    listing = remote.list_objects(key)
    bad = sorted(rel for rel, e in files.items()
                 if rel not in listing or listing[rel].size != int(e["size"]))
    if not bad and remote.supports_object_metadata:
        lock = threading.Lock()

        def check(rel: str) -> None:
            meta = remote.metadata(key, rel) or {}
            if meta.get(META_SHA256) != files[rel][layout.CHECKSUM]:
                with lock:
                    bad.append(rel)

        run_parallel(((rel, 0) for rel in files), check, threads=threads, desc="checking",
                     progress=False)
    if bad:
        shown = ", ".join(sorted(bad)[:5]) + (" …" if len(bad) > 5 else "")
        raise RemoteStoreError(
            f"not committing cache {key} to {remote.describe_url()}: {shown} "
            f"{'is' if len(bad) == 1 else 'are'} not there as this build wrote "
            f"{'it' if len(bad) == 1 else 'them'} (another writer is building the same "
            f"cache into this store?). Nothing is committed; run the build again")
