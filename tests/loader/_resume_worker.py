"""Resume saved runs in a fresh process; started by ``tests/loader/test_resume.py``.

``python _resume_worker.py JOBS.json OUT.pt``: JOBS.json holds ``{"cache": PATH, "crop": C,
"epochs": N, "jobs": {NAME: {"loader": KWARGS, "state": STATE_DICT}}}``. For each job a new
loader is created from KWARGS (a different seed and thread count than the saved run),
restored with ``load_state_dict(STATE_DICT)`` and iterated until epoch N; every batch it
yields is saved (``torch.save``) as ``{"epoch", "image", "label", "path"}`` under NAME.
"""

from __future__ import annotations

import json
import sys

import torch

from slipstream import DecodeRandomResizedCrop, SlipstreamLoader, ToTorchImage
from slipstream.cache import Cache


def main(jobs_file: str, out_file: str) -> None:
    with open(jobs_file) as f:
        spec = json.load(f)
    cache = Cache(spec["cache"])
    results = {}
    for name, job in spec["jobs"].items():
        loader = SlipstreamLoader(
            cache, progress=False,
            pipelines={"image": [DecodeRandomResizedCrop(spec["crop"]), ToTorchImage()]},
            **job["loader"],
        )
        loader.load_state_dict(job["state"])
        batches = []
        while loader.epoch < spec["epochs"]:
            epoch = loader.epoch
            for b in loader:
                batches.append({"epoch": epoch, "image": b["image"].clone(),
                                "label": b["label"].clone(), "path": list(b["path"])})
        results[name] = batches
    torch.save(results, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
