"""Recomputing every file's checksum against the cache manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .._progress import progress_bar
from ..errors import CacheError
from ._regular import open_regular
from .layout import CHECKSUM, MANIFEST_NAME, read_manifest

__all__ = ["VerifyReport", "verify_cache"]

_BLOCK = 8 << 20


@dataclass
class VerifyReport:
    """What ``verify`` found: ``ok`` is true only when every file matches."""

    path: Path
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, digest)`` of the regular file ``path``; anything else at the path (a
    FIFO, a device, a directory) or a file this user may not read raises a
    :class:`~slipstream.errors.CacheError` naming it (see :func:`open_regular`)."""
    h = hashlib.new(CHECKSUM)
    size = 0
    with open(open_regular(path), "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def verify_cache(path: str | Path, progress: bool = False) -> VerifyReport:
    """Check every file the manifest lists (size and checksum) and look for strays."""
    path = Path(path)
    manifest = read_manifest(path)
    report = VerifyReport(path)
    files = manifest["files"]
    total = sum(int(e["size"]) for e in files.values())
    with progress_bar(total, "verifying", unit="B", unit_scale=True, enabled=progress) as bar:
        for rel, entry in sorted(files.items()):
            p = path / rel
            try:
                size, digest = file_digest(p)
            except FileNotFoundError:
                report.problems.append(f"{rel}: missing")
                continue
            except CacheError as exc:  # not a regular file, or not readable by this user
                report.problems.append(f"{rel}: {exc}")
                continue
            except OSError as exc:
                report.problems.append(f"{rel}: cannot be read ({exc})")
                continue
            report.files_checked += 1
            report.bytes_checked += size
            bar.update(size)
            if size != int(entry["size"]):
                report.problems.append(f"{rel}: {size} bytes, manifest says {entry['size']}")
            elif digest != entry[CHECKSUM]:
                report.problems.append(f"{rel}: {CHECKSUM} mismatch (contents changed)")
    listed = set(files) | {MANIFEST_NAME}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if rel in listed or p.name.startswith(".") or p.is_dir():
            continue
        report.problems.append(f"{rel}: not listed in the manifest")
    return report
