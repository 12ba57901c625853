"""The store contract over any fsspec filesystem (an object store, a mounted directory).

A remote store holds each cache under ``REMOTE/KEY/`` with exactly the local layout
(``docs/cache-format.md``), so any Zarr reader can open it through fsspec. Every
operation is retried on transient failures and bounded by a total deadline
(:class:`~slipstream.stores.RetryPolicy`); on an asynchronous filesystem (s3fs, gcsfs,
adlfs) the deadline cancels the request in flight. Failures become one-line
:class:`~slipstream.errors.RemoteStoreError` messages naming the object.

A filesystem with more to offer declares it and overrides the two write hooks:
:meth:`RemoteStore.write_options` (per-object keywords, e.g. S3 metadata) and
:meth:`RemoteStore.write_object` (e.g. a conditional write); see ``stores/s3.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import (
    RemoteAccessError,
    RemoteObjectNotFoundError,
    RemoteStoreError,
    RemoteTimeoutError,
    SlipstreamError,
)
from ..location import Location
from ._retry import DEADLINE_ENV, RetryPolicy, call_with_retries
from .base import CacheStore, ObjectInfo, is_cache_name

__all__ = ["RemoteStore", "RemoteStoreError"]

T = TypeVar("T")

#: storage option names whose values are credentials: never shown.


class RemoteStore(CacheStore):
    """Caches on any fsspec filesystem: ``protocols`` names the ones a subclass serves.

    Plain fsspec keeps no object metadata and has no conditional write, so
    :meth:`put_if_absent` is a check then a write here; a subclass whose filesystem does
    better declares it (``supports_put_if_absent``, ``supports_object_metadata``) and
    overrides :meth:`write_object` / :meth:`write_options` / :meth:`metadata`.
    """

    protocols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, location: Location, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(location, retry=retry)
        self.fs = location.fs

    # -- naming ----------------------------------------------------------------------------
    def object_path(self, key: str, rel: str = "") -> str:
        """The fsspec path of ``rel`` inside cache ``key`` (the cache's prefix if empty)."""
        return self.location.child(f"{key}/{rel}" if rel else key)

    # -- running a filesystem call -----------------------------------------------------------
    def run_fs(self, timeout: float, name: str, *args: Any, **kwargs: Any) -> Any:
        """``fs.<name>(*args, **kwargs)``, given up after ``timeout`` seconds (raising
        ``TimeoutError``) where the filesystem is asynchronous: its coroutine
        ``fs._<name>`` is cancelled. For write hooks; other code calls :meth:`_call`."""
        fs = self.fs
        coro_fn = getattr(fs, f"_{name}", None) if getattr(fs, "async_impl", False) else None
        if coro_fn is None:
            return getattr(fs, name)(*args, **kwargs)
        if timeout <= 0:
            raise TimeoutError(f"{name}: no time left")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(coro_fn(*args, **kwargs), timeout), fs.loop)
        try:
            return future.result()
        except asyncio.TimeoutError as exc:  # a distinct class before Python 3.11
            raise TimeoutError(f"{name}: no answer within {timeout:.3g} s") from exc

    def _call(self, what: str, url: str, fn: Callable[[float], T]) -> T:
        """``fn(seconds_left)`` with retries, within the deadline; failures become
        :class:`RemoteStoreError` (or a subclass) naming ``what`` and ``url``."""
        end = time.monotonic() + self.retry.deadline
        try:
            return call_with_retries(lambda: fn(end - time.monotonic()), policy=self.retry,
                                     what=f"{what} {url}", end=end)
        except SlipstreamError:
            raise
        except Exception as exc:
            raise self._explain(exc, what, url) from None

    def _explain(self, exc: BaseException, what: str, url: str) -> RemoteStoreError:
        code = _error_code(exc)
        where = self.describe_url()
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        if isinstance(exc, TimeoutError):
            return RemoteTimeoutError(self.scrub(
                f"{what} {url} timed out: {where} gave no answer within "
                f"{self.retry.deadline:g} s. Check that the endpoint is up and is the right "
                f"one; the deadline is ${DEADLINE_ENV} or RetryPolicy(deadline=...)"))
        if isinstance(exc, FileNotFoundError) or code in ("NoSuchBucket", "NoSuchKey"):
            if code == "NoSuchBucket" or "bucket does not exist" in detail.lower():
                return RemoteObjectNotFoundError(self.scrub(
                    f"{what} {url} failed: the bucket of {where} does not exist. Create it, "
                    f"or fix the store URL"), bucket_missing=True)
            return RemoteObjectNotFoundError(self.scrub(f"{what} {url} failed: no such object"))
        if isinstance(exc, PermissionError) or code in _ACCESS_CODES:
            return RemoteAccessError(self.scrub(
                f"{what} {url} was refused ({code or 'access denied'}): check the credentials "
                f"(storage_options key/secret/token or profile, the AWS_* environment "
                f"variables) and that they may use {where}"))
        return RemoteStoreError(self.scrub(
            f"{what} {url} failed after up to {self.retry.attempts} attempts: {detail}"))

    # -- objects ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        try:
            entries = self._call("listing", self.describe_url(), lambda t: self.run_fs(
                t, "ls", self.location.path, detail=False))
        except RemoteObjectNotFoundError as exc:
            if exc.bucket_missing:
                raise
            return []  # an empty prefix
        found = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in found if is_cache_name(n))

    def exists(self, key: str, rel: str) -> bool:
        return self.metadata(key, rel) is not None

    def get(self, key: str, rel: str) -> bytes:
        data: bytes = self._call("reading", self.object_url(key, rel), lambda t: self.run_fs(
            t, "cat_file", self.object_path(key, rel)))
        return data

    def get_range(self, key: str, rel: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        data: bytes = self._call(
            f"reading bytes {start}-{end} of", self.object_url(key, rel),
            lambda t: self.run_fs(t, "cat_file", self.object_path(key, rel), start=start, end=end))
        return data

    def get_file(self, key: str, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call("downloading", self.object_url(key, rel), lambda t: self.run_fs(
            t, "get_file", self.object_path(key, rel), str(dest)))

    def put(self, key: str, rel: str, data: bytes | Path, *,
            metadata: Mapping[str, str] | None = None) -> None:
        self._put(key, rel, data, metadata, if_absent=False)

    def put_if_absent(self, key: str, rel: str, data: bytes | Path, *,
                      metadata: Mapping[str, str] | None = None) -> bool:
        return self._put(key, rel, data, metadata, if_absent=True)

    def _put(self, key: str, rel: str, data: bytes | Path, metadata: Mapping[str, str] | None,
             *, if_absent: bool) -> bool:
        path = self.object_path(key, rel)
        options = self.write_options(rel, dict(metadata or {}))
        written: bool = self._call("writing", self.object_url(key, rel), lambda t: self.write_object(
            t, path, data, if_absent=if_absent, options=options))
        return written

    def list_objects(self, key: str) -> dict[str, ObjectInfo]:
        prefix = self.object_path(key)
        try:
            found = self._call("listing", self.object_url(key), lambda t: self.run_fs(
                t, "find", prefix, detail=True))
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            rel = path[len(prefix):].lstrip("/")
            if rel and info.get("type", "file") == "file":
                out[rel] = ObjectInfo(int(info.get("size") or 0), _modified(info))
        return out

    def delete(self, key: str, rel: str) -> None:
        try:
            self._call("deleting", self.object_url(key, rel), lambda t: self.run_fs(
                t, "rm_file", self.object_path(key, rel)))
        except FileNotFoundError:
            pass

    def metadata(self, key: str, rel: str) -> dict[str, str] | None:
        try:
            self._call("reading", self.object_url(key, rel), lambda t: self.run_fs(
                t, "info", self.object_path(key, rel)))
        except FileNotFoundError:
            return None
        return {}

    # -- hooks for subclasses --------------------------------------------------------------
    def write_options(self, rel: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Hook: keyword arguments for the filesystem's write of ``rel`` carrying
        ``metadata`` (plain fsspec keeps none: no keywords)."""
        return {}

    def write_object(self, timeout: float, path: str, data: bytes | Path, *, if_absent: bool,
                     options: Mapping[str, Any]) -> bool:
        """Hook: one write of ``data`` to ``path`` within ``timeout`` seconds (use
        :meth:`run_fs`). With ``if_absent``, write only if nothing is there and return
        False if something was."""
        if if_absent and self.run_fs(timeout, "exists", path):
            return False
        if isinstance(data, bytes):
            self.run_fs(timeout, "pipe_file", path, data, **options)
        else:
            self.run_fs(timeout, "put_file", str(data), path, **options)
        return True


#: Error codes that mean the credentials were refused or do not allow the operation.
_ACCESS_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "ExpiredToken", "InvalidToken", "AllAccessDisabled"})


def _error_code(exc: BaseException) -> str | None:
    """The service's error code (``NoSuchBucket``, ``AccessDenied``) anywhere in the chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _modified(info: Mapping[str, Any]) -> float | None:
    for name in ("LastModified", "last_modified", "mtime", "modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None
