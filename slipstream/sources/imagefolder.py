"""ImageFolder: ``ROOT/CLASS/IMAGE`` at a local path or any fsspec URL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .._redact import redact_url
from ..errors import SampleError, SourceNotFoundError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, Sample
from ._fsinfo import version_tag
from ._imagefolder_layout import IMAGE_EXTENSIONS, FolderLayout, display_name, is_image_name
from .base import Detection, Source

__all__ = ["ImageFolderSource"]

_PROBE_CLASSES = 8


class ImageFolderSource(Source):
    """Class folders → integer labels (sorted names), with ``image``, ``label`` and ``path``.

    ``path`` is the image's path relative to the root, ``CLASS/NAME.jpg`` (a name that is
    not valid UTF-8 has its undecodable bytes written as ``\\xNN``). The class names are
    in :attr:`classes`.

    Every first-level directory is a class, as in torchvision's ``ImageFolder`` (a hidden
    one, like ``.ipynb_checkpoints``, only if it holds images). A class directory with no
    image is refused by name (torchvision refuses it too: dropping it would shift every
    later class's label); with ``allow_empty_classes=True`` it keeps its label and has no
    samples (torchvision's ``allow_empty=True``).
    """

    name = "imagefolder"
    priority = 10

    _FIELDS = (
        Field("image", FieldKind.IMAGE),
        Field("label", FieldKind.INT),
        Field("path", FieldKind.STR),
    )

    def __init__(self, location: Location, *, allow_empty_classes: bool = False,
                 **options: Any) -> None:
        super().__init__(location, **options)
        entries = _list_files(location)
        self._layout = FolderLayout.from_relpaths(entries, _class_dirs(location))
        empty = self._layout.empty_classes
        if empty and not allow_empty_classes:
            names = ", ".join(repr(display_name(c)) for c in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise SourceNotFoundError(
                f"{location.describe()}: class folder(s) {names}{more} hold no image file "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}). Dropping a class would shift "
                f"every later class's label (torchvision's ImageFolder refuses this too): "
                f"add images, remove the folder, or pass allow_empty_classes=True to keep "
                f"it as a class with no samples")
        self._versions = [entries[p] for p in self._layout.relpaths]
        self.classes = self._layout.classes

    @classmethod
    def detect(cls, location: Location) -> Detection:
        fs, path = location.fs, location.path
        if not fs.isdir(path):
            return Detection.no("not a directory")
        subdirs = [e["name"] for e in fs.ls(path, detail=True) if e["type"] == "directory"]
        if not subdirs:
            return Detection.no("no class sub-directories")
        for sub in sorted(subdirs)[:_PROBE_CLASSES]:
            if any(is_image_name(n) for n in fs.ls(sub, detail=False)):
                return Detection.yes(f"class directory {sub.rsplit('/', 1)[-1]!r} holds images")
        return Detection.no(
            f"none of the first {_PROBE_CLASSES} sub-directories directly holds image files"
        )

    @property
    def fields(self) -> tuple[Field, ...]:
        return self._FIELDS

    def __len__(self) -> int:
        return len(self._layout)

    def fingerprint(self) -> Any:
        out: dict[str, Any] = {
            "files": [[p, v] for p, v in zip(self._layout.relpaths, self._versions)],
        }
        if self._layout.empty_classes:  # they move labels: part of the data's identity
            out["classes"] = list(self.classes)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": [display_name(c) for c in self.classes]}

    def sample_name(self, index: int) -> str:
        return self._shown(self.location.child(self._layout.relpaths[index]))

    def _shown(self, path: str) -> str:
        """``path`` for messages: printable, and without credentials (a remote URL's)."""
        return display_name(path) if self.location.is_local else redact_url(display_name(path))

    def read(self, index: int) -> Sample:
        relpath = self._layout.relpaths[index]
        full = self.location.child(relpath)
        try:
            if self.location.is_local:
                with open(full, "rb") as f:
                    data = f.read()
            else:
                data = self.location.fs.cat_file(full)
        except OSError as exc:
            name = self._shown(full)
            raise SampleError(f"{name}: cannot read image ({self._shown(str(exc))})",
                              index=index, path=name) from exc
        return {"image": data, "label": self._layout.labels[index],
                "path": display_name(relpath)}


def _list_files(location: Location) -> dict[str, str]:
    """Relative path → version tag of every file below the root."""
    fs, root = location.fs, location.path.rstrip("/")
    if location.is_local:
        return _list_local(root)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{location.describe()}: no such directory") from exc
    return {
        name[len(root) + 1 :]: f"{entry.get('size')}:{version_tag(entry)}"
        for name, entry in found.items()
        if entry.get("type") != "directory"
    }


def _class_dirs(location: Location) -> list[str]:
    """The first-level directories that are not hidden: the classes."""
    if location.is_local:
        with os.scandir(location.path) as it:
            return [e.name for e in it
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]
    root = location.path.rstrip("/")
    return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in location.fs.ls(root, detail=True)
            if e.get("type") == "directory"
            and not e["name"].rstrip("/").rsplit("/", 1)[-1].startswith(".")]


def _list_local(root: str) -> dict[str, str]:
    if not os.path.isdir(root):
        raise SourceNotFoundError(f"{root}: no such directory")
    out: dict[str, str] = {}
    pending = [root]
    seen_dirs: set[tuple[int, int]] = set()  # symlinked directories may form loops
    while pending:
        d = pending.pop()
        st = os.stat(d)
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    pending.append(e.path)
                elif e.is_file(follow_symlinks=True):
                    st = e.stat()
                    out[e.path[len(root) + 1 :]] = f"{st.st_size}:{st.st_mtime_ns}"
                elif e.is_symlink():
                    # a broken link is listed, so an image behind one fails its read by
                    # name instead of silently dropping out of the dataset
                    out[e.path[len(root) + 1 :]] = "broken-link"
    return out


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    return [ImageFolderSource]
