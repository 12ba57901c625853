"""Caches in S3 and S3-compatible object stores (Wasabi, MinIO, SeaweedFS, Ceph), via s3fs.

Registered through the ``slipstream`` entry-point group like any third-party store::

    [project.entry-points.slipstream]
    s3-store = "slipstream.stores.s3"

s3fs is imported only when a store is opened; without it the error names the extra to
install (``pip install 'slipstream[s3]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from ..location import Location
from ._obstore_reads import ObstoreReader, reader_for
from ._obstore_reads import usable as obstore_usable
from ._retry import RetryPolicy
from .base import CacheStore
from .remote import RemoteStore

__all__ = ["S3Store", "DEFAULT_CONFIG"]

#: botocore settings slipstream uses unless ``storage_options["config_kwargs"]`` says
#: otherwise: botocore's "standard" retry mode (HTTP 500/502/503/504, throttling,
#: connection errors and timeouts, with jittered exponential backoff), 3 attempts per
#: request, and bounded connect/read timeouts so a vanished server fails a transfer
#: instead of hanging it. Downloads are not CRC-checked by botocore as well
#: (``response_checksum_validation``): every file slipstream downloads is checked
#: against the SHA-256 of the cache's manifest, and the CRC pass cost a streamed epoch
#: about 0.14 CPU-seconds per 200 MB on the S3 client's one event-loop thread.
DEFAULT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 3},
    "connect_timeout": 5,
    "read_timeout": 60,
    "response_checksum_validation": "when_required",
}


class S3Store(RemoteStore):
    """Caches under an ``s3://bucket/prefix/`` URL: atomic create-only writes
    (``If-None-Match: *``) and per-object metadata (``x-amz-meta-*``).

    ``endpoint_url`` points at an S3-compatible service (``https://s3.wasabisys.com``,
    ``http://minio:9000``); ``storage_options`` go to :class:`s3fs.S3FileSystem`
    (``key``/``secret``/``token``, ``profile``, ``client_kwargs``, ``config_kwargs``).
    Credentials are never shown by :meth:`describe` or in error messages. Listings are
    never cached (``use_listings_cache=False``): other users change the store.

    Whole-file downloads (:meth:`get_file`: pulls and streamed chunks) go through obstore
    instead of s3fs when it is installed and the options name the endpoint or region and
    the credentials explicitly (``stores/_obstore_reads.py``): same objects, same errors,
    less CPU and no GIL held while the bytes move.
    """

    protocols = ("s3", "s3a")
    supports_put_if_absent = True
    supports_object_metadata = True

    def __init__(self, location: Location, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(location, retry=retry)
        self._reader: ObstoreReader | None = reader_for(location.storage_options,
                                                        self.retry.deadline)

    @property
    def download_client(self) -> str:
        """What :meth:`get_file` downloads with now: ``"obstore"`` or ``"s3fs"``."""
        return "s3fs" if self._reader is None or not obstore_usable() else "obstore"

    def get_file(self, key: str, rel: str, dest: Path) -> None:
        reader = self._reader
        if reader is None or not obstore_usable():
            super().get_file(key, rel, dest)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        path = self.object_path(key, rel)
        self._call("downloading", self.object_url(key, rel), lambda t: reader.get_file(path, dest))

    @classmethod
    def client_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        options["config_kwargs"] = {**DEFAULT_CONFIG, **dict(options.get("config_kwargs") or {})}
        options.setdefault("use_listings_cache", False)
        return options

    def describe_url(self) -> str:
        base = super().describe_url()
        endpoint = self._endpoint()
        return f"{base} at {self.scrub(endpoint)}" if endpoint else base

    def _endpoint(self) -> str | None:
        opts = self.location.storage_options
        client = opts.get("client_kwargs") or {}
        endpoint = opts.get("endpoint_url") or client.get("endpoint_url")
        return str(endpoint) if endpoint else None

    def metadata(self, key: str, rel: str) -> dict[str, str] | None:
        try:
            meta = self._call("reading the metadata of", self.object_url(key, rel),
                              lambda t: self.run_fs(t, "metadata", self.object_path(key, rel)))
        except FileNotFoundError:
            return None
        return {str(k).lower(): str(v) for k, v in (meta or {}).items()}

    def write_options(self, rel: str, metadata: dict[str, str]) -> dict[str, Any]:
        options: dict[str, Any] = {"Metadata": metadata}
        if rel.endswith(".json"):
            options["ContentType"] = "application/json"
        return options

    def write_object(self, timeout: float, path: str, data: bytes | Path, *, if_absent: bool,
                     options: Mapping[str, Any]) -> bool:
        mode = "create" if if_absent else "overwrite"  # create: If-None-Match: *
        try:
            if isinstance(data, bytes):
                self.run_fs(timeout, "pipe_file", path, data, mode=mode, **options)
            else:
                self.run_fs(timeout, "put_file", str(data), path, mode=mode, **options)
        except OSError as exc:
            if if_absent and _precondition_failed(exc):
                return False
            raise
        return True


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs error is HTTP 412 (an object is where a create-only write went)."""
    if isinstance(exc, FileExistsError):
        return True
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        return (response.get("Error", {}).get("Code") == "PreconditionFailed"
                or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412)
    return False


@hookimpl
def slipstream_stores() -> Sequence[type[CacheStore]]:
    return [S3Store]
