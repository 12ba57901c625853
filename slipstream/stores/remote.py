"""Caches in a remote store reached through fsspec: the objects and the commit marker.

A remote store holds each cache under ``REMOTE/KEY/`` with exactly the local layout
(``docs/cache-format.md``), so any Zarr reader can open it through fsspec. Its root
``zarr.json``, whose attributes carry the ``files`` manifest, is the commit marker: it is
uploaded after every file it lists, so a cache whose marker exists is complete.

This module holds only the object operations (read the marker, list, get, put); the
protocols that use them (pull, push, sync) are in :mod:`slipstream.stores.transfer` and
:mod:`slipstream.stores.sync`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ..cache import layout
from ..errors import CacheError
from ..location import Location, redact_url
from ._retry import RetryPolicy, call_with_retries
from .base import CacheStore

__all__ = ["RemoteStore", "RemoteStoreError", "ObjectInfo", "parse_marker"]

#: storage option names whose values are credentials: never shown.
_SECRET_OPTION = re.compile(r"(secret|token|password|passwd|credential|key)", re.IGNORECASE)
_KEY_NAME = re.compile(r"[0-9a-f]{40}")


class RemoteStoreError(CacheError, ConnectionError):
    """A remote store could not be read or written (after retrying transient failures)."""


class RemoteStore(CacheStore):
    """A cache store on a remote filesystem (an object store, through fsspec).

    Subclasses set ``protocols``, and where the store keeps per-object metadata and
    conditional writes, use them (:meth:`object_metadata`, ``create_only``). Every
    network operation is retried on transient failures according to ``retry``.
    """

    protocols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, location: Location, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(location)
        self.fs = location.fs
        self.retry = retry or RetryPolicy()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> RemoteStore:
        """The store at ``url`` (``s3://bucket/prefix/``). ``storage_options`` go to
        fsspec; ``endpoint_url`` is added to them for S3-compatible services."""
        options = dict(storage_options or {})
        if endpoint_url is not None:
            options["endpoint_url"] = endpoint_url
        return cls(Location.parse(url, cls.client_options(options)), retry=retry)

    @classmethod
    def client_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The fsspec options to open the store with: the user's, plus a subclass's
        defaults for its filesystem."""
        return options

    # -- naming ----------------------------------------------------------------------------
    def object_path(self, key: str, rel: str = "") -> str:
        """The fsspec path of ``rel`` inside cache ``key`` (the cache's prefix if empty)."""
        return self.location.child(f"{key}/{rel}" if rel else key)

    def object_url(self, key: str, rel: str = "") -> str:
        """``rel`` of cache ``key`` as a URL for messages, without credentials."""
        base = redact_url(self.location.url).rstrip("/")
        return f"{base}/{key}/{rel}" if rel else f"{base}/{key}/"

    def describe_url(self) -> str:
        """The store's URL (and, where it matters, its endpoint) without credentials."""
        return redact_url(self.location.url)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.describe_url()!r})"

    def __repr__(self) -> str:
        return self.describe()

    def scrub(self, text: str) -> str:
        """``text`` with every credential from the storage options replaced by ``***``."""
        text = redact_url(text)
        for value in _secret_values(self.location.storage_options):
            text = text.replace(value, "***")
        return text

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call_with_retries(lambda: fn(*args, **kwargs), policy=self.retry, what=what)
        except (FileNotFoundError, FileExistsError, PermissionError):
            raise
        except Exception as exc:
            raise RemoteStoreError(self.scrub(
                f"{what} failed after up to {self.retry.attempts} attempts: "
                f"{type(exc).__name__}: {exc}"
            )) from None

    # -- the commit marker -----------------------------------------------------------------
    def read_marker(self, key: str) -> bytes | None:
        """The bytes of ``KEY/zarr.json``, or None if there is none."""
        try:
            data: bytes = self._call(f"reading {self.object_url(key, layout.MANIFEST_NAME)}",
                                     self.fs.cat_file, self.object_path(key, layout.MANIFEST_NAME))
        except FileNotFoundError:
            return None
        return data

    def read_commit(self, key: str) -> dict[str, Any] | None:
        """The slipstream attributes of committed cache ``key`` (with ``files``), or None
        if the store has no complete cache under that key."""
        return parse_marker(self.read_marker(key))

    def has(self, key: str) -> bool:
        return self.read_commit(key) is not None

    def keys(self) -> list[str]:
        return [k for k in self.prefixes() if self.has(k)]

    def prefixes(self) -> list[str]:
        """Every key-shaped prefix in the store, committed or not."""
        try:
            entries = self._call(f"listing {self.describe_url()}", self.fs.ls,
                                 self.location.path, detail=False)
        except FileNotFoundError:
            return []
        names = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if _KEY_NAME.fullmatch(n))

    def write_marker(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Upload ``KEY/zarr.json``: the commit, made only after every file it lists.

        ``create_only`` makes it a conditional write (``If-None-Match: *`` on S3) that
        raises :class:`FileExistsError` if a marker is there already, so that of two
        writers committing one key, exactly one succeeds (where the store supports it;
        elsewhere the last write wins).
        """
        self._call(f"writing {self.object_url(key, layout.MANIFEST_NAME)}", self._write,
                   self.object_path(key, layout.MANIFEST_NAME), data, create_only,
                   self._marker_kwargs())

    # -- objects ---------------------------------------------------------------------------
    def list_objects(self, key: str) -> dict[str, ObjectInfo]:
        """Every object under ``KEY/`` (the marker included) by relative path."""
        prefix = self.object_path(key)
        try:
            found = self._call(f"listing {self.object_url(key)}", self.fs.find, prefix,
                               detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            rel = path[len(prefix):].lstrip("/")
            if rel and info.get("type", "file") == "file":
                out[rel] = ObjectInfo(int(info.get("size") or 0), _modified(info))
        return out

    def get_file(self, key: str, rel: str, dest: Path) -> None:
        """Download ``KEY/rel`` to the local file ``dest`` (overwritten)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(f"downloading {self.object_url(key, rel)}", self.fs.get_file,
                   self.object_path(key, rel), str(dest))

    def put_file(self, src: Path, key: str, rel: str, metadata: Mapping[str, str], *,
                 create_only: bool = False) -> None:
        """Upload the local file ``src`` as ``KEY/rel`` with ``metadata`` (kept where the
        store keeps object metadata). ``create_only``: as for :meth:`write_marker`."""
        self._call(f"uploading {self.object_url(key, rel)}", self._write,
                   self.object_path(key, rel), src, create_only, self._put_kwargs(metadata))

    def object_metadata(self, key: str, rel: str) -> dict[str, str] | None:
        """The metadata object ``KEY/rel`` was uploaded with (``{}`` if this store keeps
        none), or None if there is no such object."""
        try:
            self._call(f"reading {self.object_url(key, rel)}", self.fs.info,
                       self.object_path(key, rel))
        except FileNotFoundError:
            return None
        return {}

    def _write(self, path: str, src: Path | bytes, create_only: bool,
               kwargs: Mapping[str, Any]) -> None:
        if create_only and self.fs.exists(path):  # no conditional writes in plain fsspec
            raise FileExistsError(path)
        if isinstance(src, bytes):
            self.fs.pipe_file(path, src, **kwargs)
        else:
            self.fs.put_file(str(src), path, **kwargs)

    def _put_kwargs(self, metadata: Mapping[str, str]) -> dict[str, Any]:
        return {}

    def _marker_kwargs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class ObjectInfo:
    """An object as a listing shows it."""

    size: int
    #: last modification, seconds since the epoch by the store's clock (None if unknown)
    modified: float | None


def _modified(info: Mapping[str, Any]) -> float | None:
    for name in ("LastModified", "last_modified", "mtime", "modified", "updated"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def parse_marker(data: bytes | None) -> dict[str, Any] | None:
    """The slipstream attributes in a root ``zarr.json`` if it commits a cache (holds a
    ``files`` manifest), else None. The format version is checked when the cache is
    opened (:func:`slipstream.cache.layout.read_manifest`)."""
    if data is None:
        return None
    try:
        attrs = json.loads(data)["attributes"][layout.ATTRS_KEY]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(attrs, dict) or not isinstance(attrs.get("files"), dict):
        return None
    return attrs


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            out.extend(_secret_values(value))
        elif isinstance(value, str) and len(value) >= 4 and _SECRET_OPTION.search(str(name)):
            out.append(value)
    return sorted(out, key=len, reverse=True)
