"""The benchmarks' generated data: image folders and their caches under ``REPO/.bench/``.

Everything is generated once (a ``.done`` marker records a complete folder) and reused
by later runs and by every benchmark, so the scripts measure the same bytes.

- :func:`imagenet_like` — ImageNet-like JPEGs: about 500×375 (±20 %), quality 94, which
  makes the generated photographs about 100 KB each, like ImageNet's training set.
- :func:`large_photos` — camera-sized JPEGs, about 2048×1536, where libjpeg-turbo's DCT
  scaling pays off for crops.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
CACHE_DIR = BENCH_DIR / "caches"

#: JPEG quality of the ImageNet-like corpus: ~97 KB mean at 500×375 (quality 90: ~70 KB).
IMAGENET_QUALITY = 94
IMAGENET_SIZE = (375, 500)
IMAGENET_CLASSES = 20
LARGE_SIZE = (1536, 2048)
LARGE_CLASSES = 10


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def image_folder(images: int, *, num_classes: int, size: tuple[int, int], quality: int,
                 log: Any = print) -> Path:
    """An ImageFolder of at least ``images`` JPEGs (rounded up to fill every class),
    generated on first use under ``.bench/`` and reused afterwards."""
    from slipstream.sample_data import make_image_folder

    per_class = math.ceil(images / num_classes)
    name = f"imagefolder-{num_classes}x{per_class}-{size[1]}x{size[0]}-q{quality}"
    root = BENCH_DIR / name
    done = root.with_name(root.name + ".done")
    if done.is_file() and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    log(f"generating {num_classes * per_class} JPEGs of about {size[1]}x{size[0]} "
        f"(quality {quality}) into {root} (once) ...")
    t0 = time.perf_counter()
    make_image_folder(root, num_classes=num_classes, images_per_class=per_class, size=size,
                      quality=quality, num_threads=max(2, cpu_count()))
    done.write_text(f"{num_classes * per_class}\n")
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return root


def imagenet_like(images: int = 2000, log: Any = print) -> Path:
    """The ImageNet-like folder: ~500×375 JPEGs of ~100 KB over 20 classes."""
    return image_folder(images, num_classes=IMAGENET_CLASSES, size=IMAGENET_SIZE,
                        quality=IMAGENET_QUALITY, log=log)


def large_photos(images: int = 200, log: Any = print) -> Path:
    """Camera-sized photographs: ~2048×1536 JPEGs over 10 classes."""
    return image_folder(images, num_classes=LARGE_CLASSES, size=LARGE_SIZE,
                        quality=IMAGENET_QUALITY, log=log)


def tree_size(root: Path) -> tuple[int, int]:
    """Number of files and their total bytes below ``root``."""
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            files += 1
            total += os.stat(os.path.join(dirpath, n)).st_size
    return files, total


def image_files(root: Path) -> tuple[list[str], list[int]]:
    """``(paths, labels)`` of an ImageFolder, classes and files in sorted order."""
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for f in sorted(cls.iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg"):
                paths.append(str(f))
                labels.append(label)
    return paths, labels


def cache_for(root: Path, log: Any = print) -> Any:
    """The slipstream cache of ``root`` in ``.bench/caches/``, built on first use."""
    from slipstream import SlipstreamDataset

    ds = SlipstreamDataset(root, cache_dir=CACHE_DIR)
    try:
        cache = ds.find_cache()
        if cache is None:
            log(f"building the slipstream cache of {root.name} (once) ...")
            t0 = time.perf_counter()
            cache = ds.build_cache(progress=False)
            log(f"  done in {time.perf_counter() - t0:.1f} s")
        return cache
    finally:
        ds.close()


def write_results(path: Path | None, results: Any) -> None:
    """Write ``results`` as indented JSON to ``path`` (the ``--json`` argument), if given."""
    if path is None:
        return
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
