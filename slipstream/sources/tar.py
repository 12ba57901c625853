"""Tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) laid out as an ImageFolder.

Nothing is extracted to disk: members are read from the archive into the cache. An
uncompressed archive is read at random (in parallel, by byte range); a compressed one
is listed in one streaming pass and read in a second; for a remote compressed archive
each pass shows a progress bar in bytes of the archive (``progress=False`` hides it).
Members that could escape an extraction target (absolute paths, ``..``, links, devices)
make the archive refused.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from .._progress import progress_bar
from ..errors import SampleError, SlipstreamError, SourceNotFoundError, UnsafeArchiveError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, Sample
from ._fsinfo import version_tag
from ._imagefolder_layout import FolderLayout, is_image_name, strip_common_root
from ._remote import access_error
from .base import Detection, Source

__all__ = ["TarSource", "TAR_SUFFIXES", "check_member_safe"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")


def check_member_safe(archive: str, member: tarfile.TarInfo) -> None:
    """Raise :class:`UnsafeArchiveError` unless ``member`` is a plain file or directory
    whose name stays inside the extraction root."""
    name = member.name
    kind = None
    if member.issym() or member.islnk():
        kind = f"a link to {member.linkname!r}"
    elif member.isdev():
        kind = "a device or FIFO"
    elif not (member.isfile() or member.isdir()):
        kind = f"an unsupported member type ({member.type!r})"
    if kind:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} is {kind}; slipstream reads only regular files and "
            f"directories from archives. Repack the archive without links or special files"
        )
    normalized = posixpath.normpath(name)
    if (
        name.startswith(("/", "\\"))
        or (len(name) > 1 and name[1] == ":")
        or normalized == ".."
        or normalized.startswith("../")
        or ".." in name.replace("\\", "/").split("/")
    ):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} has an absolute path or a '..' component and could "
            f"write outside the target directory; slipstream refuses such archives. Repack "
            f"it with relative paths (tar -C ROOT -cf archive.tar .)"
        )


#: What reading a damaged archive raises, besides tarfile's own errors: a stream that
#: ends early (EOFError), a bad gzip, bzip2 or xz stream (OSError, zlib.error,
#: LZMAError), a member name that is not text (UnicodeError), and TypeError from
#: CPython's tarfile when a gzip header is cut short (it calls ord() on an empty read).
_DAMAGED = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, UnicodeError,
            TypeError)


@contextmanager
def _archive_errors(archive: str) -> Iterator[None]:
    """Turn what a damaged or foreign archive raises into a :class:`SampleError` naming it
    (missing files and denied access into :class:`SourceNotFoundError`)."""
    try:
        yield
    except SlipstreamError:
        raise
    except _DAMAGED as exc:
        mapped = access_error(exc, archive, "the archive")
        if mapped is not None:
            raise mapped from exc
        raise SampleError(
            f"{archive}: not a readable tar archive ({type(exc).__name__}: {exc}); expected a "
            f"complete .tar, .tar.gz, .tar.bz2 or .tar.xz file", path=archive
        ) from exc


@dataclass(frozen=True)
class _Member:
    name: str  # name in the archive
    offset: int  # of its data, in the uncompressed stream
    size: int


def _is_compressed(path: str) -> bool:
    return not path.lower().endswith(".tar")


class _CountingReader:
    """A binary file that reports every read to a progress bar."""

    def __init__(self, raw: BinaryIO, bar: Any) -> None:
        self._raw = raw
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data

    def close(self) -> None:
        self._bar.close()
        self._raw.close()

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _EndGuard:
    """A binary file that fails once it is read at its end again and again. tarfile skips
    a member's data by reading through it, so without this a header claiming 2**62 bytes
    (a compressed archive's size bounds nothing) spins on the exhausted file for hours;
    a sound archive reads its end once or twice."""

    _EMPTY_READS = 16

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._empty = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if not data and size != 0:
            self._empty += 1
            if self._empty > self._EMPTY_READS:
                raise tarfile.ReadError("unexpected end of data: a member claims more bytes "
                                        "than the archive holds")
        return data

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _EndGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TarSource(Source):
    """A tar archive holding an ImageFolder (``[ROOT/]CLASS/IMAGE``), local or at any URL."""

    name = "tar"
    priority = 20

    _FIELDS = (
        Field("image", FieldKind.IMAGE),
        Field("label", FieldKind.INT),
        Field("path", FieldKind.STR),
    )

    def __init__(self, location: Location, *, progress: bool = True, **options: Any) -> None:
        super().__init__(location, **options)
        self._progress = progress
        try:
            self._info = location.fs.info(location.path)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{location.describe()}: no such archive") from exc
        self._members: list[_Member] | None = None
        self._layout: FolderLayout | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None

    @classmethod
    def detect(cls, location: Location) -> Detection:
        if not location.path.lower().endswith(TAR_SUFFIXES):
            return Detection.no(f"name does not end in {'/'.join(TAR_SUFFIXES)}")
        if not location.fs.isfile(location.path):
            return Detection.no("not a file")
        return Detection.yes("a tar archive by its suffix")

    # -- listing (lazy: a cache hit never reads the archive) -------------------------------
    def _open(self, purpose: str | None = None) -> Any:
        """The archive, opened for reading; ``purpose`` names a full pass over a remote
        compressed archive, which then shows a progress bar."""
        raw = self.location.fs.open(self.location.path, "rb")
        if purpose is None or self.location.is_local or not _is_compressed(self.location.path):
            return _EndGuard(raw)
        bar = progress_bar(self._info.get("size"), f"{purpose} {self.location.basename}",
                           unit="B", unit_scale=True, enabled=self._progress)
        return _EndGuard(_CountingReader(raw, bar))

    def _ensure_listed(self) -> FolderLayout:
        with self._lock:
            if self._layout is None:
                self._list()
            assert self._layout is not None
            return self._layout

    def _list(self) -> None:
        archive = self.location.describe()
        members: dict[str, _Member] = {}
        # an uncompressed archive holds its members' bytes: none may claim more
        limit = None if _is_compressed(self.location.path) else self._info.get("size")
        with _archive_errors(archive), self._open("listing") as raw, \
                tarfile.open(fileobj=raw, mode="r|*") as tf:
            for m in tf:
                check_member_safe(archive, m)
                if m.size < 0 or (limit is not None and m.offset_data + m.size > limit):
                    held = f"the archive has {limit} bytes" if limit is not None else "negative"
                    raise SampleError(
                        f"{archive}: member {m.name!r} claims {m.size} bytes at byte "
                        f"{m.offset_data} ({held}); the archive is truncated or corrupt",
                        path=archive)
                if m.isfile() and is_image_name(m.name):
                    members[m.name] = _Member(m.name, m.offset_data, m.size)
        for name in members:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise SampleError(
                    f"{archive}: member name {name!r} is not valid UTF-8 ({exc}); repack the "
                    f"archive with UTF-8 file names", path=archive) from exc
        names = list(members)
        root, rel = strip_common_root(names)
        layout = FolderLayout.from_relpaths(rel)
        by_rel = dict(zip(rel, names))
        self._members = [members[by_rel[r]] for r in layout.relpaths]
        self._root = root
        self._layout = layout

    @property
    def classes(self) -> tuple[str, ...]:
        return self._ensure_listed().classes

    # -- Source API -----------------------------------------------------------------------
    @property
    def fields(self) -> tuple[Field, ...]:
        return self._FIELDS

    def __len__(self) -> int:
        return len(self._ensure_listed())

    def fingerprint(self) -> Any:
        return {
            "archive": self.location.basename,
            "archive_size": self._info.get("size"),
            "version": version_tag(self._info),
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": list(self.classes)}

    def sample_name(self, index: int) -> str:
        layout = self._ensure_listed()
        return f"{self.location.describe()}!{layout.relpaths[index]}"

    def read(self, index: int) -> Sample:
        layout = self._ensure_listed()
        assert self._members is not None
        m = self._members[index]
        compressed = _is_compressed(self.location.path)
        data = self._read_compressed(m) if compressed else self._read_range(m)
        if len(data) != m.size:
            raise SampleError(
                f"{self.sample_name(index)}: archive ends inside this member (read {len(data)} of "
                f"{m.size} bytes); the archive is truncated", index=index,
                path=self.sample_name(index),
            )
        return {"image": data, "label": layout.labels[index], "path": layout.relpaths[index]}

    def _read_range(self, m: _Member) -> bytes:
        if not self.location.is_local:
            end = m.offset + m.size
            return self.location.fs.cat_file(self.location.path, start=m.offset, end=end)
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.location.path, os.O_RDONLY)
            fd = self._fd
        return os.pread(fd, m.size, m.offset)

    def _read_compressed(self, m: _Member) -> bytes:
        # Random access into a compressed stream means decompressing up to it; fine
        # for a handful of samples (tests, inspection); builds go through iter_samples.
        with _archive_errors(self.location.describe()), self._open() as raw, \
                tarfile.open(fileobj=raw, mode="r|*") as tf:
            for info in tf:
                if info.name == m.name:
                    f = tf.extractfile(info)
                    return f.read() if f is not None else b""
        return b""

    def iter_samples(
        self, indices: Iterable[int] | None = None, *, num_threads: int = 8
    ) -> Iterator[tuple[int, Sample]]:
        if not _is_compressed(self.location.path):
            yield from super().iter_samples(indices, num_threads=num_threads)
            return
        layout = self._ensure_listed()
        assert self._members is not None
        wanted = set(range(len(layout)) if indices is None else indices)
        index_of = {m.name: i for i, m in enumerate(self._members) if i in wanted}
        with _archive_errors(self.location.describe()), self._open("reading") as raw, \
                tarfile.open(fileobj=raw, mode="r|*") as tf:
            for info in tf:
                i = index_of.get(info.name)
                if i is None:
                    continue
                f = tf.extractfile(info)
                data = f.read() if f is not None else b""
                yield i, {"image": data, "label": layout.labels[i], "path": layout.relpaths[i]}

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    return [TarSource]
