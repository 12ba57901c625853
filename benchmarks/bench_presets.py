"""Presets' throughput, and what one decode for many views saves.

For each preset (supervised_train, simclr, ipcl, lejepa, multicrop) prints images/s on
``--device`` (cpu or cuda: the batch transforms run there). Then, decode-bound on the
CPU, the multi-view saving measured in the same run:

- two views from one decode (``DecodeMultiRandomResizedCrop([224, 224])``) against
  decoding twice (two single-view passes);
- the L-JEPA 2 + 4 crops from one decode against six decodes (2 at 224, 4 at 98).

    python benchmarks/bench_presets.py [--device cuda] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _corpus import cpu_count, imagenet_like, write_results  # noqa: E402

from slipstream import (  # noqa: E402
    DecodeMultiRandomResizedCrop,
    DecodeRandomResizedCrop,
    SlipstreamDataset,
    SlipstreamLoader,
)
from slipstream.pipelines import ipcl, lejepa, multicrop, simclr, supervised_train  # noqa: E402

PRESETS = {
    "supervised_train": lambda d: supervised_train(224, device=d),
    "simclr": lambda d: simclr(device=d),
    "ipcl": lambda d: ipcl(device=d),
    "lejepa": lambda d: lejepa(device=d),
    "multicrop(2,6)": lambda d: multicrop(2, 6, device=d),
}


def images_per_s(cache: Any, pipelines: dict, args: argparse.Namespace, device: Any,
                 max_images: int) -> float:
    loader = SlipstreamLoader(cache, batch_size=args.batch_size, seed=0, pipelines=pipelines,
                              num_threads=args.threads, device=device, progress=False)
    for i, _ in enumerate(loader):  # warm-up: caches, allocator, CUDA kernels
        if i == 1:
            break
    n = 0
    t0 = time.perf_counter()
    while n < max_images:
        for batch in loader:
            n += len(batch["label"])
            if n >= max_images:
                break
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=cpu_count())
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2000, help="corpus size")
    p.add_argument("--measure", type=int, default=2000, help="images timed per row")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    root = imagenet_like(args.images)
    cache = SlipstreamDataset(root, cache_dir=root.parent / "caches").build_cache(progress=False)
    device = args.device
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "device": device or "cpu", "torch": torch.__version__, "presets": {},
    }
    if device and torch.device(device).type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(f"{len(cache)} images, {args.threads} decode threads, device {device or 'cpu'}")
    for name, make in PRESETS.items():
        rate = images_per_s(cache, make(device), args, device, args.measure)
        result["presets"][name] = rate
        print(f"  {name:18s} {rate:9,.0f} images/s")

    def decode_only(decoder: Any) -> float:
        return images_per_s(cache, {"image": [decoder]}, args, None, args.measure)

    one_224 = decode_only(DecodeRandomResizedCrop(224))
    one_98 = decode_only(DecodeRandomResizedCrop(98, scale=(0.05, 0.3)))
    two_views = decode_only(DecodeMultiRandomResizedCrop([224, 224]))
    six_views = decode_only(DecodeMultiRandomResizedCrop(
        [224, 224, 98, 98, 98, 98], [(0.3, 1.0)] * 2 + [(0.05, 0.3)] * 4))
    # decoding every view separately: the time per image adds up over the views
    twice = 1 / (2 / one_224)
    six_decodes = 1 / (2 / one_224 + 4 / one_98)
    result["multiview"] = {
        "single_view_224": one_224, "single_view_98": one_98,
        "two_views_one_decode": two_views, "two_views_two_decodes": twice,
        "two_view_speedup": two_views / twice,
        "lejepa_one_decode": six_views, "lejepa_six_decodes": six_decodes,
        "lejepa_speedup": six_views / six_decodes,
    }
    mv = result["multiview"]
    print(f"two views: one decode {two_views:,.0f} images/s vs two decodes {twice:,.0f} "
          f"-> {mv['two_view_speedup']:.2f}x (target >= 1.5x)")
    print(f"L-JEPA 2+4: one decode {six_views:,.0f} images/s vs six decodes {six_decodes:,.0f} "
          f"-> {mv['lejepa_speedup']:.2f}x")
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
