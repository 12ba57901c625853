"""An exclusive lock on a file (``flock``): released by the kernel if its holder dies."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from .errors import CacheError

__all__ = ["FileLock", "describe_holder"]

log = logging.getLogger("slipstream.lock")


class FileLock:
    """``with FileLock(path, timeout=...)``: wait (polling) until the lock is ours.

    The holder writes ``HOST PID`` into the file so that a waiter can say who holds it:
    one warning when the wait begins (a builder waiting on a stopped builder would
    otherwise wait silently) and the timeout's error. A lock held by a process that died
    is free again at once: the kernel drops it.
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
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    waited = True
                    log.warning("waiting for %s, held by %s; it frees itself when that "
                                "process exits", self.path, describe_holder(_read(fd)))
                if deadline is not None and time.monotonic() >= deadline:
                    holder = describe_holder(_read(fd))
                    os.close(fd)
                    raise CacheError(
                        f"timed out after {self.timeout:.0f} s waiting for {self.path}, held by "
                        f"{holder}; if that process is stuck, stop it "
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


def describe_holder(text: str) -> str:
    """``HOST PID`` from a lock file as words: ``pid 123 on host h``, and on this host
    whether that process is stopped (a suspended job keeps its lock)."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit():
        return "an unknown process"
    host, pid = parts
    words = f"pid {pid} on host {host}"
    if host == socket.gethostname():
        state = _process_state(int(pid))
        if state in ("T", "t"):
            words += " (stopped: resume it with `kill -CONT " + pid + "` or end it)"
    return words


def _process_state(pid: int) -> str:
    """The one-letter state of a local process (Linux ``/proc``), or "" if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


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
