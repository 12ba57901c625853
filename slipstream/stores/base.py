"""The contract for places that hold caches: object operations, capabilities, naming.

A store holds each cache under its content key, as the files of the cache directory
(``KEY/zarr.json``, ``KEY/image/heap/c/0``, ...). Every operation addresses one object by
``(key, rel)``: the cache's key and the file's path inside the cache. Pull, push, sync and
a streaming reader use only the operations below, so any store that implements them
(and passes :class:`slipstream.testing.StoreTests`) works with all of them.

The root ``zarr.json`` of a cache, whose attributes carry the manifest, is its *commit
marker*: it is written after every file it lists, so a store never shows a cache as
present (:meth:`CacheStore.has`) before it is complete.

Failures are :mod:`slipstream.errors` types whose one-line message names the object (as a
URL without credentials) and what to do: :class:`~slipstream.errors.RemoteObjectNotFoundError`
(also a ``FileNotFoundError``) for a missing object,
:class:`~slipstream.errors.RemoteAccessError` for refused credentials,
:class:`~slipstream.errors.RemoteTimeoutError` for a store that did not answer in time, and
:class:`~slipstream.errors.RemoteStoreError` for anything else.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .._redact import scrub
from ..cache import manifest
from ..location import Location, redact_url
from ._retry import RetryPolicy

__all__ = ["CacheStore", "ObjectInfo", "is_cache_name", "MARKER"]

#: The object that commits a cache: its root Zarr metadata, holding the manifest.
MARKER = manifest.MANIFEST_NAME
_KEY_NAME = re.compile(r"[0-9a-f]{40}")


def is_cache_name(name: str) -> bool:
    """Whether ``name`` has the shape of a content key (40 lowercase hex digits): the
    only names a store shows as caches."""
    return bool(_KEY_NAME.fullmatch(name))


@dataclass(frozen=True)
class ObjectInfo:
    """An object as a listing shows it."""

    size: int
    #: last modification, seconds since the epoch by the store's clock (None if unknown)
    modified: float | None


class CacheStore(abc.ABC):
    """A place that holds caches, each under its content key.

    Subclasses declare the URL ``protocols`` they serve and their capabilities, and
    implement the object operations. The cache operations (:meth:`has`, :meth:`keys`,
    :meth:`read_commit`, :meth:`write_marker`) are built on them.
    """

    #: URL protocols (as fsspec names them) this store serves, e.g. ``("s3", "s3a")``.
    protocols: ClassVar[tuple[str, ...]] = ()

    # -- capabilities (declared, never probed) ------------------------------------------------
    #: Whether :meth:`put` and :meth:`delete` work (False for a read-only mirror).
    supports_writes: ClassVar[bool] = True
    #: Whether :meth:`put_if_absent` is atomic (of two concurrent writers exactly one
    #: succeeds). Where it is not, it is a check then a write, and the last writer wins.
    supports_put_if_absent: ClassVar[bool] = False
    #: Whether objects keep the ``metadata`` they were written with (:meth:`metadata`).
    supports_object_metadata: ClassVar[bool] = False
    #: Whether a cache in the store is a local directory that can be opened in place
    #: (memory-mapped): then :meth:`local_path` gives it.
    is_local: ClassVar[bool] = False

    def __init__(self, location: Location, *, retry: RetryPolicy | None = None) -> None:
        self.location = location
        self.retry = retry or RetryPolicy()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> CacheStore:
        """The store at ``url``. ``storage_options`` go to fsspec (credentials, profile);
        ``endpoint_url`` is added to them for S3-compatible services."""
        options = dict(storage_options or {})
        if endpoint_url is not None:
            options["endpoint_url"] = endpoint_url
        return cls(Location.parse(url, cls.client_options(options)), retry=retry)

    @classmethod
    def client_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Hook: the fsspec options to open the store with (the user's, plus a store's
        defaults for its filesystem)."""
        return options

    # -- naming --------------------------------------------------------------------------------
    def object_url(self, key: str, rel: str = "") -> str:
        """``rel`` of cache ``key`` as a URL for messages, without credentials (the
        cache's prefix if ``rel`` is empty)."""
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
        """``text`` with credentials (in URLs and in the storage options) replaced by ``***``."""
        return scrub(text, self.location.storage_options)

    def local_path(self, key: str) -> Path:
        """The directory of cache ``key`` (only where :attr:`is_local`)."""
        raise NotImplementedError(f"{self.describe()} is not a local store")

    # -- objects ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every key-shaped name in the store (:func:`is_cache_name`), committed or not."""

    @abc.abstractmethod
    def exists(self, key: str, rel: str) -> bool:
        """Whether object ``KEY/rel`` exists."""

    @abc.abstractmethod
    def get(self, key: str, rel: str) -> bytes:
        """The bytes of ``KEY/rel``."""

    @abc.abstractmethod
    def get_range(self, key: str, rel: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of ``KEY/rel``; shorter at the object's end."""

    @abc.abstractmethod
    def get_file(self, key: str, rel: str, dest: Path) -> None:
        """Download ``KEY/rel`` to the local file ``dest`` (its directory is created; the
        file is overwritten)."""

    @abc.abstractmethod
    def put(self, key: str, rel: str, data: bytes | Path, *,
            metadata: Mapping[str, str] | None = None) -> None:
        """Write ``data`` (bytes, or the local file at that path) as ``KEY/rel``, replacing
        what is there, with ``metadata`` where :attr:`supports_object_metadata`. A reader
        sees the old object or the new one, never part of one."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, rel: str, data: bytes | Path, *,
                      metadata: Mapping[str, str] | None = None) -> bool:
        """Write ``KEY/rel`` only if no object is there; False if one was (nothing written).
        Atomic where :attr:`supports_put_if_absent`."""

    @abc.abstractmethod
    def list_objects(self, key: str) -> dict[str, ObjectInfo]:
        """Every object under ``KEY/`` (the marker included) by relative path; ``{}`` if none."""

    @abc.abstractmethod
    def delete(self, key: str, rel: str) -> None:
        """Remove ``KEY/rel``; nothing happens if it does not exist."""

    @abc.abstractmethod
    def metadata(self, key: str, rel: str) -> dict[str, str] | None:
        """The metadata ``KEY/rel`` was written with (``{}`` where the store keeps none),
        or None if there is no such object."""

    # -- caches ------------------------------------------------------------------------------------
    def read_marker(self, key: str) -> bytes | None:
        """The bytes of ``KEY/zarr.json``, or None if there is none."""
        try:
            return self.get(key, MARKER)
        except FileNotFoundError:
            return None

    def read_commit(self, key: str) -> dict[str, Any] | None:
        """The slipstream attributes of committed cache ``key`` (with its ``files``
        manifest), or None if the store has no complete cache under that key."""
        return manifest.parse_committed(self.read_marker(key))

    def has(self, key: str) -> bool:
        """Whether a complete cache with this content key is in the store."""
        return self.read_commit(key) is not None

    def keys(self) -> list[str]:
        """The content keys of every complete cache in the store."""
        return [k for k in self.names() if self.has(k)]

    def write_marker(self, key: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write ``KEY/zarr.json``: the commit, made only after every file it lists.
        ``create_only``: only if no marker is there (False if one was), so that of two
        writers committing one key exactly one succeeds where
        :attr:`supports_put_if_absent`."""
        if create_only:
            return self.put_if_absent(key, MARKER, data)
        self.put(key, MARKER, data)
        return True
