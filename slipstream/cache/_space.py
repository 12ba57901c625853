"""Turning "no room to write" OS errors into an error that says what to do."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CacheWriteError

__all__ = ["out_of_space_errors", "is_out_of_space"]

#: errnos that mean "no room": disk full, quota exceeded, file size limit (RLIMIT_FSIZE).
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is the OS saying there is no room to write."""
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


def _free_bytes(path: Path) -> str:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return f"{shutil.disk_usage(p).free / 1e6:,.1f} MB free there now"
            except OSError:
                return "free space unknown"
    return "free space unknown"


@contextmanager
def out_of_space_errors(what: str, directory: Path) -> Iterator[None]:
    """Re-raise an out-of-room ``OSError`` inside the block as :class:`CacheWriteError`.

    The caller's own cleanup (removing its private build directory) runs first: put this
    outside it. ``what`` says what was being written ("building the cache of X").
    """
    try:
        yield
    except OSError as exc:
        if not is_out_of_space(exc) or isinstance(exc, CacheWriteError):
            raise
        reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
        raise CacheWriteError(
            exc.errno,
            f"{what}: {reason} while writing under {directory} "
            f"({exc.filename or 'a cache file'}). Nothing was published and the partial "
            f"files were removed ({_free_bytes(directory)}). Free space there, or choose "
            f"another cache directory (cache_dir=, or SLIPSTREAM_CACHE_DIR)",
        ) from exc
