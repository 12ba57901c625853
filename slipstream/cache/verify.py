"""Recomputing every file's checksum against the cache manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .._progress import progress_bar
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
    h = hashlib.new(CHECKSUM)
    size = 0
    with open(path, "rb") as f:
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
        if p.is_file() and rel not in listed and not p.name.startswith("."):
            report.problems.append(f"{rel}: not listed in the manifest")
    return report
