"""What checking heap chunks against the manifest costs the loader (docs/reliability.md).

Each heap chunk is hashed (sha256, as mapped) the first time a batch touches it, once per
process. This times an epoch of random resized crop 224 on a freshly opened cache (every
chunk hashed during the epoch) and on one already checked, with the check on and off
(``SLIPSTREAM_CHECK_CHUNKS``), alternating rounds in one process; it reports medians,
the spread, and the on/off ratios. The raw sha256 rate is printed for scale.

    python benchmarks/bench_integrity.py [--images 2000] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _corpus import cache_for, cpu_count, imagenet_like, write_results  # noqa: E402


def epoch_s(path: Path, threads: int, batch_size: int, fresh: bool, check: bool) -> float:
    """Seconds for one epoch; ``fresh``: on a cache opened just now (nothing hashed yet)."""
    from slipstream import SlipstreamLoader
    from slipstream.cache import Cache
    from slipstream.decoders import DecodeRandomResizedCrop

    os.environ["SLIPSTREAM_CHECK_CHUNKS"] = "1" if check else "0"
    cache = Cache(path)
    loader = SlipstreamLoader(cache, batch_size=batch_size, seed=0, num_threads=threads,
                              pipelines={"image": [DecodeRandomResizedCrop(224)]})
    if not fresh:
        for _ in loader:  # every chunk touched (and hashed, if checking) once
            pass
    t0 = time.perf_counter()
    for _ in loader:
        pass
    took = time.perf_counter() - t0
    cache.close()
    return took


def hash_all_s(path: Path) -> float:
    """Seconds to hash every heap chunk of a freshly opened cache, as the loader's first
    batches do (in parallel threads): the first epoch's extra work, measured alone."""
    import numpy as np

    from slipstream.cache import Cache

    os.environ["SLIPSTREAM_CHECK_CHUNKS"] = "1"
    cache = Cache(path)
    columns = [cache.column(f) for f in cache.image_fields]
    t0 = time.perf_counter()
    for col in columns:
        cache.check_unchanged(col, np.arange(len(cache)))
    took = time.perf_counter() - t0
    cache.close()
    return took


def sha256_gb_per_s() -> float:
    data = os.urandom(64 << 20)
    t0 = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t0) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=min(2, cpu_count()))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cache = cache_for(imagenet_like(args.images))
    heap_bytes = sum(int(cache.column(f).sizes.sum()) for f in cache.image_fields)
    print(f"{len(cache)} images, {heap_bytes / 1e6:.0f} MB of JPEG, RRC 224, "
          f"{args.threads} threads; sha256 {sha256_gb_per_s():.2f} GB/s on one core")
    results: dict[str, Any] = {"images": len(cache), "heap_bytes": heap_bytes,
                               "threads": args.threads, "rounds": args.rounds}
    for fresh in (True, False):
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for check in ((True, False) if r % 2 == 0 else (False, True)):
                times[check].append(epoch_s(cache.path, args.threads, args.batch_size,
                                            fresh, check))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        name = "first epoch (every chunk hashed)" if fresh else "later epochs (already checked)"
        spread = {k: (min(v), max(v)) for k, v in times.items()}
        print(f"{name}: check on {on:.3f} s [{spread[True][0]:.3f}-{spread[True][1]:.3f}], "
              f"off {off:.3f} s [{spread[False][0]:.3f}-{spread[False][1]:.3f}]: "
              f"on/off = {on / off:.3f}")
        results["fresh" if fresh else "checked"] = {
            "on_s": times[True], "off_s": times[False], "ratio_on_off": on / off}
    hashing = [hash_all_s(cache.path) for _ in range(args.rounds)]
    first_off = statistics.median(results["fresh"]["off_s"])
    print(f"hashing every chunk alone: {statistics.median(hashing):.3f} s "
          f"[{min(hashing):.3f}-{max(hashing):.3f}] = "
          f"{statistics.median(hashing) / first_off:.1%} of an unchecked epoch")
    results["hash_all_s"] = hashing
    results["hash_fraction_of_epoch"] = statistics.median(hashing) / first_off
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
