"""Test helpers: independent expectations and encoders."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest


def encode(pixels: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kw)
    return buf.getvalue()


def folder_expectation(root: Path) -> list[dict]:
    """Samples of an ImageFolder computed independently of slipstream: sorted classes,
    then sorted relative paths within each class."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    out = []
    for label, cls in enumerate(classes):
        files = sorted(
            p.relative_to(root).as_posix() for p in (root / cls).rglob("*") if p.is_file()
        )
        for rel in files:
            out.append({"image": (root / rel).read_bytes(), "label": label, "path": rel})
    return out


def set_jpeg_decode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Decode JPEG crops whole (``"full"``) or only their region (``"partial"``) for the
    rest of a test."""
    from slipstream.decode import pixels

    monkeypatch.setattr(pixels, "partial_decode", mode == "partial")


#: Child-process code (a ``-c`` script's prelude) that slows ImageFolder reads to 50 ms
#: each, so that a parent can kill the child while it builds a cache.
SLOW_IMAGEFOLDER_READS = """
import time
from slipstream.sources.imagefolder import ImageFolderSource
_real_read = ImageFolderSource.read
def _slow_read(self, i):
    time.sleep(0.05)
    return _real_read(self, i)
ImageFolderSource.read = _slow_read
"""


def sigkill(child: subprocess.Popen[str]) -> int:
    """SIGKILL ``child`` if it still runs, reap it, close its pipes; its return code
    (``-SIGKILL`` when it was killed, its own if it had already ended)."""
    import signal

    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()
    return child.returncode


def rewrite_cache_file(cache_path: Path, rel: str, data: bytes) -> None:
    """Replace a cache file's bytes and record them in the manifest, as a hostile (or
    buggy) cache writer would: the checksums then agree, so only the reader's checks of
    the values themselves stand between the bytes and a decoder."""
    import hashlib
    import json

    (cache_path / rel).write_bytes(data)
    meta_path = cache_path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["slipstream"]["files"][rel] = {
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta_path.write_text(json.dumps(meta))
