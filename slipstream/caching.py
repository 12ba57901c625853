"""Getting a dataset's cache: find it, else pull it, else build it (and push it).

This layer sits above both the cache format (``slipstream/cache/``, which writes and reads
one directory) and the stores (``slipstream/stores/``, where caches live and how they
travel), and is the one place that joins them. ``SlipstreamDataset.build_cache`` and
``SlipstreamLoader(..., remote_cache=URL)`` come through here. See ``docs/sharing.md``.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import Cache, FieldIndex
from .cache.arrays import DEFAULT_HEAP_CHUNK_BYTES
from .cache.builder import (
    BUILD_ON_ERROR,
    build_settings,
    partial_key,
    select_fields,
    stored_format,
    write_cache,
)
from .cache.derived import ensure_format
from .cache.images import DEFAULT_MAX_PIXELS, check_max_pixels
from .cache.index import write_index as _write_index
from .cache.key import content_key
from .errors import (
    CacheError,
    CacheRootError,
    ConfigurationError,
    RemoteCacheWarning,
    SlipstreamError,
)
from .schema import Field
from .sources.base import Source
from .stores._transfer import DEFAULT_THREADS, SyncReport
from .stores.base import CacheStore
from .stores.local import LocalStore
from .stores.pull import pull_cache
from .stores.push import push_cache
from .stores.remote_build import ChunkUploader, CommittedMeanwhile, commit_build
from .stores.streaming import open_streamed, parse_size, should_stream
from .stores.sync import pull_additions, remote_store_for

if TYPE_CHECKING:
    from .dataset import SlipstreamDataset

__all__ = ["build_cache", "ensure_cache", "open_cache", "write_index"]

log = logging.getLogger("slipstream.stores")


def open_cache(cache: Cache | str | os.PathLike[str]) -> Cache:
    """``cache`` (a directory in a local store, or a :class:`Cache` opened by path) with
    the workspace of the local store holding it, so that indexes and derived formats can
    be added to it."""
    if not isinstance(cache, Cache):
        cache = Cache(Path(cache))
    if cache.workspace is None:
        cache.workspace = LocalStore(cache.path.parent).workspace(cache.path.name)
    return cache


def write_index(cache: Cache | str | os.PathLike[str],
                fields: Sequence[str] = ("label",)) -> dict[str, FieldIndex]:
    """Store value → samples indexes for numeric ``fields`` in the cache
    (:func:`slipstream.cache.write_index`, for a cache opened any way)."""
    return _write_index(open_cache(cache), fields)


def build_cache(
    source: Source,
    store: LocalStore | str | os.PathLike[str],
    *,
    image_format: str = "jpeg",
    fields: Sequence[str] | None = None,
    num_threads: int = 16,
    progress: bool = True,
    heap_chunk_bytes: int = DEFAULT_HEAP_CHUNK_BYTES,
    lock_timeout: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_error: str = "raise",
    exif_orientation: str = "ignore",
    remote: CacheStore | str | None = None,
    local_cache_limit: int | str | None = None,
    threads: int = DEFAULT_THREADS,
) -> Cache:
    """Find the cache of ``source`` in ``store`` (a local store or its directory), or
    build it there.

    The build goes into a private directory, published with one atomic rename once its
    manifest is written: a reader never sees a partial cache, and a build killed at any
    point leaves only a private directory that the next build removes. Concurrent
    builders of the same key (processes of a distributed job, users sharing a directory)
    serialise on a lock: one builds, the others wait up to ``lock_timeout`` seconds
    (forever if None) and then use its cache.

    ``max_pixels``, ``on_error`` and ``exif_orientation`` are as in
    :func:`slipstream.cache.builder.write_cache`: a cache that left samples out
    (``on_error="skip"``) is published under :func:`~slipstream.cache.builder.partial_key`,
    so it is found only by builds that also skip; ``exif_orientation="apply"`` is another
    cache (another key).

    ``remote`` (a store or its URL, e.g. ``"s3://bucket/caches/"``) alone: the cache is
    found or built here as above, then pushed there (:func:`~slipstream.stores.push_cache`,
    on ``threads`` threads).

    ``remote`` with ``local_cache_limit`` (bytes, or a size such as ``"20GB"``): the
    cache is built straight into the remote store, for a cache larger than the local
    disk. Each heap chunk file is uploaded as soon as it is written, then removed, so
    the build keeps at most the limit (or one chunk, if the limit is smaller) plus the
    chunk being written on local disk. The commit marker is uploaded last, once every
    file is checked to be there, so a reader never takes a half-uploaded cache for
    complete; a failed or killed build commits nothing and can be run again (objects
    already uploaded with the right checksum are kept). Nothing is built if ``remote``
    holds the cache already. Returns the cache streamed from ``remote`` through at most
    the limit of local disk (``docs/streaming.md``); if ``store`` has a full copy, that
    copy is pushed and returned instead. Such a build writes the stored JPEG format and
    every sample (``image_format="jpeg"``, ``on_error="raise"``); a remote that fails
    raises :class:`~slipstream.errors.RemoteStoreError` naming the object.
    """
    if on_error not in BUILD_ON_ERROR:
        raise ValueError(f"on_error must be one of {BUILD_ON_ERROR}, got {on_error!r}")
    check_max_pixels(max_pixels)
    if not isinstance(store, LocalStore):
        store = LocalStore(store)
    selected = select_fields(source, fields)
    base_format = stored_format(image_format)
    key = content_key(source.name, source.fingerprint(), selected, base_format,
                      settings=build_settings(exif_orientation))
    remote_store = remote_store_for(remote)
    limit = parse_size(local_cache_limit) if local_cache_limit is not None else None
    if remote_store is not None and limit is not None:
        if image_format != base_format or on_error != "raise":
            raise ConfigurationError(
                f"build_cache(remote=..., local_cache_limit=...) builds the stored "
                f"{base_format} cache with every sample (image_format={base_format!r}, "
                f"on_error='raise'), got image_format={image_format!r}, "
                f"on_error={on_error!r}: derived formats need a full local copy, and a "
                f"build that skips samples changes its key only at the end")
        return _build_into_remote(source, store, remote_store, key, selected, limit,
                                  num_threads=num_threads, threads=threads, progress=progress,
                                  heap_chunk_bytes=heap_chunk_bytes, lock_timeout=lock_timeout,
                                  max_pixels=max_pixels, exif_orientation=exif_orientation)
    if limit is not None:
        raise ConfigurationError(
            f"build_cache(local_cache_limit={local_cache_limit!r}) needs remote=URL: the "
            f"limit bounds the local disk of a build uploaded to a remote store as it goes")
    found = _find(store, key, on_error)
    if found is None:
        _check_root(store.root)
        with store.build_lock(key, timeout=lock_timeout):
            found = _find(store, key, on_error)  # another process built it while we waited
            if found is None:
                build_dir = store.new_build_dir(key)
                try:
                    found = write_cache(
                        source, build_dir, key, selected, image_format=base_format,
                        num_threads=num_threads, progress=progress,
                        heap_chunk_bytes=heap_chunk_bytes, max_pixels=max_pixels,
                        on_error=on_error, exif_orientation=exif_orientation)
                    store.publish(build_dir, found)
                except BaseException:
                    shutil.rmtree(build_dir, ignore_errors=True)
                    raise
    cache = store.open_cache(found)
    ensure_format(cache, image_format, num_threads=num_threads, progress=progress)
    if remote_store is not None:
        push_cache(cache, remote_store, threads=threads, progress=progress)
    return cache


def _build_into_remote(source: Source, store: LocalStore, remote: CacheStore, key: str,
                       selected: Sequence[Field], limit: int, *, num_threads: int,
                       threads: int, progress: bool, heap_chunk_bytes: int,
                       lock_timeout: float | None, max_pixels: int,
                       exif_orientation: str) -> Cache:
    """:func:`build_cache` with ``remote`` and ``local_cache_limit``."""
    if store.has(key):
        cache = store.open_cache(key)
        push_cache(cache, remote, threads=threads, progress=progress)
        return cache
    _check_root(store.root)
    with store.build_lock(key, timeout=lock_timeout):
        if not remote.has(key):
            build_dir = store.new_build_dir(key)
            uploader = ChunkUploader(remote, key, limit, heap_chunk_bytes, threads=threads)
            try:
                write_cache(source, build_dir, key, selected, image_format="jpeg",
                            num_threads=num_threads, progress=progress,
                            heap_chunk_bytes=heap_chunk_bytes, max_pixels=max_pixels,
                            exif_orientation=exif_orientation, on_chunk_file=uploader)
                uploader.finish()
                if commit_build(remote, key, build_dir, uploader.uploaded, threads=threads,
                                progress=progress):
                    log.info("built cache %s into %s", key, remote.describe_url())
            except CommittedMeanwhile:
                log.info("cache %s was committed to %s by another writer while this build "
                         "was uploading; using it", key, remote.describe_url())
            finally:
                uploader.abort()
                shutil.rmtree(build_dir, ignore_errors=True)
    return open_streamed(remote, key, store, limit, threads=threads, progress=progress)


def _find(store: LocalStore, key: str, on_error: str) -> str | None:
    """The key of the complete cache of ``key`` in ``store``, else (when skipping is
    allowed) of its partial one; None when neither is there."""
    for k in (key, partial_key(key)) if on_error == "skip" else (key,):
        if store.has(k):
            return k
    return None


def _check_root(root: Path) -> None:
    """Refuse, in one line, a cache root that is not a writable directory."""
    what = None
    if root.exists() and not root.is_dir():
        what = "is not a directory"
    else:
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            what = f"cannot be created: {probe} is not a directory"
        elif not os.access(probe, os.W_OK | os.X_OK):
            what = ("is not writable by this user" if probe == root else
                    f"cannot be created: {probe} is not writable by this user")
    if what:
        raise CacheRootError(f"cache directory {root} {what}; choose another with cache_dir= "
                             f"(or --cache-dir, or $SLIPSTREAM_CACHE_DIR)")


def ensure_cache(
    dataset: SlipstreamDataset,
    image_format: str = "jpeg",
    remote: CacheStore | None = None,
    progress: bool = True,
    *,
    threads: int = DEFAULT_THREADS,
    local_cache_limit: int | None = None,
) -> Cache:
    """The dataset's cache: found locally, else pulled from ``remote`` (or streamed from
    it, when it is larger than ``local_cache_limit`` bytes: docs/streaming.md), else built
    here (and pushed to ``remote``). With ``local_cache_limit`` a cache that is nowhere
    yet is built straight into ``remote``, never holding more than the limit here, and
    streamed (:func:`build_cache` with ``remote``), unless it needs a full local copy: a
    derived image format, or a dataset built with ``on_error="skip"``.

    The cache is marked in use while this runs, and the returned cache can mark itself
    (``cache.mark_in_use()``, a shared lock: :meth:`LocalStore.hold`), as a loader does
    for each epoch, so that ``slipstream rm`` and ``prune`` leave it alone.

    A local cache is used without contacting the remote, unless an earlier push of it
    did not finish: that push is resumed. A failed push warns
    (:class:`~slipstream.errors.RemoteCacheWarning`) and returns the local cache, which is
    complete; the push is retried by the next call or by
    :func:`slipstream.stores.sync_remote_cache`. A failed pull raises, and leaves nothing
    behind that a retry would trip on.
    """
    store = dataset.store
    key = dataset.cache_key(image_format)
    if isinstance(remote, LocalStore) and remote.root.resolve() == store.root.resolve():
        remote = None  # the remote copy is this very directory: nothing to pull or push
    in_use = store.hold(key)  # before looking: a prune in progress finishes first
    try:
        cache = _find_pull_or_build(dataset, image_format, remote, progress, threads,
                                    local_cache_limit, store, key)
    finally:
        in_use.release()
    cache.mark_in_use = functools.partial(store.hold, key)
    return cache


def _find_pull_or_build(dataset: SlipstreamDataset, image_format: str,
                        remote: CacheStore | None, progress: bool, threads: int,
                        local_cache_limit: int | None, store: LocalStore, key: str) -> Cache:
    if store.has(key):
        cache = store.open_cache(key)
        if remote is not None and store.push_pending(key).exists():
            _push_or_warn(cache, store, remote, threads, progress)
    elif remote is None:
        return dataset.build_cache(image_format, progress=progress)
    elif local_cache_limit is not None and should_stream(remote, key, local_cache_limit):
        cache = open_streamed(remote, key, store, local_cache_limit, threads=threads,
                              progress=progress)
        if image_format != cache.image_format and image_format not in cache.image_formats:
            raise CacheError(
                f"{remote.object_url(key)} holds no {image_format} images (it has "
                f"{list(cache.image_formats)}), and a streamed cache cannot derive them: "
                f"stream image_format={cache.image_format!r}, or derive {image_format} once "
                f"from a full copy and push it (`slipstream push`)")
        return cache
    elif remote.has(key):
        report = pull_cache(remote, key, store, threads=threads, progress=progress)
        if report.pulled:
            log.info("pulled cache %s from %s (%d files, %d bytes)", key,
                     remote.describe_url(), len(report.pulled), report.pulled_bytes)
        cache = store.open_cache(key)
    elif (local_cache_limit is not None and image_format == stored_format(image_format)
          and dataset.on_error == "raise"):
        # Nowhere yet, and the local disk is bounded: build it into the remote as it goes
        # (never more than the limit here), then stream it like any remote cache.
        return dataset.build_cache(image_format, progress=progress, remote=remote,
                                   local_cache_limit=local_cache_limit)
    else:
        cache = dataset.build_cache(image_format, progress=progress)  # derives formats too
        _push_or_warn(cache, store, remote, threads, progress)
        return cache
    if image_format != cache.image_format and image_format not in cache.image_formats:
        if remote is not None:  # fetching a derived format beats deriving it again
            wanted = [("derived", f"{f}/{image_format}") for f in cache.image_fields]
            try:
                pull_additions(cache, remote, SyncReport(key, remote.describe_url()),
                               only=wanted, threads=threads, progress=progress)
            except (SlipstreamError, OSError) as exc:
                warnings.warn(RemoteCacheWarning(
                    f"could not fetch {image_format} images of cache {key} from "
                    f"{remote.describe_url()} ({remote.scrub(str(exc))}); deriving them here"
                ), stacklevel=2)
        ensure_format(cache, image_format, progress=progress)
    return cache


def _push_or_warn(cache: Cache, store: LocalStore, remote: CacheStore, threads: int,
                  progress: bool) -> None:
    pending = store.push_pending(cache.key)
    pending.touch()
    try:
        report = push_cache(cache, remote, threads=threads, progress=progress)
    except (SlipstreamError, OSError) as exc:
        warnings.warn(RemoteCacheWarning(
            f"the cache {cache.key} is built and usable here, but pushing it to "
            f"{remote.describe_url()} failed: {remote.scrub(str(exc))}. Nothing partial is "
            f"visible there; the push resumes on the next run with this remote_cache, or "
            f"with loader.sync_remote_cache()"
        ), stacklevel=3)
        return
    pending.unlink(missing_ok=True)
    log.info("pushed cache %s to %s: %s", cache.key, remote.describe_url(), report.summary())
