"""Reading files of a dataset through fsspec: byte ranges, whole blocks, and clear errors.

Shared by the sources that read a binary format by offset (LitData chunks, FFCV
``.beton`` pages, parquet row groups): local files are read with ``os.pread`` on a
cached descriptor, remote ones with one ranged GET per call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from .._parallel import bounded_map
from ..errors import SampleError, SourceDetectionError, SourceNotFoundError
from ..location import Location

__all__ = ["RangeReader", "access_errors", "access_error", "iter_blocks"]

T = TypeVar("T")

# botocore's (and other SDKs') exception names for "no usable credentials"
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError",
                      "ProfileNotFound", "CredentialRetrievalError", "UnauthorizedSSOTokenError")


def access_error(exc: BaseException, where: str, what: str) -> Exception | None:
    """The slipstream error for a failed listing or read of ``where``, or ``None`` when
    ``exc`` is not about a missing object or missing access."""
    name = type(exc).__name__
    if name in _CREDENTIAL_ERRORS:
        return SourceNotFoundError(
            f"{where}: cannot read {what}: no usable credentials ({name}: {exc}). Pass them "
            f"in storage_options (for S3: {{'key': ..., 'secret': ...}} or {{'profile': NAME}}, "
            f"plus 'endpoint_url' for S3-compatible stores) or set the provider's environment "
            f"variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, FileNotFoundError):
        return SourceNotFoundError(
            f"{where}: {what} not found ({exc}). Check the path and, for remote URLs, the "
            f"bucket or repository name"
        )
    if isinstance(exc, ValueError) and where.startswith("hf://"):  # huggingface_hub's HfUriError
        return SourceDetectionError(
            f"{where}: not a Hugging Face Hub dataset path ({exc}). Expected "
            f"hf://datasets/ORG/NAME, optionally @REVISION and a path inside the repository"
        )
    if isinstance(exc, PermissionError):
        return SourceNotFoundError(
            f"{where}: access to {what} was denied ({exc}). Check the credentials in "
            f"storage_options and the permissions they grant"
        )
    return None


@contextmanager
def access_errors(where: str, what: str) -> Iterator[None]:
    """Turn missing-object and missing-credential failures into :class:`SourceNotFoundError`."""
    try:
        yield
    except Exception as exc:
        mapped = access_error(exc, where, what)
        if mapped is None:
            raise
        raise mapped from exc


class RangeReader:
    """Reads exact byte ranges of files below a location. Thread-safe."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}

    def read(self, path: str, start: int, end: int, *, name: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``path``; a short read (a truncated file) is a SampleError."""
        size = end - start
        if size < 0 or start < 0:
            raise SampleError(f"{name or path}: invalid byte range [{start}, {end})", path=name)
        if size == 0:
            return b""
        where = name or path
        try:
            if self.location.is_local:
                data = os.pread(self._fd(path), size, start)
            else:
                data = self.location.fs.cat_file(path, start=start, end=end)
        except Exception as exc:
            mapped = _read_error(exc, where, f"bytes {start}-{end}")
            if mapped is None:
                raise
            raise mapped from exc
        if len(data) != size:
            raise SampleError(
                f"{where}: the file ends inside bytes {start}-{end} (got {len(data)} of {size}); "
                f"it is truncated or was changed while being read", path=where,
            )
        return bytes(data)

    def read_all(self, path: str, *, name: str | None = None) -> bytes:
        where = name or path
        try:
            if self.location.is_local:
                with open(path, "rb") as f:
                    return f.read()
            return bytes(self.location.fs.cat_file(path))
        except Exception as exc:
            mapped = _read_error(exc, where, "the file")
            if mapped is None:
                raise
            raise mapped from exc

    def _fd(self, path: str) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                fd = self._fds[path] = os.open(path, os.O_RDONLY)
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _read_error(exc: Exception, where: str, what: str) -> Exception | None:
    mapped = access_error(exc, where, "the file")
    if mapped is not None:
        return mapped
    if isinstance(exc, OSError):
        return SampleError(f"{where}: cannot read {what} ({exc})", path=where)
    return None


def iter_blocks(
    tasks: Iterable[Callable[[], list[T]]], num_threads: int
) -> Iterator[T]:
    """Run ``tasks`` (each reads one block and returns its items) on up to ``num_threads``
    threads, at most ``num_threads`` blocks in memory, yielding items as blocks complete.

    Closing the iterator early cancels what has not started and joins the threads.
    """
    for _, items in bounded_map(_run, tasks, threads=num_threads,
                                thread_name="slipstream-block"):
        yield from items


def _run(task: Callable[[], list[T]]) -> list[T]:
    return task()
