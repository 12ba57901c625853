"""The ImageFolder convention shared by the folder and tar sources.

``ROOT/CLASS/.../FILE.EXT``: classes are the first-level directory names in sorted
order, labelled 0, 1, ...; samples are ordered by (label, relative path), as
torchvision's ``ImageFolder`` orders them. Hidden files and files without an image
extension are skipped.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["IMAGE_EXTENSIONS", "is_image_name", "FolderLayout", "strip_common_root",
           "display_name"]

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif",
)


def is_image_name(relpath: str) -> bool:
    base = posixpath.basename(relpath)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def display_name(name: str) -> str:
    """``name`` as printable, storable text: a file name that is not valid UTF-8 (bytes
    Python decodes to lone surrogates) gets its undecodable bytes written as ``\\xNN``,
    so that it can go into the cache's ``path`` field, its metadata and messages."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strip_common_root(relpaths: Sequence[str]) -> tuple[str, list[str]]:
    """Drop leading directories every path shares while each keeps ``class/file``.

    ``train/cat/1.jpg`` and ``train/dog/2.jpg`` become ``cat/1.jpg`` and ``dog/2.jpg``
    (root ``train``), the usual shape of an archive made with ``tar -cf x.tar train/``.
    """
    parts = [p.split("/") for p in relpaths]
    depth = 0
    while parts and all(len(p) - depth > 2 for p in parts):
        first = parts[0][depth]
        if any(p[depth] != first for p in parts):
            break
        depth += 1
    root = "/".join(parts[0][:depth]) if parts and depth else ""
    return root, ["/".join(p[depth:]) for p in parts]


@dataclass(frozen=True)
class FolderLayout:
    """Classes, and the samples in order, each with its label and relative path."""

    classes: tuple[str, ...]
    relpaths: tuple[str, ...]
    labels: tuple[int, ...]

    @classmethod
    def from_relpaths(cls, relpaths: Iterable[str],
                      class_dirs: Iterable[str] | None = None) -> FolderLayout:
        """Keep image files that sit inside a class directory; order them as ImageFolder does.

        ``class_dirs`` (every first-level directory, when the caller can list them) makes
        each of them a class, with or without images, as torchvision's ``find_classes``
        does; without it the classes are the directories that hold images.
        """
        kept = [p for p in relpaths if "/" in p and is_image_name(p)]
        found = {p.split("/", 1)[0] for p in kept}
        classes = sorted(found if class_dirs is None else found | set(class_dirs))
        label_of = {c: i for i, c in enumerate(classes)}
        ordered = sorted(kept, key=lambda p: (label_of[p.split("/", 1)[0]], p))
        labels = tuple(label_of[p.split("/", 1)[0]] for p in ordered)
        return cls(tuple(classes), tuple(ordered), labels)

    def __len__(self) -> int:
        return len(self.relpaths)

    @property
    def empty_classes(self) -> tuple[str, ...]:
        """Classes with no image (only when the layout was given ``class_dirs``)."""
        used = {p.split("/", 1)[0] for p in self.relpaths}
        return tuple(c for c in self.classes if c not in used)
