"""Soak: many epochs with random early breaks, watching for leaks.

One loader runs ``--epochs`` epochs (20 by default) of random resized crops over the
ImageNet-like corpus; each epoch stops early at a random batch with probability
``--break-p`` (a ``break`` out of the loop, as an evaluation step or a crash handler
would), otherwise runs to the end. Every few epochs a *new* loader is made and the old
one dropped, as a script that recreates its loader would. Before the first epoch and
after the last, the process reports its resident memory (VmRSS, high-water mark,
anonymous memory), its thread count and its open file descriptors (and how many of
them are regular files). What must hold: threads and open files return to where they
started; memory after the last epoch is within a few batch buffers of memory after the
first.

    python benchmarks/bench_soak.py [--epochs 20] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _corpus import cache_for, cpu_count, imagenet_like, write_results  # noqa: E402

CROP = 224


def process_state() -> dict[str, Any]:
    """Memory (MB), threads and open descriptors of this process, from /proc."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
            status[key] = int(value.split()[0])
    fds = os.listdir("/proc/self/fd")
    regular = 0
    for fd in fds:
        try:
            regular += stat.S_ISREG(os.stat(f"/proc/self/fd/{fd}").st_mode)
        except OSError:
            pass  # the descriptor listdir itself used, already closed
    return {"rss_mb": round(status["VmRSS"] / 1024, 1),
            "hwm_mb": round(status["VmHWM"] / 1024, 1),
            "anon_mb": round(status["RssAnon"] / 1024, 1),
            "threads": status["Threads"], "python_threads": threading.active_count(),
            "open_fds": len(fds), "open_regular_files": regular}


def soak(cache: Any, args: argparse.Namespace) -> dict[str, Any]:
    from slipstream import SlipstreamLoader
    from slipstream.decoders import DecodeRandomResizedCrop

    rng = random.Random(args.seed)

    def new_loader() -> SlipstreamLoader:
        return SlipstreamLoader(cache, batch_size=args.batch_size, seed=args.seed,
                                num_threads=args.threads,
                                pipelines={"image": [DecodeRandomResizedCrop(CROP)]})

    loader = new_loader()
    start = process_state()
    epochs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    after_first: dict[str, Any] | None = None
    for e in range(args.epochs):
        if e and e % args.new_loader_every == 0:
            loader = new_loader()  # the old one is dropped here
        stop_at = rng.randrange(len(loader)) if rng.random() < args.break_p else None
        images = batches = 0
        for batches, batch in enumerate(loader, 1):
            images += len(batch["label"])
            if stop_at is not None and batches > stop_at:
                break
        gc.collect()
        state = process_state()
        after_first = after_first or state
        epochs.append({"epoch": e, "batches": batches, "images": images,
                       "broke_early": stop_at is not None, **state})
        print(f"  epoch {e:2d}: {batches:3d} batches{' (break)' if stop_at is not None else ''}"
              f"  RSS {state['rss_mb']:7.1f} MB  threads {state['threads']:3d}  "
              f"fds {state['open_fds']:3d}", flush=True)
    seconds = time.perf_counter() - t0
    del loader
    gc.collect()
    end = process_state()
    assert after_first is not None
    buffers_mb = 3 * args.batch_size * CROP * CROP * 3 / 2**20
    return {
        "epochs": args.epochs, "seconds": round(seconds, 1),
        "images": sum(ep["images"] for ep in epochs),
        "early_breaks": sum(ep["broke_early"] for ep in epochs),
        "start": start, "after_first_epoch": after_first, "end": end,
        "per_epoch": epochs,
        # Python threads must return to the start; OS threads may include library pools
        # (OpenCV, OpenMP) that start on first use and stay: those must not grow after
        # the first epoch
        "threads_back_to_start": end["python_threads"] == start["python_threads"]
        and max(ep["threads"] for ep in epochs) == after_first["threads"],
        "open_files_back_to_start": end["open_regular_files"] == start["open_regular_files"]
        and end["open_fds"] == start["open_fds"],
        "rss_growth_after_first_epoch_mb": round(epochs[-1]["rss_mb"] - after_first["rss_mb"], 1),
        "batch_buffers_mb": round(buffers_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=cpu_count())
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--break-p", type=float, default=0.5,
                   help="chance that an epoch stops at a random batch")
    p.add_argument("--new-loader-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    cache = cache_for(imagenet_like(args.images))
    print(f"soak: {args.epochs} epochs over {len(cache)} images, {args.threads} threads, "
          f"batch {args.batch_size}, break chance {args.break_p}")
    res = soak(cache, args)
    s, a, e = res["start"], res["after_first_epoch"], res["end"]
    print(f"\n{'':24}{'start':>10}{'after epoch 1':>15}{'end':>10}")
    for key, label in [("rss_mb", "RSS (MB)"), ("hwm_mb", "peak RSS (MB)"),
                       ("anon_mb", "anonymous (MB)"), ("python_threads", "Python threads"),
                       ("threads", "OS threads"),
                       ("open_fds", "open descriptors"),
                       ("open_regular_files", "open regular files")]:
        print(f"{label:24}{s[key]:>10}{a[key]:>15}{e[key]:>10}")
    print(f"\n{res['images']:,} images in {res['seconds']} s, {res['early_breaks']} early "
          f"breaks; threads back to start: {res['threads_back_to_start']}; open files back "
          f"to start: {res['open_files_back_to_start']}; RSS growth after epoch 1: "
          f"{res['rss_growth_after_first_epoch_mb']} MB (batch buffers: "
          f"{res['batch_buffers_mb']} MB)")
    write_results(args.json, res)
    return 0 if res["threads_back_to_start"] and res["open_files_back_to_start"] else 1


if __name__ == "__main__":
    sys.exit(main())
