"""Benchmark: building a cache from an ImageFolder, against copying the folder with ``cp -r``.

The question it answers: how much does a cache build cost beyond moving the bytes?
Both operations read the same tree of JPEGs and write about the same number of bytes
to the same filesystem, so ``build / cp`` is the build's overhead (listing, header
probing, hashing every byte for the manifest, the heap layout).

The image folder (ImageNet-like JPEGs, about 500x375 and 100 KB each; see ``_corpus.py``)
is generated once under ``REPO/.bench/`` and reused, also by ``bench_loader.py``. Each
repetition builds into (and copies into) a fresh directory on that same filesystem; the
page cache is dropped before every timed run when the process may do so (root on
Linux), otherwise the runs are warm-cache and the report says so. Neither operation
fsyncs what it writes.

    python benchmarks/bench_build.py                    # 2,000 images, 3 repetitions
    python benchmarks/bench_build.py --images 4000 --repeat 5 --threads 8 --json out.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _corpus import BENCH_DIR, IMAGENET_CLASSES, imagenet_like, tree_size, write_results

NUM_CLASSES = IMAGENET_CLASSES
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000,
                   help="images in the generated folder, spread over 20 classes (default 2000)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs of each operation; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=16,
                   help="read threads for build_cache (default 16, the library default)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.images < NUM_CLASSES:
        p.error(f"--images must be at least {NUM_CLASSES}")
    if args.repeat < 1 or args.threads < 1:
        p.error("--repeat and --threads must be positive")
    return args


def drop_page_cache() -> str | None:
    """Flush and drop the page cache; return why not if that is impossible."""
    os.sync()
    try:
        with open(DROP_CACHES, "w") as f:
            f.write("3\n")
    except OSError as exc:
        return f"could not drop the page cache ({exc.strerror or exc}); timings are warm-cache"
    return None


def time_build(src: Path, out_dir: Path, threads: int) -> tuple[float, int]:
    """Seconds to open the source (listing, fingerprint) and build its cache; cache bytes."""
    from slipstream import build_cache
    from slipstream.sources import open_source

    t0 = time.perf_counter()
    source = open_source(str(src))
    try:
        cache = build_cache(source, out_dir, progress=False, num_threads=threads)
    finally:
        source.close()
    seconds = time.perf_counter() - t0
    try:
        if len(cache) != len(source):
            raise RuntimeError(f"the cache holds {len(cache)} samples, expected {len(source)}")
        return seconds, cache.size_bytes()
    finally:
        cache.close()


def time_cp(src: Path, out_dir: Path) -> float:
    dst = out_dir / "copy"
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return time.perf_counter() - t0


def summary(times: list[float], images: int, nbytes: int) -> dict[str, object]:
    med = statistics.median(times)
    return {
        "times_s": [round(t, 4) for t in times],
        "median_s": round(med, 4),
        "images_per_s": round(images / med, 1),
        "mb_per_s": round(nbytes / 1e6 / med, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src = imagenet_like(args.images, log=lambda msg: print(msg, flush=True))
    n_files, n_bytes = tree_size(src)

    # load libturbojpeg (and the plugin host) before any timing
    from slipstream.cache.images import header_reader
    from slipstream.sources import open_source

    header_reader()
    open_source(str(src)).close()

    scratch = BENCH_DIR / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    build_times: list[float] = []
    cp_times: list[float] = []
    cache_bytes = 0
    notes: set[str] = set()
    dropped = True
    print(f"{n_files} images, {n_bytes / 1e6:.1f} MB, {args.repeat} repetitions, "
          f"{args.threads} build threads, {os.cpu_count()} CPUs", flush=True)
    for rep in range(args.repeat):
        # alternate the two operations so that drifting machine load hits both alike
        for op in ("build", "cp"):
            out = Path(tempfile.mkdtemp(prefix=f"{op}-", dir=scratch))
            try:
                why = drop_page_cache()
                if why:
                    dropped = False
                    notes.add(why)
                if op == "build":
                    seconds, cache_bytes = time_build(src, out, args.threads)
                    build_times.append(seconds)
                else:
                    seconds = time_cp(src, out)
                    cp_times.append(seconds)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(f"  rep {rep + 1} {op:5s} {seconds:7.3f} s", flush=True)

    build = summary(build_times, n_files, n_bytes)
    cp = summary(cp_times, n_files, n_bytes)
    ratio = round(statistics.median(build_times) / statistics.median(cp_times), 3)
    print()
    print(f"{'operation':<14}{'median s':>10}{'images/s':>11}{'MB/s':>9}")
    for name, row in (("build_cache", build), ("cp -r", cp)):
        print(f"{name:<14}{row['median_s']:>10.3f}{row['images_per_s']:>11.1f}"
              f"{row['mb_per_s']:>9.1f}")
    print(f"build / cp = {ratio:.2f}x   (cache {cache_bytes / 1e6:.1f} MB for "
          f"{n_bytes / 1e6:.1f} MB of JPEGs; page cache "
          f"{'dropped before each run' if dropped else 'NOT dropped'})")
    for note in sorted(notes):
        print(f"note: {note}")

    if args.json:
        result = {
            "benchmark": "build",
            "images": n_files,
            "source_bytes": n_bytes,
            "cache_bytes": cache_bytes,
            "repeat": args.repeat,
            "threads": args.threads,
            "page_cache_dropped": dropped,
            "notes": sorted(notes),
            "build": build,
            "cp": cp,
            "ratio_build_over_cp": ratio,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
        }
        write_results(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
