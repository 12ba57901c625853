"""Tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) laid out as an ImageFolder.

Nothing is extracted to disk: members are read from the archive into the cache. An
uncompressed archive is read at random (in parallel, by byte range); a compressed one
is listed in one streaming pass and read in a second; for a remote compressed archive
each pass shows a progress bar in bytes of the archive (``progress=False`` hides it).
Members that could escape an extraction target (absolute paths, ``..``, links, devices)
make the archive refused.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from .._progress import progress_bar
from ..errors import SampleError, SourceNotFoundError, UnsafeArchiveError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, Sample
from ._fsinfo import version_tag
from ._imagefolder_layout import FolderLayout, is_image_name, strip_common_root
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
            return raw
        bar = progress_bar(self._info.get("size"), f"{purpose} {self.location.basename}",
                           unit="B", unit_scale=True, enabled=self._progress)
        return _CountingReader(raw, bar)

    def _ensure_listed(self) -> FolderLayout:
        with self._lock:
            if self._layout is None:
                self._list()
            assert self._layout is not None
            return self._layout

    def _list(self) -> None:
        archive = self.location.describe()
        members: dict[str, _Member] = {}
        try:
            with self._open("listing") as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
                for m in tf:
                    check_member_safe(archive, m)
                    if m.isfile() and is_image_name(m.name):
                        members[m.name] = _Member(m.name, m.offset_data, m.size)
        except tarfile.TarError as exc:
            raise SampleError(
                f"{archive}: not a readable tar archive ({exc}); expected a .tar, .tar.gz, "
                f".tar.bz2 or .tar.xz file", path=archive
            ) from exc
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
        with self._open() as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
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
        with self._open("reading") as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
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
