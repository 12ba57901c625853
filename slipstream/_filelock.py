"""An exclusive lock on a file (``flock``): released by the kernel if its holder dies."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import CacheError

__all__ = ["FileLock"]


class FileLock:
    """``with FileLock(path, timeout=...)``: wait (polling) until the lock is ours.

    The holder writes ``HOST PID`` into the file so a timeout can say who holds it. A
    lock held by a process that died is free again at once: the kernel drops it.
    """

    def __init__(self, path: Path, timeout: float | None = None, poll: float = 0.1) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o664)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _read(fd)
                    os.close(fd)
                    raise CacheError(
                        f"timed out after {self.timeout:.0f} s waiting for {self.path}, held by "
                        f"{holder or 'an unknown process'}; if that process is stuck, stop it "
                        f"(the lock frees itself when its holder exits)"
                    ) from None
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


class SharedLock:
    """A shared ``flock`` on a file: many holders at once; it keeps a :class:`FileLock`
    (exclusive) on the same file from being taken, and is released by the kernel if its
    holder dies. :meth:`acquire` waits while an exclusive holder has it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> SharedLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
