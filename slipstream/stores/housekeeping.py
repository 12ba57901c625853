"""Housekeeping of a local cache root: what each cache takes, removing caches, pruning
the least recently used, all safe while other processes read.

A reader (``SlipstreamLoader``, through :func:`slipstream.caching.ensure_cache`) holds a
shared lock on ``ROOT/.tmp/KEY.in-use`` while it has cache ``KEY`` open
(:meth:`LocalStore.hold`); removal takes that lock exclusively without waiting and skips
a cache in use. A removed cache disappears with one rename (into ``.tmp``), so a reader
that starts later finds it absent and builds or fetches it again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import manifest
from .local import LocalStore, build_dir_name

__all__ = ["CacheUsage", "usage", "remove_cache", "prune", "PruneReport"]


@dataclass
class CacheUsage:
    """One cache of a local root as ``slipstream du`` shows it."""

    key: str
    #: "full" (``ROOT/KEY``) or "streamed" (``ROOT/.stream/KEY``, chunks on demand)
    kind: str
    path: Path
    #: bytes its files take on disk, as ``du`` counts them
    disk_bytes: int
    #: bytes of the whole cache as its manifest lists it
    cache_bytes: int
    #: disk bytes by part: a field (images by format, e.g. ``image (jpeg)``), ``indexes``
    parts: dict[str, int] = field(default_factory=dict)
    #: last time a reader opened it (seconds since the epoch)
    last_use: float = 0.0
    source: str = ""


def _disk_bytes(path: Path) -> int:
    """What the file takes on disk, as ``du`` counts it (a sparse file's holes not)."""
    st = path.stat()
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def _part_of(rel: str, attrs: dict[str, Any]) -> str:
    parts = rel.split("/")
    if parts[0] == "_indexes":
        return "indexes"
    kinds = {f.get("name"): f.get("kind") for f in attrs.get("fields", ())
             if isinstance(f, dict)}
    if kinds.get(parts[0]) != "image":
        return parts[0]
    derived = {e.partition("/")[2] for e in attrs.get("derived", ())}
    fmt = parts[1] if len(parts) > 2 and parts[1] in derived else attrs.get("image_format", "jpeg")
    return f"{parts[0]} ({fmt})"


def _measure(store: LocalStore, key: str, kind: str, path: Path) -> CacheUsage | None:
    try:
        attrs = manifest.parse_committed((path / manifest.MANIFEST_NAME).read_bytes()) or {}
    except OSError:
        attrs = {}
    found = CacheUsage(key, kind, path, 0, sum(int(e.get("size", 0))
                                               for e in attrs.get("files", {}).values()))
    for p in path.rglob("*"):
        try:
            if not p.is_file() or p.name.startswith("."):
                continue
            size = _disk_bytes(p)
        except FileNotFoundError:
            continue
        found.disk_bytes += size
        rel = p.relative_to(path).as_posix()
        if rel != manifest.MANIFEST_NAME:
            part = _part_of(rel, attrs)
            found.parts[part] = found.parts.get(part, 0) + size
    stamps = []
    for p in (store.in_use_path(key), path / manifest.MANIFEST_NAME):
        try:
            stamps.append(p.stat().st_mtime)
        except OSError:
            pass
    found.last_use = max(stamps, default=0.0)
    source = attrs.get("source") or {}
    found.source = f"{source.get('source', '?')}: {source.get('url', '?')}"
    return found


def usage(store: LocalStore) -> list[CacheUsage]:
    """Every cache in ``store``, full and streamed, least recently used first."""
    out = []
    for key in store.names():
        got = _measure(store, key, "full", store.path(key))
        if got is not None:
            out.append(got)
    for key in store.streamed_keys():
        got = _measure(store, key, "streamed", store.stream_dir(key))
        if got is not None:
            out.append(got)
    return sorted(out, key=lambda u: (u.last_use, u.key))


def remove_cache(store: LocalStore, key: str, kinds: tuple[str, ...] = ("full", "streamed")
                 ) -> bool:
    """Remove cache ``key`` (its full copy and its streamed part) unless a reader has it
    open: False (nothing removed) if one does."""
    claim = store.claim_unused(key)
    if claim is None:
        return False
    try:
        for kind in kinds:
            path = store.path(key) if kind == "full" else store.stream_dir(key)
            if path.is_dir():
                aside = store.tmp_root / build_dir_name(f"{key}-removed")
                os.rename(path, aside)  # gone from view at once; deleted below
                shutil.rmtree(aside, ignore_errors=True)
    finally:
        claim.release()
    return True


@dataclass
class PruneReport:
    removed: list[CacheUsage] = field(default_factory=list)
    in_use: list[CacheUsage] = field(default_factory=list)
    #: disk bytes of every cache after pruning
    total_after: int = 0


def prune(store: LocalStore, max_size: int) -> PruneReport:
    """Remove caches, least recently used first, until all of them together take at most
    ``max_size`` bytes of disk; caches in use are skipped (and reported)."""
    caches = usage(store)
    report = PruneReport(total_after=sum(u.disk_bytes for u in caches))
    for u in caches:
        if report.total_after <= max_size:
            break
        if remove_cache(store, u.key, (u.kind,)):
            report.removed.append(u)
            report.total_after -= u.disk_bytes
        else:
            report.in_use.append(u)
    return report
