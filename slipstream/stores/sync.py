"""Opening a store by URL, and syncing a local cache with its remote copy.

"Find, else pull, else build and push" is :func:`slipstream.caching.ensure_cache`, the
layer above stores. See ``docs/sharing.md`` for the workflow and the remote layout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..cache import Cache, layout
from ..cache.additions import add_group
from ..cache.layout import FileLedger
from ..errors import UnknownStoreError
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
from .base import CacheStore
from .local import LocalStore
from .pull import fetch_verified
from .push import push_cache

__all__ = ["open_remote_store", "remote_store_for", "sync_remote_cache", "pull_additions",
           "SyncReport"]


def open_remote_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> CacheStore:
    """The store for ``url``, by its protocol, from the registered store plugins: any
    object store or filesystem a plugin serves (``s3://``, a shared directory)."""
    from ..plugins import get_plugin_host

    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    stores = get_plugin_host().stores()
    cls = stores.get(protocol)
    if cls is None:
        raise UnknownStoreError(
            f"no cache store serves {redact_url(url)!r} (protocol {protocol!r}); stores are "
            f"registered for {sorted(stores)}. Install the plugin that provides it, or use "
            f"one of those"
        )
    return cls.open(url, endpoint_url=endpoint_url, storage_options=storage_options, retry=retry)


def remote_store_for(
    remote: str | os.PathLike[str] | CacheStore | None,
    endpoint_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> CacheStore | None:
    """``remote`` as a store: a URL is opened (:func:`open_remote_store`), a store is
    used as it is (its own options apply), None stays None."""
    if remote is None or isinstance(remote, CacheStore):
        if remote is None and (endpoint_url is not None or storage_options):
            raise ValueError("remote_cache_endpoint_url and remote_cache_storage_options "
                             "need remote_cache=URL")
        return remote
    return open_remote_store(str(remote), endpoint_url=endpoint_url,
                             storage_options=storage_options)


def sync_remote_cache(
    cache: Cache,
    remote: CacheStore,
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
    pending = store.push_pending(cache.key)
    pending.touch()
    report = push_cache(cache, remote, threads=threads, progress=progress, repair=repair)
    pending.unlink(missing_ok=True)
    if report.deferred_to is None:
        pull_additions(cache, remote, report, threads=threads, progress=progress)
    cache.refresh()
    return report


def pull_additions(
    cache: Cache,
    remote: CacheStore,
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
    workspace = cache.workspace or store.workspace(cache.key)
    have = additions(layout.read_manifest(cache.path))
    for (list_key, entry), group in sorted(additions(attrs).items()):
        if (list_key, entry) in have or (only is not None and (list_key, entry) not in only):
            continue
        files = group_files(attrs["files"], group)
        if not files:
            continue
        tmp = workspace.staging_dir(f"pull-{group}")
        try:
            fetch_verified(remote, cache.key, files, tmp, threads=threads, progress=progress,
                           desc=f"pulling {group}")
            add_group(cache.path, workspace, group, _move_from(tmp / group, files, group),
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
