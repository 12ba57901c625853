"""Benchmark: loader throughput — slipstream against its own ceiling and against PyTorch.

On a generated ImageNet-like corpus (2,000 JPEGs of about 500×375 and 100 KB; see
``_corpus.py``) and its slipstream cache, one run measures images/s for four modes:

====================  =============================================================
raw I/O               the stored bytes, gathered into one buffer per batch
decode only           the full image, decoded
center crop 224       ``Resize(256)`` + ``CenterCrop(224)``
RRC 224               ``RandomResizedCrop(224)``
====================  =============================================================

for three systems:

- **slipstream**: ``SlipstreamLoader(cache, batch_size=256, num_threads=T, shuffle=True)``
  with the mode's decoder (``ReadBytes``, ``DecodeOnly``, ``DecodeCenterCrop``,
  ``DecodeRandomResizedCrop``);
- **bare loop**: the ceiling — T plain threads, each taking a share of the epoch's
  indices and handing it to the native kernel batch by batch with the boxes the decoder
  plans (``decode_slice``), no loader machinery;
- **torch+PIL**: ``torch.utils.data.DataLoader(num_workers=T, batch_size=256)`` over a
  dataset that reads each JPEG file and does with Pillow what torchvision's transforms
  do (``RandomResizedCrop`` parameters re-implemented here; torchvision is not used).

It also measures: raw I/O in MB/s against a plain numpy copy of the same per-sample
byte ranges into a batch buffer; fused decode+crop against "decode everything, then
crop" for RRC, on the ImageNet-like corpus and on camera-sized photos (2048×1536), where
DCT scaling applies; the latency from ``iter()`` to the first batch with the cache
already built; and the resident memory over 10 epochs of RRC (in a child process, so
that the other measurements do not raise its high-water mark).

Every measurement is warmed up by a short pass, then timed over at least ``--epochs``
epochs (3) and at least ``--min-seconds`` seconds; images/s comes from the median epoch,
so that a burst of load from another process during one epoch does not skew it. Data
is generated under ``REPO/.bench/`` once and reused (the first run spends about a minute
generating it).

    python benchmarks/bench_loader.py                              # the full run
    python benchmarks/bench_loader.py --quick                      # smoke run
    python benchmarks/bench_loader.py --json out.json --plot out.png
    python benchmarks/bench_loader.py --device cuda --quick        # with a GPU transfer
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _corpus import (
    CACHE_DIR,
    cache_for,
    cpu_count,
    image_files,
    imagenet_like,
    large_photos,
    tree_size,
    write_results,
)

SEED = 0
CROP = 224
MODES = ("raw", "decode", "center", "rrc")
MODE_NAMES = {
    "raw": "raw I/O",
    "decode": "decode only",
    "center": "center crop 224",
    "rrc": "random resized crop 224",
}
SYSTEMS = ("slipstream", "bare", "torch")
SYSTEM_NAMES = {"slipstream": "slipstream", "bare": "bare loop", "torch": "torch+PIL"}
TARGETS = {
    "rrc_slipstream_over_bare": 0.95,
    "rrc_slipstream_over_torch": 2.0,
    "raw_over_memcpy": 0.5,
    "first_batch_s": 1.0,
}


def log(msg: str) -> None:
    print(msg, flush=True)


# -- arguments ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=cpu_count(),
                   help=f"decode threads / DataLoader workers (default: the cores, "
                        f"{cpu_count()})")
    p.add_argument("--epochs", type=int, default=None,
                   help="timed epochs per measurement, at least (default 3; 1 with --quick); "
                        "images/s is taken from the median epoch")
    p.add_argument("--images", type=int, default=None,
                   help="ImageNet-like images, over 20 classes (default 2000; 400 with --quick)")
    p.add_argument("--large-images", type=int, default=None,
                   help="2048x1536 photos for the fused-decode comparison (default 200; 20 "
                        "with --quick)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="time each measurement for at least this long, adding epochs "
                        "(default 1.0; 0 with --quick)")
    p.add_argument("--rrc-rounds", type=int, default=None,
                   help="extra alternating slipstream / torch+PIL RRC runs after the main "
                        "table, so the slip/torch ratio is a median over rounds that share "
                        "the machine's state (default 4; 0 with --quick)")
    p.add_argument("--rss-epochs", type=int, default=None,
                   help="epochs of RRC for the memory measurement (default 10; 3 with --quick)")
    p.add_argument("--device", default=None,
                   help="move crop batches to this device (e.g. cuda): slipstream gets "
                        "ToTorchImage(device) and device=, torch+PIL pins and copies; "
                        "throughput then includes the transfer")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small corpus, 1 epoch, no minimum time")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results as JSON to PATH")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH",
                   help="also draw a bar chart of the results into PATH (PNG, matplotlib)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"epochs": (3, 1), "images": (2000, 400), "large_images": (200, 20),
                "min_seconds": (1.0, 0.0), "rss_epochs": (10, 3), "rrc_rounds": (4, 0)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.threads < 1 or args.epochs < 1 or args.batch_size < 1 or args.rss_epochs < 1:
        p.error("--threads, --epochs, --batch-size and --rss-epochs must be positive")
    if args.images < 20 or args.large_images < 10:
        p.error("--images must be at least 20 and --large-images at least 10")
    if args.device is not None:
        import torch

        dev = torch.device(args.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            p.error(f"--device {args.device}: torch sees no CUDA device")
    return args


# -- measuring --------------------------------------------------------------------------------
def timed_epochs(run_epoch: Callable[[int], int], epochs: int, min_seconds: float,
                 first_epoch: int = 1) -> dict[str, Any]:
    """Run epochs ``first_epoch, first_epoch + 1, ...`` until at least ``epochs`` of them
    ran and ``min_seconds`` passed; ``run_epoch(e)`` returns the images it delivered."""
    times: list[float] = []
    images = 0
    t_start = time.perf_counter()
    e = first_epoch
    while len(times) < epochs or time.perf_counter() - t_start < min_seconds:
        t0 = time.perf_counter()
        images += run_epoch(e)
        times.append(time.perf_counter() - t0)
        e += 1
    total = sum(times)
    # every epoch delivers the same images: the median epoch is robust to a burst of
    # load from another process during one of them; the mean is kept beside it
    return {"epochs": len(times), "images": images, "seconds": round(total, 4),
            "epoch_seconds": [round(t, 4) for t in times],
            "images_per_s": round(images / len(times) / statistics.median(times), 1),
            "mean_images_per_s": round(images / total, 1)}


def add_mb(result: dict[str, Any], bytes_per_epoch: int) -> dict[str, Any]:
    median = statistics.median(result["epoch_seconds"])
    result["mb_per_s"] = round(bytes_per_epoch / 1e6 / median, 1)
    return result


def make_decoder(mode: str) -> Any:
    from slipstream import DecodeCenterCrop, DecodeOnly, DecodeRandomResizedCrop, ReadBytes

    if mode == "raw":
        return ReadBytes()
    if mode == "decode":
        return DecodeOnly()
    if mode == "center":
        return DecodeCenterCrop(CROP)
    if mode == "rrc":
        return DecodeRandomResizedCrop(CROP)
    raise ValueError(mode)


def sync(device: Any) -> None:
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# -- (a) slipstream ---------------------------------------------------------------------------
def make_loader(cache_or_dataset: Any, mode: str, args: argparse.Namespace,
                device: Any = None) -> Any:
    from slipstream import SlipstreamLoader, ToTorchImage

    stages = [make_decoder(mode)]
    on_device = device is not None and mode in ("center", "rrc")
    if on_device:
        stages.append(ToTorchImage(device))
    return SlipstreamLoader(cache_or_dataset, batch_size=args.batch_size,
                            num_threads=args.threads, pipelines={"image": stages},
                            shuffle=True, seed=SEED, device=device if on_device else None,
                            progress=False)


def bench_slipstream(cache: Any, mode: str, args: argparse.Namespace,
                     device: Any = None) -> dict[str, Any]:
    loader = make_loader(cache, mode, args, device)
    # warm-up (epoch 0): a few batches; a whole epoch for raw I/O, which is cheap and
    # otherwise would pay the first touch of every page of the memory map in the timing
    it = iter(loader)
    for _ in range(len(loader) if mode == "raw" else min(2, len(loader))):
        next(it)
    it.close()
    sync(device)

    def run_epoch(epoch: int) -> int:
        loader.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += len(batch["label"])
        sync(device)
        return n

    return timed_epochs(run_epoch, args.epochs, args.min_seconds)


# -- (b) the bare loop, and (d) decode everything then crop ----------------------------------
def epoch_order(n: int, epoch: int) -> np.ndarray:
    """The loader's shuffled order for ``epoch`` (the same permutation EpochSampler makes)."""
    return np.random.default_rng([SEED, epoch]).permutation(n).astype(np.int64)


def _run_threads(target: Callable[[int, np.ndarray], None], shares: list[np.ndarray]) -> None:
    errors: list[BaseException] = []

    def guarded(t: int, share: np.ndarray) -> None:
        try:
            target(t, share)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t, s)) for t, s in enumerate(shares)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def bench_bare(cache: Any, mode: str, args: argparse.Namespace,
               variant: str = "fused") -> dict[str, Any]:
    """T plain threads doing the per-sample work, nothing else.

    ``variant="fused"``: the kernel's ``decode_slice`` over each batch-sized piece of the
    thread's share (region decode at the planned DCT scale + resize, GIL released);
    ``"decode_all"``: a full-size TurboJPEG decode, the crop as a slice, the kernel's
    resize.
    """
    from slipstream.cache import Codec
    from slipstream.decode.pixels import ThreadState, decode_image, resize_into
    from slipstream.decoders import BatchSamples, ImageColumnView
    from slipstream.transforms.base import BatchContext

    col = cache.column("image")
    heights, widths, codecs, sizes = col.heights, col.widths, col.codecs, col.sizes
    n = len(cache)
    T = args.threads
    B = args.batch_size
    decoder = make_decoder(mode)
    view = ImageColumnView(heights, widths, sizes)
    states = [ThreadState() for _ in range(T)]
    if variant == "decode_all" and not (codecs == Codec.JPEG).all():
        raise RuntimeError("decode_all needs an all-JPEG cache")
    crops = mode in ("center", "rrc")
    # each thread's output, allocated once: a batch-sized ring it writes round and round
    if mode == "raw":
        outs: list[Any] = [np.zeros(B * int(sizes.max()), np.uint8) for _ in range(T)]
    elif mode == "decode":  # the decoded copies of the last B samples stay alive
        outs = [[None] * B for _ in range(T)]
    else:
        outs = [np.zeros((B, CROP, CROP, 3), np.uint8) for _ in range(T)]
    for o in outs:
        if isinstance(o, np.ndarray):
            o.fill(1)  # fault the pages in now, not in the timed loop

    def work(t: int, idx: np.ndarray, boxes: np.ndarray | None) -> None:
        state, out = states[t], outs[t]
        if mode == "raw":
            off = 0
            for i in idx.tolist():
                data = col.view(i)
                end = off + len(data)
                if end > len(out):
                    off, end = 0, len(data)
                out[off:end] = data
                off = end
        elif mode == "decode":
            for k, i in enumerate(idx.tolist()):
                region = decode_image(state, col.view(i), int(codecs[i]), int(heights[i]),
                                      int(widths[i]))
                out[k % B] = np.array(region)  # its own copy, as DecodeOnly hands out
        elif variant == "fused":
            for lo in range(0, len(idx), B):
                piece = idx[lo : lo + B]
                failed = decoder.decode_slice(0, len(piece), BatchSamples.gather(col, piece),
                                              boxes[lo : lo + B], (None, out))
                if failed:
                    raise failed[0][1]
        else:  # decode everything, then crop
            for k, i in enumerate(idx.tolist()):
                img = state.scratch(int(heights[i]), int(widths[i]))
                state.turbo.decode_rgb(col.view(i), img)
                top, left, h, w = (int(v) for v in boxes[k])
                resize_into(img[top:top + h, left:left + w], out[k % B])

    def run_epoch(epoch: int) -> int:
        order = epoch_order(n, epoch)
        boxes = decoder.plan(BatchContext(SEED, epoch, order), view) if crops else None
        parts = np.array_split(np.arange(n), T)
        _run_threads(lambda t, part: work(t, order[part], _take(boxes, part)), parts)
        return n

    # warm-up: a short pass (a few hundred samples; every sample for raw I/O)
    warm = epoch_order(n, 0)[: n if mode == "raw" else min(n, 2 * B)]
    boxes0 = decoder.plan(BatchContext(SEED, 0, warm), view) if crops else None
    _run_threads(lambda t, part: work(t, warm[part], _take(boxes0, part)),
                 np.array_split(np.arange(len(warm)), T))
    result = timed_epochs(run_epoch, args.epochs, args.min_seconds)
    if crops:
        result["dct_scaled_fraction"] = dct_fraction(decoder, view, n, result["epochs"])
    return result


def _take(plan: Any, part: Any) -> Any:
    """The rows ``part`` of a crop plan (boxes and DCT scales), or None."""
    if plan is None:
        return None
    from slipstream.decode.geometry import CropPlan

    return CropPlan(np.ascontiguousarray(plan.boxes[part]), plan.denoms[part])


def dct_fraction(decoder: Any, view: Any, n: int, epochs: int) -> float:
    """How often the fused path decoded at a reduced scale (1/2, 1/4, 1/8) in the timed epochs."""
    from slipstream.decode.pixels import dct_denominator
    from slipstream.transforms.base import BatchContext

    scaled = total = 0
    for epoch in range(1, epochs + 1):
        boxes = decoder.plan(BatchContext(SEED, epoch, epoch_order(n, epoch)), view)
        scaled += sum(dct_denominator(int(h), int(w), CROP, CROP) > 1 for _, _, h, w in boxes)
        total += len(boxes)
    return round(scaled / total, 4)


# -- raw I/O reference: a plain numpy copy -----------------------------------------------------
def bench_memcpy(cache: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One thread copying each sample's bytes (the same byte ranges, in the same batches)
    into a batch buffer with numpy; and, for scale, one contiguous copy of as many bytes."""
    col = cache.column("image")
    n = len(cache)
    B = args.batch_size
    srcs = [col.view(i) for i in range(n)]  # zero-copy views of the memory map
    sizes = [len(s) for s in srcs]
    buf = np.empty(B * max(sizes), np.uint8)
    for s in srcs:  # touch every page once (the loader's warm-up does the same)
        buf[: len(s)] = s

    def run_epoch(epoch: int) -> int:
        order = epoch_order(n, epoch).tolist()
        for b in range(0, n, B):
            off = 0
            for i in order[b:b + B]:
                end = off + sizes[i]
                buf[off:end] = srcs[i]
                off = end
        return n

    per_sample = add_mb(timed_epochs(run_epoch, args.epochs, args.min_seconds),
                        sum(sizes))
    block_src = np.concatenate(srcs)
    block_dst = np.empty_like(block_src)
    np.copyto(block_dst, block_src)

    def run_block(epoch: int) -> int:
        np.copyto(block_dst, block_src)
        return n

    one_block = add_mb(timed_epochs(run_block, args.epochs, args.min_seconds), sum(sizes))
    return {"per_sample_copy": per_sample, "one_block_copy": one_block}


# -- (c) torch DataLoader + PIL ------------------------------------------------------------------
def rrc_params(width: int, height: int, rng: random.Random,
               scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: ``(top, left, height, width)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = rng.randint(0, height - h)
            j = rng.randint(0, width - w)
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _pil_to_tensor(img: Any) -> Any:
    """torchvision's ``pil_to_tensor``: ``[C, H, W] uint8`` (a permuted view)."""
    import torch

    arr = np.array(img, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1)


class PILImageFolder:
    """A map-style dataset doing with Pillow what torchvision's ImageFolder + transforms do."""

    def __init__(self, paths: list[str], labels: list[int], mode: str) -> None:
        self.paths = paths
        self.labels = labels
        self.mode = mode
        self.rng = random.Random()  # DataLoader seeds `random` per worker; reseeded below

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.paths[index], self.labels[index]
        if self.mode == "raw":
            with open(path, "rb") as f:
                return f.read(), label
        with open(path, "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        if self.mode == "center":  # Resize(256) (shorter side) + CenterCrop(224)
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = 256, int(256 * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
            img = img.resize(size, Image.BILINEAR)
            w, h = img.size
            top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
            img = img.crop((left, top, left + CROP, top + CROP))
        elif self.mode == "rrc":  # RandomResizedCrop(224)
            top, left, h, w = rrc_params(img.width, img.height, self.rng)
            img = img.crop((left, top, left + w, top + h)).resize((CROP, CROP), Image.BILINEAR)
        return _pil_to_tensor(img), label


def _worker_init(worker_id: int) -> None:
    import torch

    info = torch.utils.data.get_worker_info()
    info.dataset.rng.seed(info.seed)


def collate_bytes(items: list[tuple[bytes, int]]) -> tuple[Any, Any, Any]:
    """Pack a batch of encoded files into one uint8 tensor + offsets (as ReadBytes does)."""
    import torch

    sizes = [len(b) for b, _ in items]
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = torch.empty(int(offsets[-1]), dtype=torch.uint8)
    data.numpy()[:] = np.frombuffer(b"".join(b for b, _ in items), np.uint8)
    return data, torch.from_numpy(offsets), torch.tensor([lab for _, lab in items])


def collate_list(items: list[tuple[Any, int]]) -> tuple[list[Any], Any]:
    """Decoded images differ in size: a list of tensors, as DecodeOnly returns."""
    import torch

    return [img for img, _ in items], torch.tensor([lab for _, lab in items])


def bench_torch(root: Path, mode: str, args: argparse.Namespace,
                device: Any = None) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, default_collate

    paths, labels = image_files(root)
    collate = {"raw": collate_bytes, "decode": collate_list}.get(mode, default_collate)
    on_device = device is not None and mode in ("center", "rrc")
    dl = DataLoader(PILImageFolder(paths, labels, mode), batch_size=args.batch_size,
                    shuffle=True, num_workers=args.threads, collate_fn=collate,
                    persistent_workers=True, worker_init_fn=_worker_init,
                    pin_memory=on_device and torch.device(device).type == "cuda",
                    generator=torch.Generator().manual_seed(SEED))
    try:
        # warm-up: start the workers and run one whole epoch. (A partial pass would leave
        # batches in flight that the next iter() waits for and throws away, slowing the
        # first timed epoch by about prefetch_factor x num_workers batches.)
        for _ in dl:
            pass

        def run_epoch(epoch: int) -> int:
            n = 0
            for batch in dl:
                if on_device:
                    batch[0].to(device, non_blocking=True)
                n += len(batch[-1])
            sync(device if on_device else None)
            return n

        return timed_epochs(run_epoch, args.epochs, args.min_seconds)
    finally:
        shutdown = getattr(getattr(dl, "_iterator", None), "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def rrc_rounds(cache: Any, root: Path, args: argparse.Namespace, device: Any,
               results: dict[str, Any]) -> dict[str, Any]:
    """slipstream / torch+PIL for RRC, measured in alternating pairs.

    On a shared machine the torch baseline moves most from run to run; pairing each
    slipstream run with a torch run right after it, and taking the median ratio over
    the main table's pair plus ``--rrc-rounds`` more, keeps one slow or fast spell from
    deciding the comparison.
    """
    pairs = [(results["slipstream"]["rrc"]["images_per_s"],
              results["torch"]["rrc"]["images_per_s"])]
    for k in range(args.rrc_rounds):
        slip = bench_slipstream(cache, "rrc", args, device)["images_per_s"]
        torch_ = bench_torch(root, "rrc", args, device)["images_per_s"]
        pairs.append((slip, torch_))
        log(f"  RRC round {k + 1}: slipstream {slip:,.0f}, torch+PIL {torch_:,.0f} images/s "
            f"= {slip / torch_:.2f}x")
    ratios = [round(a / b, 3) for a, b in pairs]
    return {"pairs": pairs, "ratios": ratios,
            "median_ratio": round(statistics.median(ratios), 3),
            "min_ratio": min(ratios), "max_ratio": max(ratios)}


def partial_vs_whole(cache: Any, args: argparse.Namespace, device: Any,
                     rounds: int = 2) -> dict[str, Any]:
    """slipstream RRC decoding only each crop's region (the kernel's libjpeg region decode)
    vs the whole image, same library, alternating runs (``pixels.partial_decode`` switched for each), the
    median of ``rounds`` of each: the machine's speed drifts over a long run, so neither
    side may come from another part of it."""
    from slipstream.decode import pixels

    runs: dict[bool, list[float]] = {True: [], False: []}
    saved = pixels.partial_decode
    try:
        for _ in range(rounds):
            for region in (True, False):
                pixels.partial_decode = region
                runs[region].append(bench_slipstream(cache, "rrc", args, device)["images_per_s"])
    finally:
        pixels.partial_decode = saved
    partial, whole = statistics.median(runs[True]), statistics.median(runs[False])
    log(f"  RRC decoding the crop's region {partial:,.0f} vs the whole image {whole:,.0f} "
        f"images/s = {partial / whole:.2f}x")
    return {"available": True, "region_images_per_s": partial, "whole_images_per_s": whole,
            "region_over_whole": round(partial / whole, 3), "runs": runs}


# -- first batch latency, and memory ---------------------------------------------------------
def bench_first_batch(root: Path, args: argparse.Namespace, trials: int = 3) -> dict[str, Any]:
    """Seconds from ``iter(loader)`` to its first RRC batch, the cache built already.

    ``fresh_loader``: a new ``SlipstreamDataset`` + ``SlipstreamLoader`` each trial, so
    ``iter()`` includes finding and opening the cache (the dataset's constructor, which
    lists the source, is timed apart as ``open_dataset_s``). ``next_epoch``: ``iter()``
    again on a loader that has run an epoch.
    """
    from slipstream import SlipstreamDataset

    fresh, opens, again = [], [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        ds = SlipstreamDataset(root, cache_dir=CACHE_DIR)
        opens.append(time.perf_counter() - t0)
        loader = make_loader(ds, "rrc", args)
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        fresh.append(time.perf_counter() - t0)
        for _ in it:  # finish the epoch
            pass
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        again.append(time.perf_counter() - t0)
        it.close()
        loader.cache.close()
        ds.close()
    r = lambda xs: [round(x, 4) for x in xs]  # noqa: E731
    return {"fresh_loader_s": r(fresh), "next_epoch_s": r(again), "open_dataset_s": r(opens),
            "fresh_loader_max_s": round(max(fresh), 4),
            "next_epoch_max_s": round(max(again), 4)}


def _status_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def rss_child(args: argparse.Namespace) -> int:
    """(In a child process) RRC for ``--rss-epochs`` epochs; print the memory after each."""
    from slipstream import Cache

    cache = Cache(args.rss_child)
    loader = make_loader(cache, "rrc", args)
    samples = [_status_kb()]
    for _ in range(args.rss_epochs):
        for _batch in loader:
            pass
        samples.append(_status_kb())
    print(json.dumps(samples))
    return 0


def bench_rss(cache: Any, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(cache.path),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--rss-epochs", str(args.rss_epochs)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    samples = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = lambda key: [round(s[key] / 1024, 1) for s in samples[1:]]  # noqa: E731
    hwm, rss, anon = mb("VmHWM"), mb("VmRSS"), mb("RssAnon")
    # flat: from the end of epoch 2 on (epoch 1 maps the cache's pages, fills the batch
    # buffers and each thread's scratch), neither the high-water mark nor the anonymous
    # memory grows by more than max(16 MB, 2 %)
    ref = 1 if len(hwm) >= 3 else 0
    tol = max(16.0, 0.02 * hwm[ref])
    hwm_growth = hwm[-1] - hwm[ref]
    anon_growth = max(anon[ref:]) - anon[ref]
    flat = hwm_growth <= tol and anon_growth <= tol
    bound = 3 * args.batch_size * CROP * CROP * 3 / 2**20  # prefetch x batch x output
    return {"epochs": args.rss_epochs, "before_mb": round(samples[0]["VmRSS"] / 1024, 1),
            "vmhwm_mb": hwm, "vmrss_mb": rss, "rss_anon_mb": anon,
            "rss_file_mb": mb("RssFile"), "flat": flat, "flat_from_epoch": ref + 1,
            "flat_tolerance_mb": round(tol, 1),
            "hwm_growth_mb": round(hwm_growth, 1), "anon_growth_mb": round(anon_growth, 1),
            "hwm_growth_after_epoch1_mb": round(hwm[-1] - hwm[0], 1),
            "batch_buffers_mb": round(bound, 1)}


# -- the report --------------------------------------------------------------------------------
def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    import cv2
    import PIL
    import torch

    import slipstream

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        ram_gb = round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        pass
    turbo = None
    out = _run(["dpkg", "-s", "libturbojpeg0"])
    if out:
        m = re.search(r"^Version:\s*(.+)$", out, re.M)
        turbo = m.group(1).strip() if m else None
    from slipstream.decode import libturbojpeg, pixels

    libturbojpeg.library()
    loaded = {"path": libturbojpeg._lib_path, "partial_decode": pixels.partial_decode_on()}
    return {
        "libturbojpeg_loaded": loaded,
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": cpu_count(), "ram_gb": ram_gb,
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__,
            "libturbojpeg0": turbo, "slipstream": slipstream.__version__,
        },
        "cv2_threads": cv2.getNumThreads(), "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def verdict(value: float, target: float, at_most: bool = False) -> str:
    ok = value <= target if at_most else value >= target
    return "MET" if ok else "NOT met"


def print_report(res: dict[str, Any]) -> None:
    c = res["corpus"]["imagenet_like"]
    log("")
    log(f"ImageNet-like corpus: {c['images']} JPEGs, mean {c['mean_kb']:.1f} KB, "
        f"mean {c['mean_width']:.0f}x{c['mean_height']:.0f}; {res['config']['threads']} "
        f"threads/workers, batch {res['config']['batch_size']}"
        + (f", device {res['config']['device']}" if res["config"]["device"] else ""))
    log("")
    head = f"{'images/s':<26}" + "".join(f"{SYSTEM_NAMES[s]:>12}" for s in SYSTEMS)
    log(head + f"{'slip/bare':>11}{'slip/torch':>12}")
    for mode in MODES:
        row = [res["results"][s][mode]["images_per_s"] for s in SYSTEMS]
        log(f"{MODE_NAMES[mode]:<26}" + "".join(f"{v:>12,.0f}" for v in row)
            + f"{row[0] / row[1]:>11.2f}{row[0] / row[2]:>12.2f}")
    log("")
    raw = res["raw_io"]
    log(f"raw I/O MB/s: slipstream {raw['slipstream_mb_per_s']:,.0f}, bare loop "
        f"{raw['bare_mb_per_s']:,.0f}, torch+PIL {raw['torch_mb_per_s']:,.0f}, numpy "
        f"per-sample copy {raw['numpy_copy_mb_per_s']:,.0f}, one-block memcpy "
        f"{raw['one_block_mb_per_s']:,.0f}")
    log("")
    log("RRC 224, fused decode+crop vs decode everything then crop (bare loops):")
    for name, f in res["fused"].items():
        log(f"  {name:<14} fused {f['fused_images_per_s']:>8,.0f}  decode-all "
            f"{f['decode_all_images_per_s']:>8,.0f}  = {f['fused_over_decode_all']:.2f}x   "
            f"slipstream {f['slipstream_images_per_s']:>8,.0f}   (DCT scaling on "
            f"{100 * f['dct_scaled_fraction']:.0f}% of crops)")
    pd = res["partial_decode"]
    if pd.get("available"):
        log("")
        log(f"RRC 224, slipstream decoding each crop's region (TurboJPEG 3) "
            f"{pd['region_images_per_s']:,.0f} vs the whole image "
            f"{pd['whole_images_per_s']:,.0f} images/s = {pd['region_over_whole']:.2f}x")
    rounds = res["rrc_rounds"]
    log("")
    log(f"RRC slipstream / torch+PIL over {len(rounds['ratios'])} paired runs: "
        f"{', '.join(f'{r:.2f}' for r in rounds['ratios'])} -> median "
        f"{rounds['median_ratio']:.2f}x (min {rounds['min_ratio']:.2f}, max "
        f"{rounds['max_ratio']:.2f})")
    fb = res["first_batch"]
    log("")
    log(f"first batch (RRC, cache built): fresh loader {fb['fresh_loader_s']} s; "
        f"next epoch {fb['next_epoch_s']} s")
    rss = res["rss"]
    log(f"memory over {rss['epochs']} epochs of RRC (MB after each): VmHWM {rss['vmhwm_mb']}")
    log(f"  VmRSS {rss['vmrss_mb']}")
    log(f"  RssAnon {rss['rss_anon_mb']}")
    log(f"  -> {'flat' if rss['flat'] else 'NOT flat'} from epoch {rss['flat_from_epoch']}: "
        f"VmHWM +{rss['hwm_growth_mb']} MB, RssAnon +{rss['anon_growth_mb']} MB (tolerance "
        f"{rss['flat_tolerance_mb']} MB; batch buffers {rss['batch_buffers_mb']} MB)")
    log("")
    log("targets:")
    for t in res["targets"].values():
        log(f"  {t['what']:<52} {t['value']:>8.3f}  target {t['target']:<7} {t['verdict']}")


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"slipstream": "#1f77b4", "bare": "#9ecae1", "torch": "#ff7f0e"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8),
                             gridspec_kw={"width_ratios": [3, 2.2, 2]})
    ax = axes[0]
    modes = ("decode", "center", "rrc")
    x = np.arange(len(modes))
    width = 0.26
    for k, s in enumerate(SYSTEMS):
        vals = [res["results"][s][m]["images_per_s"] for m in modes]
        bars = ax.bar(x + (k - 1) * width, vals, width, label=SYSTEM_NAMES[s], color=colors[s])
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [MODE_NAMES[m] for m in modes], fontsize=8)
    ax.set_ylabel("images/s")
    ax.set_title(f"decode modes, {res['config']['threads']} threads / workers")
    ax.legend(fontsize=8)

    ax = axes[1]
    raw = res["raw_io"]
    names = ["slipstream", "bare loop", "torch+PIL", "numpy\nper-sample", "numpy\none block"]
    vals = [raw["slipstream_mb_per_s"], raw["bare_mb_per_s"], raw["torch_mb_per_s"],
            raw["numpy_copy_mb_per_s"], raw["one_block_mb_per_s"]]
    bars = ax.bar(names, vals, color=[colors["slipstream"], colors["bare"], colors["torch"],
                                      "#aaaaaa", "#cccccc"])
    ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_ylabel("MB/s")
    ax.set_title("raw I/O: bytes gathered into batches")
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[2]
    corpora = list(res["fused"])
    x = np.arange(len(corpora))
    width = 0.26
    series = (("slipstream_images_per_s", "slipstream (fused)", colors["slipstream"]),
              ("fused_images_per_s", "bare loop, fused", colors["bare"]),
              ("decode_all_images_per_s", "bare loop, decode all", "#bbbbbb"))
    for k, (key, label, color) in enumerate(series):
        vals = [res["fused"][c][key] for c in corpora]
        rel = [v / res["fused"][c]["decode_all_images_per_s"]
               for v, c in zip(vals, corpora, strict=True)]
        bars = ax.bar(x + (k - 1) * width, rel, width, label=label, color=color)
        ax.bar_label(bars, labels=[f"{r:.2f}x\n{v:.0f}/s" for r, v in zip(rel, vals, strict=True)],
                     fontsize=7)
    ax.set_xticks(x, [c.replace("_", " ") for c in corpora], fontsize=8)
    ax.set_ylabel("images/s relative to decode all")
    ax.set_ylim(0, max(1.0, max(f["fused_over_decode_all"] for f in res["fused"].values()),
                       max(f["slipstream_over_decode_all"] for f in res["fused"].values()))
                * 1.3)
    ax.set_title("RRC 224: fused vs decode everything")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def corpus_info(cache: Any, root: Path) -> dict[str, Any]:
    col = cache.column("image")
    files, nbytes = tree_size(root)
    return {"path": str(root), "images": len(cache), "bytes": nbytes,
            "mean_kb": round(nbytes / files / 1e3, 2),
            "mean_height": round(float(col.heights.mean()), 1),
            "mean_width": round(float(col.widths.mean()), 1),
            "cache": str(cache.path)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    device = args.device
    t_all = time.perf_counter()
    root = imagenet_like(args.images, log=log)
    large_root = large_photos(args.large_images, log=log)
    cache = cache_for(root, log=log)
    large = cache_for(large_root, log=log)
    res: dict[str, Any] = {
        "benchmark": "loader",
        "config": {"threads": args.threads, "batch_size": args.batch_size,
                   "epochs_at_least": args.epochs, "min_seconds": args.min_seconds,
                   "quick": args.quick, "device": device, "seed": SEED},
        "corpus": {"imagenet_like": corpus_info(cache, root),
                   "large_photos": corpus_info(large, large_root)},
        "machine": machine_info(),
        "results": {s: {} for s in SYSTEMS},
    }
    log(f"{len(cache)} ImageNet-like images, {len(large)} large photos; "
        f"{args.threads} threads, >= {args.epochs} epochs and >= {args.min_seconds} s each")
    bytes_per_epoch = res["corpus"]["imagenet_like"]["bytes"]
    memcpy = None
    for mode in MODES:
        for system in SYSTEMS:
            t0 = time.perf_counter()
            if system == "slipstream":
                r = bench_slipstream(cache, mode, args, device)
            elif system == "bare":
                r = bench_bare(cache, mode, args)
            else:
                r = bench_torch(root, mode, args, device)
            res["results"][system][mode] = add_mb(r, bytes_per_epoch)
            log(f"  {MODE_NAMES[mode]:<24} {SYSTEM_NAMES[system]:<11} "
                f"{r['images_per_s']:>9,.0f} images/s  {r['mb_per_s']:>8,.0f} MB/s  "
                f"({r['epochs']} epochs, {time.perf_counter() - t0:.1f} s)")
        if mode == "raw":
            memcpy = bench_memcpy(cache, args)
            log(f"  raw I/O reference: numpy per-sample copy "
                f"{memcpy['per_sample_copy']['mb_per_s']:,.0f} MB/s, one block "
                f"{memcpy['one_block_copy']['mb_per_s']:,.0f} MB/s")
    assert memcpy is not None

    res["rrc_rounds"] = rrc_rounds(cache, root, args, device, res["results"])
    res["partial_decode"] = partial_vs_whole(cache, args, device)

    fused: dict[str, Any] = {}
    for name, c in (("imagenet_like", cache), ("large_photos", large)):
        # measured back to back here, not taken from the table above (speed drifts)
        f = bench_bare(c, "rrc", args)
        a = bench_bare(c, "rrc", args, variant="decode_all")
        s = bench_slipstream(c, "rrc", args, device)
        fused[name] = {
            "fused_images_per_s": f["images_per_s"],
            "decode_all_images_per_s": a["images_per_s"],
            "slipstream_images_per_s": s["images_per_s"],
            "fused_over_decode_all": round(f["images_per_s"] / a["images_per_s"], 3),
            "slipstream_over_decode_all": round(s["images_per_s"] / a["images_per_s"], 3),
            "dct_scaled_fraction": f["dct_scaled_fraction"],
            "runs": {"fused": f, "decode_all": a, "slipstream": s},
        }
        log(f"  RRC on {name}: fused {f['images_per_s']:,.0f}, decode-all "
            f"{a['images_per_s']:,.0f}, slipstream {s['images_per_s']:,.0f} images/s")
    res["fused"] = fused

    res["first_batch"] = bench_first_batch(root, args)
    log(f"  first batch: {res['first_batch']['fresh_loader_s']} s")
    res["rss"] = bench_rss(cache, args)
    log(f"  memory: VmHWM {res['rss']['vmhwm_mb']} MB")

    R = res["results"]
    res["raw_io"] = {
        "slipstream_mb_per_s": R["slipstream"]["raw"]["mb_per_s"],
        "bare_mb_per_s": R["bare"]["raw"]["mb_per_s"],
        "torch_mb_per_s": R["torch"]["raw"]["mb_per_s"],
        "numpy_copy_mb_per_s": memcpy["per_sample_copy"]["mb_per_s"],
        "one_block_mb_per_s": memcpy["one_block_copy"]["mb_per_s"],
        "slipstream_over_numpy_copy": round(R["slipstream"]["raw"]["mb_per_s"]
                                            / memcpy["per_sample_copy"]["mb_per_s"], 3),
        "slipstream_over_one_block": round(R["slipstream"]["raw"]["mb_per_s"]
                                           / memcpy["one_block_copy"]["mb_per_s"], 3),
        "runs": memcpy,
    }
    ratios = {
        f"{mode}_slipstream_over_bare": round(R["slipstream"][mode]["images_per_s"]
                                              / R["bare"][mode]["images_per_s"], 3)
        for mode in MODES
    } | {
        f"{mode}_slipstream_over_torch": round(R["slipstream"][mode]["images_per_s"]
                                               / R["torch"][mode]["images_per_s"], 3)
        for mode in MODES
    }
    ratios["raw_over_memcpy"] = res["raw_io"]["slipstream_over_numpy_copy"]
    for name, f in fused.items():
        ratios[f"rrc_fused_over_decode_all_{name}"] = f["fused_over_decode_all"]
    res["ratios"] = ratios
    fb_max = res["first_batch"]["fresh_loader_max_s"]
    targets = {
        "rrc_slipstream_over_bare": ("slipstream RRC / bare loop RRC",
                                     ratios["rrc_slipstream_over_bare"], 0.95, False),
        "rrc_slipstream_over_torch": ("slipstream RRC / torch DataLoader+PIL RRC",
                                      ratios["rrc_slipstream_over_torch"], 2.0, False),
        "rrc_slipstream_over_torch_rounds": (
            f"the same, median of {len(res['rrc_rounds']['ratios'])} paired rounds",
            res["rrc_rounds"]["median_ratio"], 2.0, False),
        "raw_over_memcpy": ("raw I/O MB/s / numpy per-sample copy MB/s",
                            ratios["raw_over_memcpy"], 0.5, False),
        "first_batch_s": ("first batch latency, fresh loader (worst, s)", fb_max, 1.0, True),
    }
    res["targets"] = {
        k: {"what": what, "value": value,
            "target": f"<= {target}" if at_most else f">= {target}",
            "verdict": verdict(value, target, at_most)}
        for k, (what, value, target, at_most) in targets.items()
    }
    res["targets"]["rss_flat"] = {
        "what": f"RSS flat over {res['rss']['epochs']} epochs of RRC",
        "value": float(res["rss"]["flat"]), "target": "flat",
        "verdict": "MET" if res["rss"]["flat"] else "NOT met"}
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(res)
    if args.json:
        write_results(args.json, res)
        log(f"wrote {args.json}")
    if args.plot:
        plot(res, args.plot)
        log(f"wrote {args.plot}")
    cache.close()
    large.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
