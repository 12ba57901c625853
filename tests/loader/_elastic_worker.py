"""One rank of an elastic-resume job, started by ``torchrun`` from ``tests/test_resume.py``.

``--save-after K``: take K batches of epoch ``--epoch`` and write the loader's state_dict
to ``OUT/state-w{WORLD}.json`` (rank 0; every rank's is the same). ``--resume STATE``
(after the save, if both are given): restore that state (saved at another world size)
in a new loader and take the rest of its epoch. Each phase has each rank write
``OUT/{save,resume}-w{WORLD}-rank{R}.json``: the paths it was served, in order, with a
sha256 of each decoded crop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--crop", type=int, required=True)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--drop-last", action="store_true")
    p.add_argument("--save-after", type=int)
    p.add_argument("--resume")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    from slipstream import DecodeRandomResizedCrop, SlipstreamLoader, ToTorchImage
    from slipstream.cache import Cache

    cache, out = Cache(args.cache), Path(args.out)

    def make_loader(seed: int) -> SlipstreamLoader:
        loader = SlipstreamLoader(
            cache, batch_size=args.batch_size, seed=seed, drop_last=args.drop_last,
            num_threads=1, progress=False,
            pipelines={"image": [DecodeRandomResizedCrop(args.crop), ToTorchImage()]})
        assert (loader.rank, loader.world_size) == (rank, world)
        return loader

    def record(phase: str, loader: SlipstreamLoader, batches) -> None:
        paths, crops = [], []
        for batch in batches:
            for path, image in zip(batch["path"], batch["image"], strict=True):
                paths.append(path)
                crops.append(hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest())
        (out / f"{phase}-w{world}-rank{rank}.json").write_text(
            json.dumps({"paths": paths, "crops": crops, "len": len(loader)}))

    if args.save_after is not None:
        loader = make_loader(args.seed)
        loader.set_epoch(args.epoch)
        it = iter(loader)
        record("save", loader, (next(it) for _ in range(args.save_after)))
        if rank == 0:
            (out / f"state-w{world}.json").write_text(json.dumps(loader.state_dict()))
        it.close()
    if args.resume is not None:
        loader = make_loader(args.seed + 1)  # the seed must come from the state
        loader.load_state_dict(json.loads(Path(args.resume).read_text()))
        record("resume", loader, loader)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
