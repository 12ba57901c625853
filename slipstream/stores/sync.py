"""Team sharing: find a cache locally, else pull it, else build and push it; and sync.

``SlipstreamLoader(..., remote_cache="s3://bucket/caches/")`` goes through
:func:`ensure_cache`; ``loader.sync_remote_cache()`` through :func:`sync_remote_cache`.
See ``docs/sharing.md`` for the workflow and the remote layout.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import layout
from ..cache.additions import add_group
from ..cache.derived import ensure_format
from ..cache.layout import FileLedger
from ..cache.reader import Cache
from ..errors import SlipstreamError
from ..location import redact_url
from ._retry import RetryPolicy
from ._transfer import (
    ADDITION_LISTS,
    DEFAULT_THREADS,
    SyncReport,
    additions,
    check_manifest_paths,
    group_files,
)
from .local import LocalStore, build_dir_name
from .pull import fetch_verified, pull_cache
from .push import push_cache
from .remote import RemoteStore

if TYPE_CHECKING:
    from ..dataset import SlipstreamDataset

__all__ = ["open_remote_store", "remote_store_for", "ensure_cache", "sync_remote_cache",
           "pull_additions", "SyncReport", "RemoteCacheWarning", "UnknownStoreError"]

log = logging.getLogger("slipstream.stores")


class UnknownStoreError(SlipstreamError, ValueError):
    """No registered remote store serves the URL's protocol."""


class RemoteCacheWarning(UserWarning):
    """A cache was built and is usable locally, but sharing it failed (it is retried)."""


def open_remote_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> RemoteStore:
    """The remote store for ``url``, by its protocol, from the registered store plugins."""
    from ..plugins import get_plugin_host

    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    stores = get_plugin_host().stores()
    cls = stores.get(protocol)
    remote = sorted(p for p, c in stores.items() if issubclass(c, RemoteStore))
    if cls is None:
        raise UnknownStoreError(
            f"no cache store serves {redact_url(url)!r} (protocol {protocol!r}); remote stores "
            f"are registered for {remote}. Install the plugin that provides it, or use one "
            f"of those"
        )
    if not issubclass(cls, RemoteStore):
        raise UnknownStoreError(
            f"remote_cache={redact_url(url)!r} is a local directory. To share caches through "
            f"a directory, point every user's cache_dir (or $SLIPSTREAM_CACHE_DIR) at it; "
            f"remote_cache takes an object store URL such as s3://bucket/prefix/"
        )
    return cls.open(url, endpoint_url=endpoint_url, storage_options=storage_options, retry=retry)


def remote_store_for(
    remote: str | RemoteStore | None,
    endpoint_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> RemoteStore | None:
    """``remote`` as a store: a URL is opened (:func:`open_remote_store`), a store is
    used as it is (its own options apply), None stays None."""
    if remote is None or isinstance(remote, RemoteStore):
        if remote is None and (endpoint_url is not None or storage_options):
            raise ValueError("remote_cache_endpoint_url and remote_cache_storage_options "
                             "need remote_cache=URL")
        return remote
    return open_remote_store(str(remote), endpoint_url=endpoint_url,
                             storage_options=storage_options)


def ensure_cache(
    dataset: SlipstreamDataset,
    image_format: str = "jpeg",
    remote: RemoteStore | None = None,
    progress: bool = True,
    *,
    threads: int = DEFAULT_THREADS,
) -> Cache:
    """The dataset's cache: found locally, else pulled from ``remote``, else built here
    (and pushed to ``remote``).

    A local cache is used without contacting the remote, unless an earlier push of it
    did not finish: that push is resumed. A failed push warns
    (:class:`RemoteCacheWarning`) and returns the local cache, which is complete; the
    push is retried by the next call or by :func:`sync_remote_cache`. A failed pull
    raises, and leaves nothing behind that a retry would trip on.
    """
    store = dataset.store
    key = dataset.cache_key(image_format)
    if store.has(key):
        cache = Cache(store.path(key))
        if remote is not None and _pending(store, key).exists():
            _push_or_warn(cache, store, remote, threads, progress)
    elif remote is None:
        return dataset.build_cache(image_format, progress=progress)
    elif remote.has(key):
        report = pull_cache(remote, key, store, threads=threads, progress=progress)
        if report.pulled:
            log.info("pulled cache %s from %s (%d files, %d bytes)", key,
                     remote.describe_url(), len(report.pulled), report.pulled_bytes)
        cache = Cache(store.path(key))
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


def sync_remote_cache(
    cache: Cache,
    remote: RemoteStore,
    *,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
    repair: bool = False,
) -> SyncReport:
    """Bring a local cache and its remote copy level: push what the remote lacks (the
    whole cache if it has none; else the additions it does not list, indexes and derived
    formats, and lost objects), pull the additions others made, and merge both
    manifests. Returns what moved."""
    store = LocalStore(cache.path.parent)
    pending = _pending(store, cache.key)
    store.tmp_root.mkdir(parents=True, exist_ok=True)
    pending.touch()
    report = push_cache(cache, remote, threads=threads, progress=progress, repair=repair)
    pending.unlink(missing_ok=True)
    if report.deferred_to is None:
        pull_additions(cache, remote, report, threads=threads, progress=progress)
    cache.refresh()
    return report


def pull_additions(
    cache: Cache,
    remote: RemoteStore,
    report: SyncReport,
    *,
    only: Collection[tuple[str, str]] | None = None,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
) -> None:
    """Fetch the additions (indexes, derived formats) the remote copy lists and ``cache``
    lacks (those in ``only``, if given), each file checked against the remote manifest,
    and add each through the local publication path for additions
    (:func:`slipstream.cache.additions.add_group`: the cache's lock, one rename, the root
    metadata replaced atomically)."""
    attrs = remote.read_commit(cache.key)
    if attrs is None:
        return
    check_manifest_paths(attrs["files"], remote.object_url(cache.key, layout.MANIFEST_NAME))
    store = LocalStore(cache.path.parent)
    have = additions(layout.read_manifest(cache.path))
    for (list_key, entry), group in sorted(additions(attrs).items()):
        if (list_key, entry) in have or (only is not None and (list_key, entry) not in only):
            continue
        files = group_files(attrs["files"], group)
        if not files:
            continue
        tmp = store.tmp_root / build_dir_name(f"{cache.key}-pull-{group.replace('/', '-')}")
        try:
            fetch_verified(remote, cache.key, files, tmp, threads=threads, progress=progress,
                           desc=f"pulling {group}")
            add_group(cache.path, group, _move_from(tmp / group, files, group),
                      list_key=list_key, entry=entry, parent_attrs=ADDITION_LISTS[list_key][1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report.pulled.extend(sorted(files))
        report.pulled_bytes += sum(int(e["size"]) for e in files.values())
    store.share(cache.path)
    cache.refresh()


def _move_from(src: Path, files: Mapping[str, Any], group: str) -> Any:
    """An ``add_group`` writer that moves verified downloads into its directory."""

    def write(ledger: FileLedger, directory: Path) -> None:
        for rel, entry in files.items():
            inner = rel[len(group) + 1:]
            dest = directory / inner
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src / inner, dest)
            ledger.record(dest, int(entry["size"]), entry[layout.CHECKSUM])

    return write


def _pending(store: LocalStore, key: str) -> Any:
    """Marks a cache whose push has not finished (created before, removed after)."""
    return store.tmp_root / f"{key}.push-pending"


def _push_or_warn(cache: Cache, store: LocalStore, remote: RemoteStore, threads: int,
                  progress: bool) -> None:
    pending = _pending(store, cache.key)
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
