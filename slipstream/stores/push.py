"""Uploading a local cache to a remote store: every file first, the commit marker last.

The commit marker is ``KEY/zarr.json`` with the manifest. Each object is uploaded with
its SHA-256 and the *build id* of its cache (a digest of the cache's data manifest) as
metadata, so a pusher can tell its objects from another build's without downloading
them. Two builds of one key hold the same samples but need not be identical byte for
byte (heap order follows read completion), so the protocol never mixes two builds:

- **The key is not committed.** Each missing file is uploaded as a create-only write
  (``If-None-Match: *``), so a file another build wrote first is never replaced by
  accident; an object already there with this file's checksum is kept (an interrupted
  push resumes). Between uncommitted builds the lower build id wins: a pusher that
  finds objects of a lower build written in the last ``STALE_AFTER`` seconds *defers*
  (that pusher will commit; this one reports it and stops), and one that finds only
  higher or stale builds' objects overwrites them. When every object matches, the marker
  is written, create-only again: of two committers exactly one succeeds. It is then read
  back and checked.
- **The key is committed.** The data of the cache that stands is not replaced. What it
  lacks is added (indexes it does not list; for the same build, any listed object that
  went missing), then the marker is rewritten with the union of both manifests, read
  back, and merged again if another writer raced it. Only a committed cache found
  damaged by this pusher's own objects, or ``repair=True``, makes a pusher replace it
  with its own build, data first and marker last.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import layout, manifest
from ..cache.reader import Cache
from ..errors import CacheCorruptError, RemoteStoreError
from ._transfer import (
    ADDITION_LISTS,
    DEFAULT_THREADS,
    SyncReport,
    additions,
    base_files,
    check_manifest_paths,
    group_files,
    run_parallel,
)
from .base import CacheStore
from .local import LocalStore

__all__ = ["push_cache", "build_id", "STALE_AFTER"]

#: Rounds of look-then-act before a push gives up on a store other writers keep changing.
MAX_ROUNDS = 6
#: Rounds a pusher leaves a lower build's writer to repair damage before acting itself.
GRACE_ROUNDS = 2
#: Seconds after which another build's unfinished upload is taken for abandoned.
STALE_AFTER = 600.0
#: Object metadata keys (``x-amz-meta-…`` on S3).
META_SHA256 = "sha256"
META_BUILD = "slipstream-build"


def build_id(attrs: Mapping[str, Any]) -> str:
    """A digest of a cache's manifest without its additions (indexes, derived formats):
    equal exactly for copies of one build."""
    data = json.dumps(sorted((rel, e["size"], e[layout.CHECKSUM])
                             for rel, e in base_files(attrs).items()), separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def push_cache(
    cache: Cache | str | Path,
    remote: CacheStore,
    *,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
    repair: bool = False,
) -> SyncReport:
    """Make ``remote`` hold ``cache`` (a published local cache), root ``zarr.json`` last.

    Processes sharing the local directory push a key one at a time (a lock next to the
    build lock). ``repair=True`` checks every remote object against the remote manifest
    and replaces what is missing or damaged (with this build, if another one stands).
    The report's ``deferred_to`` names another build whose pusher will commit the key.
    """
    if not remote.supports_writes:
        raise RemoteStoreError(f"cannot push to {remote.describe_url()}: {type(remote).__name__} "
                               f"is read-only (supports_writes is False); push to a writable store")
    cache_dir = Path(cache.path if isinstance(cache, Cache) else cache)
    key = layout.read_manifest(cache_dir)["key"]
    with LocalStore(cache_dir.parent).push_lock(key):
        return _Push(remote, key, cache_dir, threads, progress, repair).run()


@dataclass
class _Obj:
    size: int
    modified: float | None
    sha256: str | None
    build: str | None


def _fresh(obj: _Obj, now: float) -> bool:
    """Written less than ``STALE_AFTER`` seconds ago (or of unknown age)."""
    return obj.modified is None or now - obj.modified < STALE_AFTER


class _CommittedMeanwhile(Exception):
    """Another writer committed the key while this push was uploading."""


class _Push:
    def __init__(self, remote: CacheStore, key: str, cache_dir: Path, threads: int,
                 progress: bool, repair: bool) -> None:
        self.remote, self.key, self.cache_dir = remote, key, cache_dir
        self.threads, self.progress, self.repair = threads, progress, repair
        self.report = SyncReport(key, remote.describe_url())
        self.pushed: dict[str, int] = {}
        self.lock = threading.Lock()
        self.attrs: dict[str, Any] = {}
        self.files: dict[str, Any] = {}
        self.mine = ""
        self.round = 0
        self.wrote_marker = False

    def run(self) -> SyncReport:
        for self.round in range(MAX_ROUNDS):
            if self.round:
                time.sleep(random.uniform(0.2, 0.6) * self.round)
            self.attrs = layout.read_manifest(self.cache_dir)  # additions may be new
            self.files = self.attrs["files"]
            self.mine = build_id(self.attrs)
            attrs = self.remote.read_commit(self.key)
            if attrs is None:
                done = self._uncommitted()
            else:
                check_manifest_paths(attrs["files"],
                                     self.remote.object_url(self.key, layout.MANIFEST_NAME))
                done = self._committed(attrs)
            if done:
                self.report.pushed = sorted(self.pushed)
                self.report.pushed_bytes = sum(self.pushed.values())
                return self.report
        raise RemoteStoreError(
            f"gave up pushing {self.key} to {self.remote.describe_url()}: other writers "
            f"changed it during each of {MAX_ROUNDS} attempts; run the push again"
        )

    # -- the key is not committed ---------------------------------------------------------------
    def _uncommitted(self) -> bool:
        objs = self._scan(None)
        if self._defer_to(objs):
            return True
        create = [r for r in self.files if r not in objs]
        replace = [r for r in self.files if r in objs and not self._ours(objs[r], r)]
        if replace and not create and self._one_fresh_build(objs, replace) and \
                self.round < GRACE_ROUNDS:
            return False  # another build has every file: let its pusher commit
        try:
            conflicts = self._upload(create, create_only=True, watch=_CommitWatch(self))
            self._upload(replace, create_only=False, watch=_CommitWatch(self))
        except _CommittedMeanwhile:
            return False  # the next round adds to the other writer's cache
        if conflicts or self._damaged(self.files):
            return False  # another writer interleaved: look again
        if not self.remote.write_marker(self.key, self._marker(), create_only=True):
            return False  # another writer committed first
        self.report.committed = self.wrote_marker = True
        now = self.remote.read_commit(self.key)
        return now is not None and build_id(now) == self.mine and \
            not self._damaged(now["files"])

    # -- the key is committed ---------------------------------------------------------------
    def _committed(self, attrs: dict[str, Any]) -> bool:
        theirs = attrs["files"]
        owner = build_id(attrs)
        same = owner == self.mine
        if self.repair or self.wrote_marker or not same:
            objs = self._scan(theirs)
            bad = [r for r, e in theirs.items() if not self._intact(objs.get(r), e)]
            if bad:
                culprits = {objs[r].build if r in objs else None for r in bad}
                if self._defer_to({r: objs[r] for r in bad if r in objs}):
                    return True  # a lower build's pusher is replacing it
                if same:  # the cache that stands is ours: put our objects back
                    self._upload(bad, create_only=False)
                    return False
                if self.repair or (culprits == {self.mine} and (
                        self.mine < owner or self.round >= GRACE_ROUNDS)):
                    self._take_over()
                    return False
                if self.round < MAX_ROUNDS - 1 and culprits - {self.mine, None}:
                    return False  # another writer is at work on it: look again
                shown = ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
                raise CacheCorruptError(
                    f"the cache at {self.remote.object_url(self.key)} is damaged: {shown} "
                    f"do not match its manifest. Replace it with a good local copy: "
                    f"`slipstream push --repair {self.key} --remote URL`"
                )
        entries, new_files = self._additions(attrs)
        uploads = set(new_files)
        if same:
            listing = self.remote.list_objects(self.key)
            uploads |= {r for r in self.files if r not in listing}
        if not uploads and not entries:
            return True
        self._upload(sorted(uploads), create_only=False)
        if not entries:
            return True
        merged = dict(attrs)
        merged["files"] = {**theirs, **new_files}
        for list_key, entry in entries:
            merged[list_key] = sorted({*attrs.get(list_key, ()), entry})
        self.remote.write_marker(self.key, manifest.encode_root(merged))
        self.report.committed = True
        return False  # the next round reads it back: a racing writer may have replaced it

    def _additions(self, attrs: Mapping[str, Any]) -> tuple[list[tuple[str, str]],
                                                           dict[str, Any]]:
        """The additions (indexes, derived formats) this cache lists and the remote one
        does not, and the manifest entries of their files."""
        theirs = attrs["files"]
        entries = sorted(set(additions(self.attrs)) - set(additions(attrs)))
        files: dict[str, Any] = {}
        for list_key, entry in entries:
            group = ADDITION_LISTS[list_key][0] + entry
            files.update(group_files(self.files, group))
            parent = group.rpartition("/")[0] + "/" + layout.MANIFEST_NAME
            if group.count("/") and parent in self.files and parent not in theirs:
                files[parent] = self.files[parent]  # e.g. _indexes/zarr.json
        return entries, {r: e for r, e in files.items() if theirs.get(r) != e}

    def _take_over(self) -> None:
        """Replace the committed cache by this build: data first, then the marker."""
        self._upload(sorted(self.files), create_only=False)
        self.remote.write_marker(self.key, self._marker())
        self.report.committed = self.wrote_marker = True

    # -- objects ------------------------------------------------------------------------------
    def _scan(self, files: Collection[str] | None) -> dict[str, _Obj]:
        """The objects under ``KEY/`` (those of ``files`` only, if given) with metadata."""
        listing = self.remote.list_objects(self.key)
        listing.pop(layout.MANIFEST_NAME, None)
        wanted = [r for r in listing if files is None or r in files]
        out: dict[str, _Obj] = {}

        def head(rel: str) -> None:
            meta = self.remote.metadata(self.key, rel)
            if meta is not None:
                info = listing[rel]
                with self.lock:
                    out[rel] = _Obj(info.size, info.modified, meta.get(META_SHA256),
                                    meta.get(META_BUILD))

        run_parallel(((r, 0) for r in wanted), head, threads=self.threads, desc="checking",
                     progress=False)
        return out

    def _ours(self, obj: _Obj, rel: str) -> bool:
        return obj.size == self.files[rel]["size"] and \
            obj.sha256 == self.files[rel][layout.CHECKSUM]

    def _intact(self, obj: _Obj | None, entry: Mapping[str, Any]) -> bool:
        if obj is None or obj.size != entry["size"]:
            return False
        if obj.sha256 is None:  # uploaded by another tool: only a repair distrusts it
            return not self.repair
        return obj.sha256 == entry[layout.CHECKSUM]

    def _damaged(self, files: Mapping[str, Any]) -> bool:
        objs = self._scan(files)
        return any(not self._intact(objs.get(r), e) for r, e in files.items())

    def _defer_to(self, objs: Mapping[str, _Obj]) -> bool:
        """Whether objects of a lower build were written recently: its pusher goes on."""
        now = time.time()
        lower = sorted(o.build for o in objs.values()
                       if o.build and o.build < self.mine and _fresh(o, now))
        if lower:
            self.report.deferred_to = lower[0]
        return bool(lower)

    def _one_fresh_build(self, objs: Mapping[str, _Obj], rels: list[str]) -> bool:
        now = time.time()
        builds = {objs[r].build for r in rels}
        return len(builds) == 1 and None not in builds and all(
            _fresh(objs[r], now) for r in rels)

    def _upload(self, rels: list[str], *, create_only: bool,
                watch: _CommitWatch | None = None) -> list[str]:
        """Upload ``rels``; returns those a create-only write found taken by another
        build's object (an object with this file's checksum counts as uploaded)."""
        conflicts: list[str] = []

        def put(rel: str) -> None:
            if watch is not None and watch.committed():
                raise _CommittedMeanwhile(rel)
            entry = self.files[rel]
            meta = {META_SHA256: entry[layout.CHECKSUM], META_BUILD: self.mine}
            src = self.cache_dir / rel
            if not create_only:
                self.remote.put(self.key, rel, src, metadata=meta)
            elif not self.remote.put_if_absent(self.key, rel, src, metadata=meta):
                there = self.remote.metadata(self.key, rel) or {}
                if there.get(META_SHA256) != entry[layout.CHECKSUM]:
                    with self.lock:
                        conflicts.append(rel)
                return
            with self.lock:
                self.pushed[rel] = int(entry["size"])

        run_parallel(((r, int(self.files[r]["size"])) for r in rels), put,
                     threads=self.threads, desc=f"pushing cache {self.key[:12]}",
                     progress=self.progress)
        return conflicts

    def _marker(self) -> bytes:
        return (self.cache_dir / layout.MANIFEST_NAME).read_bytes()


class _CommitWatch:
    """Whether the key got committed, asked at most once per ``interval`` seconds."""

    def __init__(self, push: _Push, interval: float = 1.0) -> None:
        self.remote, self.key, self.interval = push.remote, push.key, interval
        self._lock = threading.Lock()
        self._checked = time.monotonic()  # the caller has just looked
        self._committed = False

    def committed(self) -> bool:
        with self._lock:
            if not self._committed and time.monotonic() - self._checked >= self.interval:
                self._checked = time.monotonic()
                self._committed = self.remote.has(self.key)
            return self._committed
