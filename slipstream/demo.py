"""``slipstream demo``: make a sample dataset, cache it, load it, and say how fast."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(directory: Path, *, images: int = 1000, threads: int = 0, epochs: int = 2) -> dict:
    """Build the embedded sample dataset under ``directory``, then train-load it.

    Returns the measured figures (also printed).
    """
    import torch

    from .dataset import SlipstreamDataset
    from .loader import SlipstreamLoader
    from .pipelines import supervised_train
    from .sample_data import make_image_folder

    directory = Path(directory)
    data = directory / "sample-imagefolder"
    classes = 10
    per_class = max(1, images // classes)
    marker = data / f".complete-{classes}x{per_class}"
    t0 = time.perf_counter()
    if not marker.exists():
        print(f"making {classes * per_class} sample JPEGs in {data} ...")
        make_image_folder(data, num_classes=classes, images_per_class=per_class, seed=0)
        marker.touch()
    t_make = time.perf_counter() - t0

    dataset = SlipstreamDataset(data, cache_dir=directory / "cache")
    t0 = time.perf_counter()
    cache = dataset.build_cache()
    t_build = time.perf_counter() - t0
    print(f"cache: {cache.path} ({len(cache)} samples, {cache.size_bytes() / 1e6:.1f} MB)")

    loader = SlipstreamLoader(dataset, batch_size=64, seed=0, num_threads=threads or None,
                              pipelines=supervised_train(224))
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for batch in loader:
            n += len(batch["label"])
        rates.append(n / (time.perf_counter() - t0))
        print(f"epoch {epoch}: {n} images, {rates[-1]:,.0f} images/s "
              f"(random resized crop 224 + flip + normalize, {loader.num_threads} threads)")
    image = batch["image"]
    print(f"last batch: image {tuple(image.shape)} {image.dtype}, label {batch['label'][:8].tolist()}")
    figures = {"make_s": t_make, "build_s": t_build, "images": len(cache),
               "images_per_s": max(rates), "threads": loader.num_threads,
               "torch": torch.__version__}
    print(f"done: built the cache in {t_build:.2f} s, loaded at up to {max(rates):,.0f} images/s")
    return figures
