"""YUV 4:2:0 against JPEG: same cache, same crops, same threads, one run.

Prints images/s for random resized crop 224 and center crop 224 from each format, the
ratio, images/s per core for YUV, the storage ratio, and the accuracy of the YUV output
against the JPEG path's (mean / worst-image mean / max absolute error, uint8 levels).

    python benchmarks/bench_yuv.py [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _corpus import CACHE_DIR, cpu_count, imagenet_like, write_results  # noqa: E402

from slipstream import (  # noqa: E402
    DecodeCenterCrop,
    DecodeRandomResizedCrop,
    SlipstreamDataset,
    SlipstreamLoader,
)


def rate(dataset: Any, decoder: Any, fmt: str, threads: int, epochs: int) -> float:
    loader = SlipstreamLoader(dataset, batch_size=256, seed=0, image_format=fmt,
                              pipelines={"image": [decoder]}, num_threads=threads,
                              progress=False)
    for _ in loader:  # warm-up epoch: page cache, allocator
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch["label"])
    return n / (time.perf_counter() - t0)


def accuracy(dataset: Any, decoder: Any) -> dict[str, float]:
    def first(fmt: str) -> np.ndarray:
        loader = SlipstreamLoader(dataset, batch_size=512, seed=1, shuffle=False,
                                  image_format=fmt, pipelines={"image": [decoder]},
                                  progress=False)
        return next(iter(loader))["image"].numpy().astype(np.int16)

    err = np.abs(first("jpeg") - first("yuv420")).reshape(512, -1)
    return {"mean": float(err.mean()), "worst_image_mean": float(err.mean(1).max()),
            "p99": float(np.percentile(err, 99)), "max": int(err.max())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=cpu_count())
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    dataset = SlipstreamDataset(imagenet_like(args.images), cache_dir=CACHE_DIR)
    cache = dataset.build_cache("yuv420", progress=False)
    sizes = cache.info()["image_formats"]
    result: dict[str, Any] = {"threads": args.threads, "images": len(cache),
                              "storage": sizes, "modes": {}}
    print(f"{len(cache)} images, {args.threads} threads; storage: jpeg "
          f"{sizes['jpeg']['bytes'] / 1e6:.0f} MB, yuv420 {sizes['yuv420']['bytes'] / 1e6:.0f} MB "
          f"({sizes['yuv420']['ratio_to_stored']:.2f}x)")
    for name, decoder in [("random resized crop 224", DecodeRandomResizedCrop(224)),
                          ("center crop 224", DecodeCenterCrop(224))]:
        jpeg = rate(dataset, decoder, "jpeg", args.threads, args.epochs)
        yuv = rate(dataset, decoder, "yuv420", args.threads, args.epochs)
        acc = accuracy(dataset, decoder)
        result["modes"][name] = {"jpeg": jpeg, "yuv420": yuv, "ratio": yuv / jpeg,
                                 "yuv420_per_core": yuv / args.threads, "accuracy": acc}
        print(f"  {name:24s} jpeg {jpeg:8,.0f}  yuv420 {yuv:8,.0f} images/s  = {yuv / jpeg:.2f}x; "
              f"{yuv / args.threads:,.0f} images/s per core; yuv vs jpeg error mean "
              f"{acc['mean']:.2f}, worst image {acc['worst_image_mean']:.2f}, p99 {acc['p99']:.0f}, "
              f"max {acc['max']}")
    rrc = result["modes"]["random resized crop 224"]
    print(f"targets: RRC yuv420/jpeg {rrc['ratio']:.2f}x (>= 5x: "
          f"{'MET' if rrc['ratio'] >= 5 else 'NOT met'}); {rrc['yuv420_per_core']:,.0f} images/s "
          f"per core (>= 5,000: {'MET' if rrc['yuv420_per_core'] >= 5000 else 'NOT met'})")
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
