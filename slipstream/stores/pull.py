"""Fetching a committed remote cache into a local store: every file verified, then one rename."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache import layout, manifest
from ..cache.verify import file_digest
from ..errors import CacheCorruptError, CacheNotFoundError, RemoteObjectNotFoundError
from ._transfer import DEFAULT_THREADS, SyncReport, check_manifest_paths, run_parallel
from .base import CacheStore
from .local import LocalStore

__all__ = ["pull_cache", "fetch_verified", "fetch_one_verified", "committed_manifest"]


def pull_cache(
    remote: CacheStore,
    key: str,
    store: LocalStore,
    *,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
    lock_timeout: float | None = None,
) -> SyncReport:
    """Copy committed cache ``key`` from ``remote`` into ``store``, unless it is there.

    Takes the store's build lock for ``key``, so processes sharing the directory pull
    (or build) a cache once: the others wait, then find it. Files are fetched in
    parallel into a private directory under ``ROOT/.tmp``, each checked against the
    remote manifest's size and SHA-256, and the directory is published with one atomic
    rename. A failure (or a kill) at any point publishes nothing; the next pull starts
    over and removes what a killed one left.
    """
    report = SyncReport(key, remote.describe_url())
    if store.has(key):
        return report
    with store.build_lock(key, timeout=lock_timeout):
        if store.has(key):  # another process pulled or built it while we waited
            return report
        marker, attrs = committed_manifest(remote, key)
        files = attrs["files"]
        build_dir = store.new_build_dir(key)
        try:
            # The directory is private until the rename, so the root metadata may go first:
            # the reader's own checks (format version) run before anything is downloaded.
            (build_dir / layout.MANIFEST_NAME).write_bytes(marker)
            layout.read_manifest(build_dir)
            fetch_verified(remote, key, files, build_dir, threads=threads, progress=progress,
                           desc=f"pulling cache {key[:12]}")
            store.publish(build_dir, key)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
    report.pulled = sorted(files)
    report.pulled_bytes = sum(int(e["size"]) for e in files.values())
    return report


def committed_manifest(remote: CacheStore, key: str) -> tuple[bytes, dict[str, Any]]:
    """The commit marker of cache ``key`` in ``remote`` and its attributes, checked: it
    commits a cache, names ``key``, and lists only paths inside the cache."""
    marker = remote.read_marker(key)
    attrs = manifest.parse_committed(marker)
    if marker is None or attrs is None:
        raise CacheNotFoundError(
            f"{remote.object_url(key)} holds no committed cache (no root zarr.json with a "
            f"manifest): it was never pushed, or its push has not finished"
        )
    where = remote.object_url(key, layout.MANIFEST_NAME)
    if attrs.get("key") != key:
        raise CacheCorruptError(f"{where} describes cache {attrs.get('key')!r}, not {key}: "
                                f"it was copied to the wrong place; refusing to use it")
    check_manifest_paths(attrs["files"], where)
    return marker, attrs


def fetch_verified(
    remote: CacheStore,
    key: str,
    files: Mapping[str, Any],
    dest_root: Path,
    *,
    threads: int,
    progress: bool,
    desc: str,
) -> None:
    """Download ``files`` (manifest entries) of cache ``key`` below ``dest_root``, checking
    each one's size and SHA-256. A mismatch is fetched once more (a damaged transfer),
    then reported as :class:`CacheCorruptError` naming the object; a listed object that is
    missing, as :class:`~slipstream.errors.RemoteObjectNotFoundError` saying how to repair."""

    def fetch(rel: str) -> None:
        fetch_one_verified(remote, key, rel, files[rel], dest_root / rel)

    run_parallel(((rel, int(e["size"])) for rel, e in files.items()), fetch, threads=threads,
                 desc=desc, progress=progress)


def fetch_one_verified(remote: CacheStore, key: str, rel: str, entry: Mapping[str, Any],
                       dest: Path) -> None:
    """Download ``KEY/rel`` to ``dest`` and check it against its manifest ``entry`` (size
    and SHA-256): a mismatch is fetched once more, then removed and reported as
    :class:`CacheCorruptError` naming the object."""
    for _ in range(2):
        try:
            remote.get_file(key, rel, dest)
        except RemoteObjectNotFoundError:
            raise RemoteObjectNotFoundError(
                f"{remote.object_url(key, rel)} is missing, but the manifest "
                f"{remote.object_url(key, layout.MANIFEST_NAME)} lists it: the remote cache "
                f"is damaged and nothing was published locally. Replace the remote copy "
                f"from a good one with `slipstream push --repair {key} --remote URL`, or "
                f"delete {remote.object_url(key)} so that the next run builds and pushes it "
                f"again") from None
        size, digest = file_digest(dest)
        if size == entry["size"] and digest == entry[layout.CHECKSUM]:
            return
    dest.unlink(missing_ok=True)
    raise CacheCorruptError(
        f"{remote.object_url(key, rel)} is corrupt: it is {size} bytes with sha256 {digest}, "
        f"but the manifest {remote.object_url(key, layout.MANIFEST_NAME)} says "
        f"{entry['size']} bytes with sha256 {entry[layout.CHECKSUM]}. It was not used and "
        f"nothing was published locally. Replace the remote copy from a good one with "
        f"`slipstream push --repair KEY --remote URL`, or delete {remote.object_url(key)} "
        f"so that the next run builds and pushes it again"
    )
