"""Caches in a local (or locally mounted, NFS-style) directory.

The store owns every name under ``ROOT/.tmp/``: build and staging directories, build,
push and change locks, push-pending marks. The cache code gets its staging directory
and lock from :meth:`LocalStore.workspace`.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from .._filelock import FileLock, SharedLock
from ..cache import Cache, manifest
from ..errors import CacheError, RemoteObjectNotFoundError
from ..hookspecs import hookimpl
from ..location import Location
from ._retry import RetryPolicy
from .base import CacheStore, ObjectInfo, is_cache_name

__all__ = ["LocalStore", "default_cache_dir", "build_dir_name"]

CACHE_DIR_ENV = "SLIPSTREAM_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$SLIPSTREAM_CACHE_DIR`` if set, else ``~/.slipstream`` (which may be a symlink)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".slipstream"


class LocalStore(CacheStore):
    """A directory of caches: ``ROOT/KEY/`` for each complete cache, ``ROOT/.tmp/`` for builds.

    Builds go into ``ROOT/.tmp/KEY.PID.RANDOM/`` and are published with one
    :func:`os.rename`, so a cache directory under ``ROOT`` is always complete.

    A root with the setgid bit (``chmod 2775 ROOT``) is *group-shared*: what slipstream
    creates there (build directories, published caches, lock files) is made usable by the
    group whatever the creator's umask: directories ``rwxrws`` + setgid, files ``rw-rw``,
    and for others whatever the umask allows (``2775``/``664`` under umask 022).
    """

    protocols = ("file", "local")
    supports_put_if_absent = True
    is_local = True

    def __init__(self, location: Location | str | os.PathLike[str], *,
                 retry: RetryPolicy | None = None) -> None:
        if not isinstance(location, Location):
            location = Location.parse(str(Path(location).expanduser()))
        super().__init__(location, retry=retry)
        self.root = Path(location.path)

    def path(self, key: str) -> Path:
        return self.root / key

    def local_path(self, key: str) -> Path:
        return self.path(key)

    def open_cache(self, key: str) -> Cache:
        """Committed cache ``key``, opened in place with this store's workspace."""
        return Cache(self.path(key), workspace=self.workspace(key))

    def has(self, key: str) -> bool:
        return manifest.is_complete(self.path(key))

    def keys(self) -> list[str]:
        return [k for k in self.names() if self.has(k)]

    def describe_url(self) -> str:
        return str(self.root)

    # -- objects (the store contract) ------------------------------------------------------
    def _file(self, key: str, rel: str) -> Path:
        return self.root / key / rel

    def _missing(self, key: str, rel: str) -> RemoteObjectNotFoundError:
        return RemoteObjectNotFoundError(f"{self._file(key, rel)} does not exist")

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_cache_name(p.name) and p.is_dir())

    def exists(self, key: str, rel: str) -> bool:
        return self._file(key, rel).is_file()

    def get(self, key: str, rel: str) -> bytes:
        try:
            return self._file(key, rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key, rel) from None

    def get_range(self, key: str, rel: str, start: int, end: int) -> bytes:
        try:
            with open(self._file(key, rel), "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key, rel) from None

    def get_file(self, key: str, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self._file(key, rel), dest)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if not self.exists(key, rel):
                raise self._missing(key, rel) from None
            raise

    def _staged(self, key: str, rel: str, data: bytes | Path) -> Path:
        """``data`` written beside ``KEY/rel``, under a private name, ready to rename."""
        dest = self._file(key, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{build_dir_name('put')}"
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            shutil.copyfile(data, tmp)
        return tmp

    def put(self, key: str, rel: str, data: bytes | Path, *,
            metadata: Mapping[str, str] | None = None) -> None:
        tmp = self._staged(key, rel, data)
        try:
            os.replace(tmp, self._file(key, rel))
        finally:
            tmp.unlink(missing_ok=True)

    def put_if_absent(self, key: str, rel: str, data: bytes | Path, *,
                      metadata: Mapping[str, str] | None = None) -> bool:
        tmp = self._staged(key, rel, data)
        try:
            os.link(tmp, self._file(key, rel))  # fails if anything is there: atomic
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def list_objects(self, key: str) -> dict[str, ObjectInfo]:
        base = self.root / key
        out: dict[str, ObjectInfo] = {}
        for p in sorted(base.rglob("*")) if base.is_dir() else ():
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and not p.name.startswith("."):
                out[p.relative_to(base).as_posix()] = ObjectInfo(st.st_size, st.st_mtime)
        return out

    def delete(self, key: str, rel: str) -> None:
        self._file(key, rel).unlink(missing_ok=True)

    def metadata(self, key: str, rel: str) -> dict[str, str] | None:
        return {} if self.exists(key, rel) else None

    # -- changing a published cache ----------------------------------------------------------
    def workspace(self, key: str) -> LocalWorkspace:
        """The staging directories and the lock for changes to published cache ``key``."""
        return LocalWorkspace(self, key)

    def set_aside(self, key: str) -> Path | None:
        """Move cache ``key`` into ``.tmp`` (removed once its owner is gone), so the next
        run builds or fetches a fresh one. Where it went, or None if it could not."""
        dest = self.tmp_root / build_dir_name(f"{key}-changed")
        try:
            self._make_tmp_root()
            os.rename(self.path(key), dest)
        except OSError:
            return None
        return dest

    def push_lock(self, key: str) -> FileLock:
        """The lock a pusher of ``key`` holds: processes sharing the directory push a key
        one at a time."""
        path = self.tmp_root / f"{key}.push-lock"
        self._make_lock_file(path)
        return FileLock(path)

    def push_pending(self, key: str) -> Path:
        """Marks a cache whose push has not finished (created before, removed after)."""
        self._make_tmp_root()
        return self.tmp_root / f"{key}.push-pending"

    # -- building --------------------------------------------------------------------------
    @property
    def tmp_root(self) -> Path:
        return self.root / ".tmp"

    def new_build_dir(self, key: str) -> Path:
        """A fresh private directory to build ``key`` in (on the same filesystem as ROOT)."""
        self._make_tmp_root()
        self.clean_stale_builds()
        d = self.tmp_root / build_dir_name(key)
        d.mkdir()
        self.share(d)
        return d

    def build_lock(self, key: str, timeout: float | None = None) -> FileLock:
        """The lock a builder of ``key`` holds: other processes (on any host sharing the
        directory) wait for it, then find the finished cache. Pulls of ``key`` from a
        remote store take the same lock."""
        path = self.tmp_root / f"{key}.build-lock"
        self._make_lock_file(path)
        return FileLock(path, timeout=timeout)

    # -- caches in use, and streamed caches ---------------------------------------------
    def in_use_path(self, key: str) -> Path:
        """The lock file a reader of cache ``key`` (full or streamed) holds shared while it
        has the cache open; its mtime is the cache's last use."""
        return self.tmp_root / f"{key}.in-use"

    def hold(self, key: str) -> SharedLock:
        """Mark cache ``key`` in use (a shared lock, released by :meth:`SharedLock.release`
        or when the process ends) and record the use. Waits while ``rm``/``prune`` holds
        the key."""
        path = self.in_use_path(key)
        self._make_lock_file(path)
        lock = SharedLock(path).acquire()
        try:
            os.utime(path)
        except OSError:  # another user's file in a shared root: the use still counts
            pass
        return lock

    def claim_unused(self, key: str) -> FileLock | None:
        """The exclusive lock of cache ``key`` if no reader holds it (else None): hold it
        while removing the cache."""
        path = self.in_use_path(key)
        self._make_lock_file(path)
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except CacheError:
            return None
        return lock

    @property
    def stream_root(self) -> Path:
        """Where streamed caches keep their local part: ``ROOT/.stream/KEY/``."""
        return self.root / ".stream"

    def stream_dir(self, key: str) -> Path:
        return self.stream_root / key

    def streamed_keys(self) -> list[str]:
        """Keys with a streamed (partial, bounded) local copy."""
        if not self.stream_root.is_dir():
            return []
        return sorted(p.name for p in self.stream_root.iterdir()
                      if is_cache_name(p.name) and p.is_dir())

    def stream_lock(self, key: str) -> FileLock:
        """Serialises setting up (or refreshing) the streamed copy of ``key``."""
        path = self.tmp_root / f"{key}.stream-lock"
        self._make_lock_file(path)
        return FileLock(path)

    def lock_path(self, key: str) -> Path:
        """The lock file that serialises changes to published cache ``key`` (indexes)."""
        return self.tmp_root / f"{key}.lock"

    def new_staging_dir(self, stem: str) -> Path:
        """A fresh private directory under ``.tmp`` (not cleaned of stale builds first)."""
        self._make_tmp_root()
        d = self.tmp_root / build_dir_name(stem)
        d.mkdir()
        return d

    # -- group-shared roots ------------------------------------------------------------------
    @property
    def group_shared(self) -> bool:
        """Whether ROOT has the setgid bit: a directory shared by a group."""
        try:
            return bool(self.root.stat().st_mode & stat.S_ISGID)
        except OSError:
            return False

    def share(self, path: Path) -> None:
        """Give ``path`` (and everything below it) group read/write if ROOT is group-shared.

        Entries owned by someone else are left as they are (only an owner may chmod).
        """
        if not self.group_shared:
            return
        dir_mode, file_mode = _shared_modes()
        for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
            try:
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    continue
                mode = dir_mode if stat.S_ISDIR(st.st_mode) else file_mode
                if stat.S_IMODE(st.st_mode) != mode:
                    os.chmod(p, mode)
            except (PermissionError, FileNotFoundError):
                continue

    def _make_tmp_root(self) -> None:
        if not self.tmp_root.is_dir():
            self.tmp_root.mkdir(parents=True, exist_ok=True)
            self.share(self.tmp_root)

    def _make_lock_file(self, path: Path) -> None:
        """Create a lock file up front, group-writable in a shared root, so that every
        member of the group can open (and so take) it."""
        self._make_tmp_root()
        if self.group_shared and not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                return
            self.share(path)


    def publish(self, build_dir: Path, key: str) -> Path:
        """Move a finished build into place atomically; if another process won, keep theirs.

        An incomplete directory in the way (left by hand or by an old version) is moved
        aside first, so it can never block the key.
        """
        final = self.path(key)
        self.share(build_dir)
        self._make_lock_file(self.lock_path(key))
        for _attempt in range(3):
            try:
                os.rename(build_dir, final)
                return final
            except OSError:
                if manifest.is_complete(final):
                    shutil.rmtree(build_dir, ignore_errors=True)
                    return final
                if not final.exists():
                    raise
                aside = self.tmp_root / build_dir_name(f"{key}-incomplete")
                try:
                    os.rename(final, aside)
                except FileNotFoundError:
                    continue
                shutil.rmtree(aside, ignore_errors=True)
        raise OSError(f"could not publish {build_dir} as {final}")

    def clean_stale_builds(self) -> list[Path]:
        """Remove build directories whose process is gone (a build killed midway).

        Only builds started on this host are judged: a PID means nothing on another
        machine sharing the directory.
        """
        removed = []
        for d in self.tmp_root.glob("*.*.*") if self.tmp_root.is_dir() else ():
            pid = _local_pid_of(d.name)
            if pid is not None and not _alive(pid):
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink(missing_ok=True)
                removed.append(d)
        return removed


class LocalWorkspace:
    """A :class:`~slipstream.cache.workspace.CacheWorkspace` for one cache of a
    :class:`LocalStore`: staging under ``ROOT/.tmp/``, the lock ``ROOT/.tmp/KEY.lock``."""

    def __init__(self, store: LocalStore, key: str) -> None:
        self.store, self.key = store, key

    def staging_dir(self, purpose: str) -> Path:
        return self.store.new_staging_dir(f"{self.key}-{purpose.replace('/', '-')}")

    def lock(self) -> AbstractContextManager[object]:
        path = self.store.lock_path(self.key)
        self.store._make_lock_file(path)
        return FileLock(path)

    def set_aside(self) -> Path | None:
        return self.store.set_aside(self.key)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, and put it back at once
    os.umask(mask)
    return mask


def _shared_modes() -> tuple[int, int]:
    """(directory mode, file mode) in a group-shared root: the group always gets
    read/write (and setgid on directories, so new entries keep the group); others get
    what the umask allows."""
    mask = _umask() & 0o007  # the umask decides only what others get
    return (0o2770 | (0o007 & ~mask)), (0o660 | (0o006 & ~mask))


def build_dir_name(stem: str) -> str:
    """``STEM.HOST-PID.RANDOM``: private to this process; stale once the process is gone."""
    return f"{stem}.{_owner_tag()}.{uuid.uuid4().hex[:8]}"


def _owner_tag() -> str:
    host = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
    return f"{host}-{os.getpid()}"


def _local_pid_of(name: str) -> int | None:
    """The PID in a build directory's name if it was started on this host."""
    parts = name.split(".")
    if len(parts) < 3:
        return None
    host, _, pid = parts[-2].rpartition("-")
    if host != _owner_tag().rpartition("-")[0]:
        return None
    try:
        return int(pid)
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@hookimpl
def slipstream_stores() -> Sequence[type[CacheStore]]:
    return [LocalStore]
