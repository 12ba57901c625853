"""Test helpers: independent expectations and encoders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


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


