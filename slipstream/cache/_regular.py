"""Opening cache files only when they are regular files, and naming the real cause when not.

A cache is a directory of regular files. Whatever else sits at a file's path (a FIFO,
which blocks an ``open`` forever; a link to ``/dev/zero``, which never ends; a
directory; a socket) is refused before a byte is read, and a file this user may not
read is called a permissions problem, not damage.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import CacheCorruptError, CachePermissionError

__all__ = ["open_regular", "read_regular", "file_kind"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words (``a FIFO (named pipe)``, ``a regular file``...)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, checked to be a regular file (links followed).

    Opened with ``O_NONBLOCK`` so that a FIFO cannot block the open, then ``fstat``-ed:
    the check is on the file opened, not on whatever the path names a moment later.
    Raises :class:`CachePermissionError` when this user may not read it,
    :class:`CacheCorruptError` naming what is there instead of a regular file, and
    ``FileNotFoundError`` when nothing is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as exc:
        raise CachePermissionError(
            f"{path}: permission denied: this user ({_user()}) cannot read this cache file. "
            f"The cache is not damaged: fix the permissions (the cache's owner can run "
            f"`chmod -R a+rX` on it) or use a cache directory of your own"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket cannot be opened
            raise _not_regular(path, "a socket") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, file_kind(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The whole content of the regular file ``path`` (see :func:`open_regular`). A file
    longer than ``limit`` bytes is refused before it is read (:class:`CacheCorruptError`):
    a cache's metadata says how long each file can be, and a damaged or hostile cache
    must not make a reader load gigabytes."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if limit is not None and size > limit:
            raise CacheCorruptError(
                f"{path} is {size:,} bytes, more than the {limit:,} its array's metadata "
                f"allows: the cache is damaged or was not written by slipstream; run "
                f"`slipstream verify`, then delete it and build it again")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _not_regular(path: Path, kind: str) -> CacheCorruptError:
    return CacheCorruptError(
        f"{path} is {kind}, not a regular file: something replaced a file of this cache "
        f"(slipstream writes only regular files). Remove the cache directory and build or "
        f"pull it again")


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"
