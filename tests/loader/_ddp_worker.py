"""One rank of a 2-process job, started by ``torchrun`` from ``tests/loader/test_distributed.py``.

Both ranks open the same ImageFolder with the same cache directory and ask for its cache
at the same moment (right after a barrier): one must build it, the other must wait and
reuse it. Every source read and every build directory is counted, and the time spent
inside ``build_cache`` is recorded so the test can check that the two calls overlapped.

Then the rank iterates ``--epochs`` epochs of a shuffled ``SlipstreamLoader`` (rank and
world size taken from the process group) with and without ``drop_last``, and writes
``OUT/rank{R}.json``: per epoch, the batch sizes, the paths in order, and a sha256 of
each sample's decoded crop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from pathlib import Path

import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--crop", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--read-delay", type=float, default=0.0,
                   help="seconds each source read sleeps, so the build outlasts the race")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    from slipstream import (
        DecodeRandomResizedCrop,
        SlipstreamDataset,
        SlipstreamLoader,
        ToTorchImage,
    )
    from slipstream.sources.imagefolder import ImageFolderSource
    from slipstream.stores.local import LocalStore

    counts = {"reads": 0, "build_dirs": 0}
    lock = threading.Lock()
    original_read = ImageFolderSource.read
    original_new_build_dir = LocalStore.new_build_dir

    def counting_read(self, index):
        with lock:
            counts["reads"] += 1
        time.sleep(args.read_delay)
        return original_read(self, index)

    def counting_new_build_dir(self, key):
        with lock:
            counts["build_dirs"] += 1
        return original_new_build_dir(self, key)

    ImageFolderSource.read = counting_read
    LocalStore.new_build_dir = counting_new_build_dir

    dataset = SlipstreamDataset(args.data, cache_dir=args.cache_dir)

    def loader(drop_last: bool) -> SlipstreamLoader:
        return SlipstreamLoader(
            dataset, batch_size=args.batch_size, shuffle=True, seed=args.seed,
            drop_last=drop_last, num_threads=1, progress=False,
            pipelines={"image": [DecodeRandomResizedCrop(args.crop), ToTorchImage()]},
        )

    loaders = {"keep_last": loader(False), "drop_last": loader(True)}
    counts["reads"] = 0  # only reads made while getting the cache count
    dist.barrier()
    build_start = time.time()
    cache = loaders["keep_last"].cache  # both ranks at once: one builds, one waits
    build_end = time.time()

    result = {
        "rank": rank, "world_size": world,
        "loader_rank": loaders["keep_last"].rank,
        "loader_world_size": loaders["keep_last"].world_size,
        "reads": counts["reads"], "build_dirs": counts["build_dirs"],
        "build_start": build_start, "build_end": build_end,
        "cache_path": str(cache.path), "num_samples": len(cache),
        "runs": {},
    }
    for name, ld in loaders.items():
        epochs = []
        for epoch in range(args.epochs):
            ld.set_epoch(epoch)
            sizes, paths, crops = [], [], []
            for batch in ld:
                sizes.append(len(batch["path"]))
                for path, image in zip(batch["path"], batch["image"], strict=True):
                    paths.append(path)
                    crops.append(hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest())
            epochs.append({"batch_sizes": sizes, "len": len(ld), "paths": paths,
                           "crops": crops})
        result["runs"][name] = epochs
    result["reads_total"] = counts["reads"]  # iterating must not read the source again

    Path(args.out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
