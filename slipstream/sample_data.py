"""A small ImageFolder of natural-looking JPEGs, made on the spot (demo, tests, benchmarks).

Images are smooth colour fields with edges, blobs and sensor-like grain, so their JPEG
sizes and decode costs resemble photographs (about 100 KB at 500x375, quality 90)
rather than flat synthetic patterns that compress to nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["natural_image", "make_image_folder"]


def natural_image(rng: np.random.Generator, height: int = 375, width: int = 500) -> np.ndarray:
    """An RGB ``uint8`` image with photograph-like statistics."""
    import cv2

    img: np.ndarray = np.zeros((height, width, 3), np.float32)
    # 1/f-ish noise: sum of upsampled random fields at several scales
    for scale, weight in ((4, 90.0), (12, 45.0), (40, 25.0), (120, 16.0)):
        gh, gw = max(2, height * scale // 375), max(2, width * scale // 375)
        field = rng.normal(0, 1, (gh, gw, 3)).astype(np.float32)
        img += weight * cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.uniform(60, 190, 3).astype(np.float32)
    # a few hard-edged objects
    for _ in range(rng.integers(2, 6)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(1, max(2, width // 3))), int(rng.integers(1, max(2, height // 3))))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            pts = rng.integers(0, [width, height], (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    img += rng.normal(0, 9.0, img.shape).astype(np.float32)  # grain
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_image_folder(
    root: str | os.PathLike[str],
    *,
    num_classes: int = 10,
    images_per_class: int = 20,
    size: tuple[int, int] = (375, 500),
    size_jitter: float = 0.2,
    quality: int = 90,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    num_threads: int = 4,
) -> Path:
    """Write ``ROOT/CLASS/NNNNN.jpg`` and return ``root``. Deterministic for a seed.

    Each image's height and width vary by up to ``size_jitter`` around ``size``.
    """
    root = Path(root)
    names = list(class_names or [f"class_{c:03d}" for c in range(num_classes)])
    jobs = [(c, i) for c in range(len(names)) for i in range(images_per_class)]

    def make(job: tuple[int, int]) -> None:
        c, i = job
        rng = np.random.default_rng([seed, c, i])
        h = int(size[0] * (1 + rng.uniform(-size_jitter, size_jitter)))
        w = int(size[1] * (1 + rng.uniform(-size_jitter, size_jitter)))
        path = root / names[c] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encode_jpeg(natural_image(rng, h, w), quality))

    with ThreadPoolExecutor(num_threads) as pool:
        list(pool.map(make, jobs))
    return root
