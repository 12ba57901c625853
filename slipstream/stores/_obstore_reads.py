"""Whole-object S3 downloads through obstore (Rust's ``object_store``), where it is installed.

Why: s3fs runs every transfer on one asyncio thread that holds the GIL while it moves the
body, ~0.9 ms per MB measured on loopback (py-spy ``--gil``), so a process cannot stream
much past ~1 GB/s however many cores it has, and the loader's own threads queue behind it.
obstore moves the body in Rust with the GIL released (~0.25 ms per MB held, for the
Python around each request and piece) and needs 25–40% less client CPU per object
(``benchmarks/bench_s3_clients.py``; docs/streaming.md, "Transport").

Used only for :meth:`S3Store.get_file` (pull and streamed chunk downloads: the bytes that
matter), and only when the store's options say everything obstore needs to know
explicitly (:func:`reader_for`); anything else (a profile, the default credential chain,
options obstore has no name for) keeps s3fs, which understands them all.
``$SLIPSTREAM_S3_READER=s3fs`` turns it off.

obstore runs its requests on a tokio runtime whose threads a ``fork()`` does not copy: a
forked child that uses it hangs. So a process forked after obstore was imported (a
DataLoader worker, a ``multiprocessing`` fork) downloads through s3fs (:func:`usable`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["READER_ENV", "ObstoreReader", "reader_for", "usable"]

#: ``s3fs`` forces s3fs for downloads; ``auto`` (the default) uses obstore where it can.
READER_ENV = "SLIPSTREAM_S3_READER"
#: Pieces a download is written in: memory per download stays bounded for big files.
PIECE_BYTES = 8 << 20

#: Whether this process was forked from one that had imported obstore.
_forked_after_import = False


def _after_fork_in_child() -> None:
    global _forked_after_import
    _forked_after_import = _forked_after_import or "obstore" in sys.modules


os.register_at_fork(after_in_child=_after_fork_in_child)


def usable() -> bool:
    """Whether obstore can be used in this process (not a child forked after obstore was
    imported: its runtime's threads are missing there)."""
    return not _forked_after_import


_OPTION_KEYS = frozenset({"key", "secret", "token", "anon", "endpoint_url", "client_kwargs",
                          "config_kwargs", "use_listings_cache"})
_CLIENT_KEYS = frozenset({"endpoint_url", "region_name"})
_CONFIG_KEYS = frozenset({"retries", "connect_timeout", "read_timeout",
                          "response_checksum_validation"})


def reader_for(options: Mapping[str, Any], deadline: float) -> ObstoreReader | None:
    """An obstore reader configured exactly as the s3fs ``options`` (storage options,
    with slipstream's ``config_kwargs`` merged in) describe, or None where obstore is not
    installed, ``$SLIPSTREAM_S3_READER`` is ``s3fs``, or the options hold anything it
    could not honour the same way."""
    if os.environ.get(READER_ENV, "auto").strip().lower() == "s3fs":
        return None
    if set(options) - _OPTION_KEYS:
        return None
    client = dict(options.get("client_kwargs") or {})
    config = dict(options.get("config_kwargs") or {})
    if set(client) - _CLIENT_KEYS or set(config) - _CONFIG_KEYS:
        return None
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    region = client.get("region_name")
    if not endpoint and not region:
        return None  # plain AWS with an unknown bucket region: botocore follows redirects
    if os.environ.get("AWS_CA_BUNDLE") and not str(endpoint or "").startswith("http://"):
        return None  # a private CA for TLS: botocore honours it; obstore is not told
    settings: dict[str, Any] = {"region": region or "us-east-1"}
    if endpoint:
        settings["endpoint"] = str(endpoint)
    if options.get("anon"):
        settings["skip_signature"] = True
    elif options.get("key") and options.get("secret"):
        settings["access_key_id"] = options["key"]
        settings["secret_access_key"] = options["secret"]
        if options.get("token"):
            settings["session_token"] = options["token"]
    else:
        return None  # the default credential chain (profiles, SSO, ...) is botocore's
    try:
        import obstore  # noqa: F401
    except ImportError:
        return None
    attempts = int(dict(config.get("retries") or {}).get("total_max_attempts", 3))
    return ObstoreReader(settings, deadline=deadline, max_retries=max(0, attempts - 1),
                         connect_timeout=float(config.get("connect_timeout", 5)),
                         read_timeout=float(config.get("read_timeout", 60)))


class ObstoreReader:
    """Downloads ``bucket/key`` paths to files; one obstore client per bucket.

    Errors come out as the built-in types :class:`~slipstream.stores.RemoteStore` explains
    (``FileNotFoundError``, ``PermissionError``, ``TimeoutError``, ``ConnectionError``,
    ``OSError``), so that messages and retries are the same as through s3fs. A failed
    download may leave part of the file at ``dest``; callers download to private names.
    """

    def __init__(self, settings: dict[str, Any], *, deadline: float, max_retries: int,
                 connect_timeout: float, read_timeout: float) -> None:
        self._settings = settings
        self._client_options = {
            "allow_http": str(settings.get("endpoint", "")).startswith("http://"),
            "connect_timeout": timedelta(seconds=connect_timeout),
            "read_timeout": timedelta(seconds=read_timeout),
            "timeout": timedelta(seconds=deadline),  # one request, body included
        }
        self._retry = {"max_retries": max_retries,
                       "retry_timeout": timedelta(seconds=deadline)}
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # clients and the lock are made afresh
        state = {**self.__dict__, "_stores": {}}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _store(self, bucket: str) -> Any:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                from obstore.store import S3Store

                store = self._stores[bucket] = S3Store(
                    bucket, client_options=self._client_options, retry_config=self._retry,
                    **self._settings)
            return store

    def get_file(self, path: str, dest: Path) -> None:
        """Download ``bucket/key`` (an s3fs path) to ``dest``, in pieces."""
        import obstore

        bucket, _, key = path.partition("/")
        try:
            result = obstore.get(self._store(bucket), key)
            with open(dest, "wb") as f:
                for piece in result.stream(min_chunk_size=PIECE_BYTES):
                    f.write(piece)
        except obstore.exceptions.BaseError as exc:
            raise _builtin_error(exc) from exc


def _builtin_error(exc: BaseException) -> OSError:
    """``exc`` (an obstore error) as the built-in type that says what happened, carrying
    the service's error code and HTTP status as botocore's errors do (``.response``), so
    that :class:`~slipstream.stores.RemoteStore` explains and retries it the same way.
    The message is obstore's first line with the service's XML reduced to its code and
    message (obstore appends a Rust debug dump, whose HTTP error kind, ``kind: Timeout``,
    ``kind: Connect``, ... picks the type where there was no answer)."""
    import obstore.exceptions as e

    full = str(exc)
    head = full.split("\n\nDebug source:", 1)[0]
    code, message = _CODE.search(head), _MESSAGE.search(head)
    status = _STATUS.search(full)
    text = " ".join(head.split("<?xml", 1)[0].split()).rstrip(": ")
    if code:
        text += f" ({code.group(1)}" + (f": {message.group(1)})" if message else ")")
    kinds = set(_KIND.findall(full))
    out: OSError
    if isinstance(exc, e.NotFoundError):
        out = FileNotFoundError(text)
    elif isinstance(exc, (e.PermissionDeniedError, e.UnauthenticatedError)):
        out = PermissionError(text)
    elif "Timeout" in kinds:
        out = TimeoutError(text)
    elif kinds & {"Connect", "Request", "Body", "Decode"}:
        out = ConnectionError(text)  # retried by RetryPolicy, as botocore's are
    else:
        out = OSError(text)
    out.response = {"Error": {"Code": code.group(1) if code else None},  # type: ignore[attr-defined]
                    "ResponseMetadata": {"HTTPStatusCode": int(status.group(1)) if status else None}}
    return out


_KIND = re.compile(r"\bkind: (\w+)")
_CODE = re.compile(r"<Code>(\w+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_STATUS = re.compile(r"\bstatus(?: code)?:? (\d{3})\b")
