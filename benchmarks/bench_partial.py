"""Region (partial) JPEG decoding vs whole-image decoding, across thread counts.

slipstream's native kernel decodes only a crop's region (the libjpeg API's
``jpeg_crop_scanline`` + ``jpeg_skip_scanlines``), with the GIL released for a whole
slice of the batch either way. This runs the loader's random resized crop 224 with region decoding on and
off at each thread count, alternating, in one process.

    python benchmarks/bench_partial.py [--threads 1 2 4 8 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _corpus import cache_for, cpu_count, imagenet_like, write_results  # noqa: E402


def images_per_s(cache: Any, threads: int, epochs: int, batch_size: int) -> float:
    from slipstream import SlipstreamLoader
    from slipstream.decoders import DecodeRandomResizedCrop

    loader = SlipstreamLoader(cache, batch_size=batch_size, seed=0, num_threads=threads,
                              pipelines={"image": [DecodeRandomResizedCrop(224)]})
    for _ in loader:  # warm-up epoch
        pass
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = sum(len(b["label"]) for b in loader)
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=None)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from slipstream.decode import kernel, pixels

    threads = args.threads or sorted({1, 2, cpu_count() // 2 or 1, cpu_count()})
    cache = cache_for(imagenet_like(args.images))
    print(f"{len(cache)} images, RRC 224, batch {args.batch_size}; kernel "
          f"{kernel.load().__file__}")
    rows = []
    for t in threads:
        pixels.partial_decode = True
        region = images_per_s(cache, t, args.epochs, args.batch_size)
        pixels.partial_decode = False
        whole = images_per_s(cache, t, args.epochs, args.batch_size)
        pixels.partial_decode = None
        rows.append({"threads": t, "region_images_per_s": round(region, 1),
                     "whole_images_per_s": round(whole, 1),
                     "region_over_whole": round(region / whole, 3)})
        print(f"  {t:3d} threads: region {region:8,.0f}  whole {whole:8,.0f}  images/s  "
              f"= {region / whole:.2f}x", flush=True)
    write_results(args.json, {"benchmark": "partial", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
