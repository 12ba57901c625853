"""Benchmark: the native decode kernel's goals — GIL per image, YUV420 vs JPEG, baselines.

On the ImageNet-like corpus (``_corpus.py``: ~500x375 JPEGs of ~100 KB) and its cache
(JPEG and the derived YUV 4:2:0 format), RandomResizedCrop 224, batch 256, T threads:

1. **GIL held per image** (goal <= 5 us, all threads together): a child process runs the
   loader; once it is warm, ``py-spy record --gil --threads -f raw -r 200`` attaches to
   it for the timed epochs. py-spy records a sample only for the thread holding the GIL,
   so GIL seconds = samples / sampling rate, divided by the images delivered meanwhile.
   On a busy machine py-spy falls behind the rate asked for, so a second py-spy
   (``--idle``) counts the instants actually sampled and that rate is used (both figures
   are reported). The hottest GIL-holding frames are listed. JPEG and YUV420.
   Measured twice: with ``--nonblocking`` (py-spy reads the process while it runs: the
   goal's figure) and in py-spy's default blocking mode, which stops every thread for
   each sample. The stops perturb what they measure: on this 2-core machine they
   multiply the GIL figure several times over (the threads' wake-ups and GIL hand-offs
   pile up behind them). A third figure does not depend on sampling at all: every
   thread's CPU time outside the kernel (``python_cpu_us_per_image``; the kernel counts
   its own GIL-free CPU time per thread), which is the CPU time spent holding the GIL.
2. **Throughput**, in alternating rounds (every system measured once per round, so a
   burst of load from another process does not decide a ratio): slipstream JPEG RRC,
   slipstream YUV420 RRC, a bare **PyTurboJPEG 1.x + cv2** loop on the same T threads
   (decode each whole image with ``TurboJPEG.decode`` into RGB, crop the planned box,
   ``cv2.resize`` with ``INTER_LINEAR``, the fastest plain resize, not anti-aliased;
   bytes from the same memory-mapped cache), and
   **torch DataLoader + PIL** (``bench_loader.bench_torch``: T workers, what
   torchvision's RandomResizedCrop does, in Pillow). Reported: the median of each
   system's rounds, min-max spread, and the median of the per-round ratios.

    python benchmarks/bench_kernel.py [--threads 2] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _corpus import CACHE_DIR, imagenet_like, write_results  # noqa: E402

CROP = 224
BATCH = 256
SEED = 0
PYSPY_RATE = 200


def log(msg: str) -> None:
    print(msg, flush=True)


def dataset_and_cache(images: int) -> tuple[Any, Any, Path]:
    from slipstream import SlipstreamDataset

    root = imagenet_like(images)
    dataset = SlipstreamDataset(root, cache_dir=CACHE_DIR)
    return dataset, dataset.build_cache("yuv420", progress=False), root


def make_loader(cache: Any, fmt: str, threads: int) -> Any:
    from slipstream import DecodeRandomResizedCrop, SlipstreamLoader

    return SlipstreamLoader(cache, batch_size=BATCH, seed=SEED, image_format=fmt,
                            num_threads=threads, progress=False,
                            pipelines={"image": [DecodeRandomResizedCrop(CROP)]})


def run_for(epoch: Any, seconds: float) -> float:
    """Images/s of whole epochs (``epoch()`` returns its image count) over >= seconds."""
    n, t0 = 0, time.perf_counter()
    while True:
        n += epoch()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


# -- 1. GIL per image ------------------------------------------------------------------------
def python_cpu_seconds() -> float:
    """CPU seconds this process's threads spent outside the decode kernel: the consumer's
    and the decode threads' (less their time in the kernel, which releases the GIL). What
    runs Python holds the GIL, so this is the GIL's CPU time, whatever else the machine
    runs (py-spy's wall-clock figure also counts a GIL holder descheduled)."""
    from slipstream.decode.kernel import native_seconds

    total = 0.0
    for t in threading.enumerate():
        if t is threading.main_thread() or t.name.startswith("slipstream-decode"):
            assert t.ident is not None
            total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return total - native_seconds()


def quiet(loader: Any) -> None:
    """Wait until the loader's decode threads have nothing queued or running."""
    pool = loader._pool
    while pool is not None and not pool.idle():
        time.sleep(0.001)


def gil_child(fmt: str, threads: int, images: int, seconds: float) -> None:
    """Run in the child: warm up, say READY, wait for GO, run epochs for ``seconds``,
    print the image count, wait (without the GIL) to be told to exit."""
    _, cache, _ = dataset_and_cache(images)
    loader = make_loader(cache, fmt, threads)
    for _ in loader:
        pass
    print("READY", flush=True)
    sys.stdin.readline()
    # The kernel adds a slice's time to its counter when the slice ends: CPU clocks are
    # read with no slice running (the next epoch's first batches, decoding ahead, done).
    quiet(loader)
    n, t0, cpu0, py0 = 0, time.perf_counter(), time.thread_time(), python_cpu_seconds()
    while time.perf_counter() - t0 < seconds:
        # the consumer only counts (a list's len): the loader's own GIL is what is measured
        n += sum(len(b["path"]) for b in loader)
    elapsed = time.perf_counter() - t0
    quiet(loader)
    cpu, py = time.thread_time() - cpu0, python_cpu_seconds() - py0
    print(f"IMAGES {n} {elapsed:.4f} {cpu:.4f} {py:.4f}", flush=True)
    sys.stdin.readline()


def measure_gil(fmt: str, args: argparse.Namespace, blocking: bool) -> dict[str, Any]:
    """GIL seconds per image under py-spy; ``blocking``: py-spy stops the process for
    every sample (its default), else it reads it running (``--nonblocking``)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(pyspy):
        return {"available": False, "why": "py-spy is not installed (the dev extra has it)"}
    child = subprocess.Popen(
        [sys.executable, __file__, "--gil-child", fmt, "--threads", str(args.threads),
         "--images", str(args.images), "--gil-seconds", str(args.gil_seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "gil.txt"
        every = Path(tmp) / "all.txt"
        try:
            if child.stdout.readline().strip() != "READY":
                raise RuntimeError("the GIL child did not start")
            # A second py-spy records every thread at every sampling instant (--idle): on a
            # busy machine py-spy falls behind its nominal rate, and the instants it
            # managed, not the nominal rate, turn GIL samples into seconds.
            spies = [subprocess.Popen(
                [pyspy, "record", *flags, "--threads", "-f", "raw", "-r", str(PYSPY_RATE),
                 "--pid", str(child.pid), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for flags, out in (
                    (["--gil"] + ([] if blocking else ["--nonblocking"]), raw),
                    (["--idle", "--nonblocking"], every))]
            time.sleep(1.0)  # py-spy attached
            started = time.perf_counter()
            child.stdin.write("GO\n")
            child.stdin.flush()
            _, n, elapsed, main_cpu, python_cpu = child.stdout.readline().split()
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            err = "".join(spy.communicate(timeout=60)[1] for spy in spies)
            recorded = time.perf_counter() - started + 1.0  # both spies ran this long
            child.stdin.write("EXIT\n")
            child.stdin.flush()
            child.wait(timeout=60)
            samples = _raw_samples(raw)
            instants = _instants(_raw_samples(every))
        finally:
            if child.poll() is None:
                child.kill()
    if not samples:
        return {"available": False, "why": f"py-spy recorded nothing: {err.strip()[-300:]}"}
    images, seconds = int(n), float(elapsed)
    total = sum(samples.values())
    rate = instants / recorded if instants else float(PYSPY_RATE)
    gil_s = total / rate
    leaves: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    for stack, count in samples.items():
        frames = stack.split(";")
        by_thread[frames[0]] += count
        leaves[frames[-1]] += count
    return {"available": True, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "gil_samples": total,
            "gil_seconds": round(gil_s, 4), "gil_fraction_of_wall": round(gil_s / seconds, 4),
            "gil_us_per_image": round(gil_s / images * 1e6, 2),
            "py_spy_mode": "blocking" if blocking else "nonblocking",
            # a floor the GIL figure cannot go under: the consumer's CPU time (it runs
            # Python, holding the GIL, save for its few system calls)
            "main_thread_cpu_us_per_image": round(float(main_cpu) / images * 1e6, 2),
            # every thread's CPU time outside the kernel: the GIL's CPU time
            "python_cpu_us_per_image": round(float(python_cpu) / images * 1e6, 2),
            "sampling_rate": {"asked": PYSPY_RATE, "achieved": round(rate, 1)},
            "gil_us_per_image_at_asked_rate": round(total / PYSPY_RATE / images * 1e6, 2),
            "hottest": [(f, c) for f, c in leaves.most_common(6)],
            "by_thread": dict(by_thread)}


def _instants(every: Counter[str]) -> int:
    """How many times py-spy sampled: with ``--idle`` each instant records every thread
    once, so the busiest thread's count (the main thread's, which lives throughout)."""
    by_thread: Counter[str] = Counter()
    for stack, count in every.items():
        by_thread[stack.split(";")[0]] += count
    return max(by_thread.values(), default=0)


def _raw_samples(path: Path) -> Counter[str]:
    """py-spy's raw (collapsed-stack) output: ``stack count`` per line. Samples while the
    process was starting or stopping py-spy itself are few; idle threads are excluded."""
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out[stack] += int(count)
    return out


# -- 2. throughput -----------------------------------------------------------------------------
class BareTurboLoop:
    """T plain threads: PyTurboJPEG 1.x decode + crop + cv2.resize, per sample."""

    def __init__(self, cache: Any, threads: int) -> None:
        import cv2
        from turbojpeg import TJPF_RGB, TurboJPEG

        from slipstream.decoders import DecodeRandomResizedCrop, ImageColumnView
        from slipstream.transforms.base import BatchContext

        self.cv2, self.pf = cv2, TJPF_RGB
        self.col = cache.column("image")
        self.view = ImageColumnView(self.col.heights, self.col.widths, self.col.sizes)
        self.decoder, self.ctx = DecodeRandomResizedCrop(CROP), BatchContext
        self.jpegs = [TurboJPEG() for _ in range(threads)]
        self.outs = [np.zeros((BATCH, CROP, CROP, 3), np.uint8) for _ in range(threads)]
        self.threads = threads
        self.epoch_no = 0

    def _work(self, t: int, idx: np.ndarray, boxes: np.ndarray) -> None:
        jpeg, out, cv2 = self.jpegs[t], self.outs[t], self.cv2
        for k, i in enumerate(idx.tolist()):
            img = jpeg.decode(self.col.view(i), pixel_format=self.pf)
            top, left, h, w = (int(v) for v in boxes[k])
            cv2.resize(img[top:top + h, left:left + w], (CROP, CROP), dst=out[k % BATCH],
                       interpolation=cv2.INTER_LINEAR)

    def epoch(self) -> int:
        n = len(self.col)
        order = np.random.default_rng(self.epoch_no).permutation(n)
        self.epoch_no += 1
        boxes = self.decoder.plan(self.ctx(SEED, self.epoch_no, order), self.view).boxes
        parts = np.array_split(np.arange(n), self.threads)
        ts = [threading.Thread(target=self._work, args=(t, order[p], boxes[p]))
              for t, p in enumerate(parts)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        return n


def throughput(dataset: Any, cache: Any, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    import bench_loader

    jpeg_loader = make_loader(cache, "jpeg", args.threads)
    yuv_loader = make_loader(cache, "yuv420", args.threads)
    bare = BareTurboLoop(cache, args.threads)

    def loader_epoch(loader: Any) -> Any:
        return lambda: sum(len(b["label"]) for b in loader)

    systems = {"slipstream_jpeg": loader_epoch(jpeg_loader),
               "slipstream_yuv420": loader_epoch(yuv_loader), "pyturbojpeg_cv2": bare.epoch}
    for run in systems.values():  # warm-up
        run()
    torch_args = argparse.Namespace(threads=args.threads, batch_size=BATCH, epochs=1,
                                    min_seconds=args.seconds)
    runs: dict[str, list[float]] = {k: [] for k in [*systems, "torch_pil"]}
    for r in range(args.rounds):
        for name, run in systems.items():
            runs[name].append(round(run_for(run, args.seconds), 1))
        if not args.no_torch:
            runs["torch_pil"].append(bench_loader.bench_torch(root, "rrc", torch_args)
                                     ["images_per_s"])
        log(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items() if v))
    jpeg_loader.close()
    yuv_loader.close()

    def summary(values: list[float]) -> dict[str, Any]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "runs": values}

    def ratio(a: str, b: str) -> dict[str, Any]:
        per_round = [round(x / y, 3) for x, y in zip(runs[a], runs[b])]
        return {"median": statistics.median(per_round), "min": min(per_round),
                "max": max(per_round), "per_round": per_round}

    out: dict[str, Any] = {"images_per_s": {k: summary(v) for k, v in runs.items() if v}}
    out["ratios"] = {"yuv420_over_jpeg": ratio("slipstream_yuv420", "slipstream_jpeg"),
                     "jpeg_over_pyturbojpeg_cv2": ratio("slipstream_jpeg", "pyturbojpeg_cv2")}
    if runs["torch_pil"]:
        out["ratios"]["jpeg_over_torch_pil"] = ratio("slipstream_jpeg", "torch_pil")
    out["yuv420_per_core"] = round(out["images_per_s"]["slipstream_yuv420"]["median"]
                                   / args.threads, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="per system and round")
    p.add_argument("--gil-seconds", type=float, default=15.0)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-gil", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--gil-child", choices=["jpeg", "yuv420"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gil_child:
        gil_child(args.gil_child, args.threads, args.images, args.gil_seconds)
        return 0
    dataset, cache, root = dataset_and_cache(args.images)
    log(f"{len(cache)} images, RRC {CROP}, batch {BATCH}, {args.threads} threads "
        f"(the machine may be shared: see the spread)")
    result: dict[str, Any] = {"benchmark": "kernel", "threads": args.threads,
                              "images": len(cache), "gil": {}}
    if not args.no_gil:
        result["gil_blocking"] = {}
        for fmt in ("jpeg", "yuv420"):
            for blocking, key in ((False, "gil"), (True, "gil_blocking")):
                g = result[key][fmt] = measure_gil(fmt, args, blocking)
                if g["available"]:
                    log(f"  GIL {fmt} (py-spy {g['py_spy_mode']}): "
                        f"{g['gil_us_per_image']:.1f} us/image (sampled at "
                        f"{g['sampling_rate']['achieved']:.0f}/s; Python CPU, all threads "
                        f"{g['python_cpu_us_per_image']:.1f} us/image; "
                        f"{g['images_per_s']:,.0f} images/s under py-spy); "
                        f"hottest {g['hottest'][:3]}")
                else:
                    log(f"  GIL {fmt}: not measured ({g['why']})")
    if args.rounds < 1:
        write_results(args.json, result)
        return 0
    result["throughput"] = t = throughput(dataset, cache, root, args)
    r = t["ratios"]
    log(f"YUV420/JPEG {r['yuv420_over_jpeg']['median']:.2f}x (goal >= 5), YUV420 "
        f"{t['yuv420_per_core']:,.0f} images/s per core (goal >= 5,000); JPEG / PyTurboJPEG+cv2 "
        f"{r['jpeg_over_pyturbojpeg_cv2']['median']:.2f}x (goal >= 1.15)"
        + (f"; JPEG / torch+PIL {r['jpeg_over_torch_pil']['median']:.2f}x (goal >= 2.3)"
           if "jpeg_over_torch_pil" in r else ""))
    write_results(args.json, result)
    dataset.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
