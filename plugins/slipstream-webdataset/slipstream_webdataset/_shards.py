"""Reading the structure of WebDataset shards: member names, keys, and the samples they form.

A WebDataset shard is an uncompressed tar whose members are grouped into samples by
key: the member name up to the first dot of its base name (``000017.jpg`` and
``000017.cls`` are the ``jpg`` and ``cls`` parts of sample ``000017``). A sample's
members are consecutive in the archive.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from slipstream.plugin import Detection, SampleError, UnsafeArchiveError, check_member_safe

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSION",
    "SHARD_SUFFIX",
    "ShardSample",
    "split_key",
    "peek_shard",
    "scan_shard",
]

#: Member extensions read as the ``image`` field, in order of preference.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: The member extension holding the integer class label as text.
LABEL_EXTENSION = "cls"
SHARD_SUFFIX = ".tar"
#: How many members detection looks at before giving up.
PEEK_MEMBERS = 16


@dataclass(frozen=True)
class ShardSample:
    """One sample of a shard: where its image's bytes are, and its label."""

    key: str
    offset: int  # of the image member's data in the shard
    size: int
    label: int


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def split_key(name: str) -> tuple[str, str]:
    """``dir/000017.seg.png`` -> (``dir/000017``, ``seg.png``): WebDataset's key and extension."""
    dirname, base = posixpath.split(_normalise(name))
    stem, _, ext = base.partition(".")
    return (f"{dirname}/{stem}" if dirname else stem), ext.lower()


def _open_tar(fileobj: Any) -> tarfile.TarFile:
    # Uncompressed only ("r:"): members are then byte ranges of the shard, and listing
    # seeks over their data instead of reading it.
    return tarfile.open(fileobj=fileobj, mode="r:")


def peek_shard(fs: Any, path: str, shown: str) -> Detection:
    """Whether the first members of a shard look like WebDataset image classification data.

    Yes only when a ``.cls`` member shares its key with an image member, every member
    seen is a regular file at the top level (WebDataset writers add no directories), and
    every member is safe to extract: an ImageFolder archive never matches.
    """
    images: set[str] = set()
    labels: set[str] = set()
    try:
        with fs.open(path, "rb") as raw, _open_tar(raw) as tf:
            for count, member in enumerate(_members(tf)):
                if count >= PEEK_MEMBERS:
                    break
                check_member_safe(shown, member)
                name = _normalise(member.name)
                if member.isdir():
                    if name.strip("/") in ("", "."):
                        continue
                    return Detection.no(f"has a directory member {member.name!r}")
                if "/" in name:
                    return Detection.no(f"member {member.name!r} is inside a directory")
                key, ext = split_key(name)
                if ext in IMAGE_EXTENSIONS:
                    images.add(key)
                elif ext == LABEL_EXTENSION:
                    labels.add(key)
                both = images & labels
                if both:
                    key = min(both)
                    return Detection.yes(f"sample {key!r} has an image and a .cls member")
    except UnsafeArchiveError as exc:
        return Detection.no(f"has an unsafe member: {exc}")
    except (tarfile.TarError, OSError) as exc:
        return Detection.no(f"not a readable uncompressed tar ({type(exc).__name__}: {exc})")
    return Detection.no(
        f"none of the first {PEEK_MEMBERS} members pairs an image "
        f"({'/'.join(IMAGE_EXTENSIONS)}) with a .{LABEL_EXTENSION} label under one key"
    )


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tf.next()
        if member is None:
            return
        yield member


@dataclass
class _Pending:
    key: str
    image: tuple[str, int, int] | None = None  # (extension, offset, size)
    label: int | None = None
    extensions: list[str] = field(default_factory=list)


def scan_shard(fs: Any, path: str, shown: str) -> list[ShardSample]:
    """Every sample of one shard, in member order. ``shown`` names the shard in errors.

    Refuses the whole shard (:class:`~slipstream.errors.UnsafeArchiveError`) if any
    member is a link, a device or could escape an extraction directory, exactly as
    the built-in ``tar`` source does.
    """
    samples: list[ShardSample] = []
    done: set[str] = set()
    pending: _Pending | None = None
    try:
        with fs.open(path, "rb") as raw, _open_tar(raw) as tf:
            for member in _members(tf):
                check_member_safe(shown, member)
                if member.isdir():
                    continue
                key, ext = split_key(member.name)
                if posixpath.basename(key).startswith(".") or not key:
                    continue  # hidden files (._000017.jpg from macOS tar, say)
                if pending is None or key != pending.key:
                    if pending is not None:
                        samples.append(_finish(pending, shown))
                        done.add(pending.key)
                    if key in done:
                        raise SampleError(
                            f"{shown}: the members of sample {key!r} are not consecutive "
                            f"({member.name!r} comes after other samples); WebDataset shards "
                            f"keep each sample's files together. Rewrite the shard in key order",
                            path=f"{shown}!{key}",
                        )
                    pending = _Pending(key)
                pending.extensions.append(ext)
                if ext in IMAGE_EXTENSIONS:
                    _add_image(pending, ext, member, shown)
                elif ext == LABEL_EXTENSION:
                    pending.label = _parse_label(tf, member, shown)
    except tarfile.TarError as exc:
        raise SampleError(
            f"{shown}: not a readable uncompressed tar shard ({exc}); WebDataset shards are "
            f"plain .tar files", path=shown,
        ) from exc
    if pending is not None:
        samples.append(_finish(pending, shown))
    return samples


def _add_image(pending: _Pending, ext: str, member: tarfile.TarInfo, shown: str) -> None:
    if pending.image is not None:
        prev = pending.image[0]
        if prev == ext:
            raise SampleError(
                f"{shown}: sample {pending.key!r} has two .{ext} members; each key holds one "
                f"file per extension", path=f"{shown}!{pending.key}",
            )
        if IMAGE_EXTENSIONS.index(prev) <= IMAGE_EXTENSIONS.index(ext):
            return  # keep the preferred format when a sample has several
    pending.image = (ext, member.offset_data, member.size)


def _parse_label(tf: tarfile.TarFile, member: tarfile.TarInfo, shown: str) -> int:
    f = tf.extractfile(member)
    data = f.read() if f is not None else b""
    try:
        return int(data.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise SampleError(
            f"{shown}!{member.name}: expected an integer class index as text, got "
            f"{data[:40]!r}", path=f"{shown}!{member.name}",
        ) from exc


def _finish(pending: _Pending, shown: str) -> ShardSample:
    if pending.image is None or pending.label is None:
        missing = []
        if pending.image is None:
            missing.append(f"an image ({'/'.join('.' + e for e in IMAGE_EXTENSIONS)})")
        if pending.label is None:
            missing.append(f"a .{LABEL_EXTENSION} label")
        has = ", ".join("." + e for e in pending.extensions)
        raise SampleError(
            f"{shown}: sample {pending.key!r} has {has} but no {' and no '.join(missing)}; "
            f"every sample needs both for the image, label and key fields",
            path=f"{shown}!{pending.key}",
        )
    _, offset, size = pending.image
    return ShardSample(pending.key, offset, size, pending.label)
