"""Distributed data parallel: placement by rank, one global order at any world size,
augmentations keyed by sample, and one build of a shared cache.

The end-to-end tests start a real 2-process job with ``torchrun`` (gloo, CPU) running
``tests/loader/_ddp_worker.py`` and compare what each rank saw with a single-process run of the
same seed. The unit tests give ``rank``/``world_size`` explicitly, without a process group.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from slipstream import (
    DecodeRandomResizedCrop,
    SlipstreamDataset,
    SlipstreamLoader,
    ToTorchImage,
    verify_cache,
)
from slipstream._sampler import EpochSampler
from slipstream.cache import Cache, layout
from slipstream.sample_data import make_image_folder

WORKER = Path(__file__).with_name("_ddp_worker.py")
SEED = 1234
CROP = 24
N = 21  # 3 classes x 7: odd, so never a multiple of world_size x batch_size for w >= 2


# -- helpers ---------------------------------------------------------------------------------
def crop_digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest()


def run_epoch(cache: Cache, epoch: int, *, batch_size: int = 4, drop_last: bool = False,
              num_threads: int = 2, **placement) -> SimpleNamespace:
    """One epoch of a shuffled loader: batch sizes, paths in order and crop digests."""
    loader = SlipstreamLoader(
        cache, batch_size=batch_size, shuffle=True, seed=SEED, drop_last=drop_last,
        num_threads=num_threads, progress=False,
        pipelines={"image": [DecodeRandomResizedCrop(CROP), ToTorchImage()]}, **placement,
    )
    loader.set_epoch(epoch)
    sizes, paths, crops = [], [], []
    for batch in loader:
        sizes.append(len(batch["path"]))
        paths += batch["path"]
        crops += [crop_digest(img) for img in batch["image"]]
    return SimpleNamespace(len=len(loader), batch_sizes=sizes, paths=paths, crops=crops)


def expected_rank_paths(global_paths: list[str], rank: int, world_size: int,
                        batch_size: int, drop_last: bool) -> list[str]:
    """The documented scheme, computed independently: the global order (padded by
    repeating its first samples, cyclically, unless ``drop_last``), positions
    ``rank, rank + w, ...``; with ``drop_last`` every rank keeps whole batches only."""
    n = len(global_paths)
    if drop_last:
        per = n // world_size
        per -= per % batch_size
    else:
        per = math.ceil(n / world_size)
    padded = [global_paths[i % n] for i in range(per * world_size)]
    return padded[rank::world_size]


def interleave(per_rank: list[list[str]]) -> list[str]:
    assert len({len(p) for p in per_rank}) == 1, [len(p) for p in per_rank]
    return [p for group in zip(*per_rank, strict=True) for p in group]


# -- the end-to-end run under torchrun -------------------------------------------------------
def _torchrun() -> list[str]:
    beside = Path(sys.executable).with_name("torchrun")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


DDP_BATCH = 4


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Run the 2-rank job once; the tests below read what it wrote."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_image_folder(root / "data", num_classes=3, images_per_class=7, size=(48, 64),
                             seed=11, num_threads=1)
    cache_dir, out = root / "cache", root / "out"
    out.mkdir()
    cmd = [*_torchrun(), "--standalone", "--nproc-per-node", "2", str(WORKER),
           "--data", str(data), "--cache-dir", str(cache_dir), "--out", str(out),
           "--seed", str(SEED), "--batch-size", str(DDP_BATCH), "--crop", str(CROP),
           "--epochs", "2", "--read-delay", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                    f"\n--- stderr\n{proc.stderr[-8000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    cache = Cache(ranks[0]["cache_path"])
    reference = [run_epoch(cache, e, batch_size=DDP_BATCH) for e in range(2)]
    return SimpleNamespace(cache_dir=cache_dir, cache=cache, ranks=ranks, reference=reference)


def test_ddp_loader_takes_rank_and_world_size_from_the_process_group(ddp):
    for r, rec in enumerate(ddp.ranks):
        assert (rec["rank"], rec["world_size"]) == (r, 2)
        assert (rec["loader_rank"], rec["loader_world_size"]) == (r, 2)


def test_ddp_one_process_builds_the_cache_and_the_other_waits(ddp):
    builder, waiter = sorted(ddp.ranks, key=lambda rec: -rec["reads"])
    # the two ranks really asked at the same time: the waiter's call began before the
    # builder's ended (else this test would prove nothing about the lock)
    assert waiter["build_start"] < builder["build_end"]
    assert waiter["build_end"] >= builder["build_end"] - 0.05
    # exactly one process read the source, once per sample, into one build directory
    assert builder["reads"] == N and waiter["reads"] == 0
    assert builder["build_dirs"] == 1 and waiter["build_dirs"] == 0
    # iterating reads the cache, never the source
    assert [rec["reads_total"] for rec in ddp.ranks] == [rec["reads"] for rec in ddp.ranks]
    # both use the same complete, uncorrupted cache, and nothing else is left behind
    assert ddp.ranks[0]["cache_path"] == ddp.ranks[1]["cache_path"]
    complete = [p for p in ddp.cache_dir.iterdir() if layout.is_complete(p)]
    assert complete == [Path(ddp.ranks[0]["cache_path"])]
    tmp = ddp.cache_dir / ".tmp"
    leftovers = [p.name for p in tmp.iterdir() if p.is_dir()] if tmp.is_dir() else []
    assert leftovers == []
    report = verify_cache(ddp.cache.path)
    assert report.ok, report.problems
    assert len(ddp.cache) == N and all(rec["num_samples"] == N for rec in ddp.ranks)


@pytest.mark.parametrize("run", ["keep_last", "drop_last"])
def test_ddp_ranks_get_equal_batches_that_partition_the_epoch(ddp, run):
    for epoch in range(2):
        recs = [rec["runs"][run][epoch] for rec in ddp.ranks]
        assert recs[0]["len"] == recs[1]["len"] == len(recs[0]["batch_sizes"])
        assert recs[0]["batch_sizes"] == recs[1]["batch_sizes"]
        assert all(s == DDP_BATCH for s in recs[0]["batch_sizes"][:-1])
        seen = recs[0]["paths"] + recs[1]["paths"]
        if run == "drop_last":  # 21 // 2 = 10 -> 8 per rank: 2 full batches, no repeats
            assert recs[0]["batch_sizes"] == [DDP_BATCH, DDP_BATCH]
            assert len(set(seen)) == len(seen) == 16
            assert not set(recs[0]["paths"]) & set(recs[1]["paths"])
        else:  # 11 per rank: one sample, the global order's first, is served twice
            assert recs[0]["batch_sizes"] == [4, 4, 3]
            assert set(seen) == set(ddp.reference[epoch].paths)
            repeats = sorted(p for p in set(seen) if seen.count(p) > 1)
            assert repeats == [ddp.reference[epoch].paths[0]]
            assert seen.count(repeats[0]) == 2


@pytest.mark.parametrize("run", ["keep_last", "drop_last"])
def test_ddp_ranks_interleave_to_the_single_process_global_order(ddp, run):
    drop_last = run == "drop_last"
    for epoch in range(2):
        global_paths = ddp.reference[epoch].paths
        per_rank = [rec["runs"][run][epoch]["paths"] for rec in ddp.ranks]
        for r in range(2):
            assert per_rank[r] == expected_rank_paths(global_paths, r, 2, DDP_BATCH, drop_last)
        padded = global_paths + global_paths[:1]
        assert interleave(per_rank) == (global_paths[:16] if drop_last else padded)
    assert ddp.reference[0].paths != ddp.reference[1].paths  # set_epoch reshuffles


def test_ddp_crops_equal_the_single_process_crops(ddp):
    checked = 0
    for epoch in range(2):
        ref = dict(zip(ddp.reference[epoch].paths, ddp.reference[epoch].crops, strict=True))
        assert len(ref) == N
        for rec in ddp.ranks:
            for run in ("keep_last", "drop_last"):
                got = rec["runs"][run][epoch]
                for path, digest in zip(got["paths"], got["crops"], strict=True):
                    assert digest == ref[path], (epoch, rec["rank"], run, path)
                    checked += 1
    assert checked == 2 * (22 + 16)
    # and the crops do change between epochs
    assert ddp.reference[0].crops != ddp.reference[1].crops


# -- explicit rank / world_size, in this process ---------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    root = tmp_path_factory.mktemp("dist-unit")
    data = make_image_folder(root / "data", num_classes=3, images_per_class=7, size=(48, 64),
                             seed=12, num_threads=1)
    built = SlipstreamDataset(data, cache_dir=root / "cache").build_cache(progress=False)
    assert len(built) == N
    return built


@pytest.fixture(scope="module")
def single(cache: Cache) -> SimpleNamespace:
    """The 1-rank run of epoch 1 (its order and crops do not depend on the batch size)."""
    return run_epoch(cache, 1, batch_size=5)


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep_last", "drop_last"])
@pytest.mark.parametrize("batch_size", [4, 7])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_explicit_placement_strides_the_global_order(cache, single, world_size, batch_size,
                                                     drop_last):
    empty = drop_last and N // world_size < batch_size  # no batch at all: a warning says so
    with pytest.warns(UserWarning, match="no batches") if empty else nullcontext():
        runs = [run_epoch(cache, 1, batch_size=batch_size, drop_last=drop_last,
                          num_threads=1 + r % 2, rank=r, world_size=world_size)
                for r in range(world_size)]
    # every rank: the same number of batches, of the same sizes, as len() promised
    assert len({run.len for run in runs}) == 1
    assert all(run.batch_sizes == runs[0].batch_sizes for run in runs)
    assert runs[0].len == len(runs[0].batch_sizes)
    assert all(s == batch_size for s in runs[0].batch_sizes[:-1])
    if drop_last:
        assert all(s == batch_size for s in runs[0].batch_sizes)
    # rank r takes global positions r, r + w, ... of the world-size-independent order
    for r, run in enumerate(runs):
        assert run.paths == expected_rank_paths(single.paths, r, world_size, batch_size,
                                                 drop_last)
    seen = [p for run in runs for p in run.paths]
    if drop_last:
        assert len(set(seen)) == len(seen)
    else:
        assert set(seen) == set(single.paths)
        assert len(seen) == math.ceil(N / world_size) * world_size
    # and each sample's crop is the one the 1-rank run decoded
    ref = dict(zip(single.paths, single.crops, strict=True))
    for run in runs:
        assert run.crops == [ref[p] for p in run.paths]


def test_sampler_partitions_every_size_at_every_world_size():
    """The pure schedule, over many (size, world size, batch size) combinations."""
    for n in range(1, 30):
        for w in range(1, 5):
            if n < w:
                continue  # see test_a_dataset_smaller_than_the_world_still_fills_every_rank
            for bs in range(1, 6):
                for drop_last in (False, True):
                    ranks = [EpochSampler(n, bs, True, 7, drop_last, r, w) for r in range(w)]
                    order = [int(i) for i in ranks[0].global_order(3)]
                    assert sorted(order) == list(range(n))
                    where = (n, w, bs, drop_last)
                    lens = {len(s) for s in ranks}
                    assert len(lens) == 1, where
                    for r, s in enumerate(ranks):
                        batches = s.batches(3)
                        assert len(batches) == len(s), where
                        assert all(len(b) == bs for b in batches[:-1]), where
                        if drop_last:
                            assert all(len(b) == bs for b in batches), where
                        got = [int(i) for b in batches for i in b]
                        assert got == expected_rank_paths(order, r, w, bs, drop_last), where
                        # resuming from batch k gives the tail of the same list
                        for k in range(len(batches) + 1):
                            tail = [int(i) for b in s.batches(3, k) for i in b]
                            assert tail == [int(i) for b in batches[k:] for i in b], where


@pytest.mark.parametrize("n,world_size", [(1, 2), (1, 3), (1, 4), (2, 4), (3, 4), (2, 5)])
def test_a_dataset_smaller_than_the_world_still_fills_every_rank(n, world_size):
    """Padding repeats the global order from its start, cyclically if it must: every rank
    gets one non-empty batch even when the dataset has fewer samples than ranks."""
    ranks = [EpochSampler(n, 4, True, 7, False, r, world_size) for r in range(world_size)]
    order = [int(i) for i in ranks[0].global_order(0)]
    for r, s in enumerate(ranks):
        batches = s.batches(0)
        assert len(s) == len(batches) == 1
        assert [int(i) for i in batches[0]] == expected_rank_paths(order, r, world_size, 4,
                                                                   False)
        assert len(batches[0]) == 1


def test_explicit_placement_needs_no_process_group(cache):
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    loader = SlipstreamLoader(cache, batch_size=4, seed=0, rank=1, world_size=3, progress=False)
    assert (loader.rank, loader.world_size) == (1, 3)
    loader = SlipstreamLoader(cache, batch_size=4, seed=0, progress=False)
    assert (loader.rank, loader.world_size) == (0, 1)
    loader = SlipstreamLoader(cache, batch_size=4, seed=0, distributed=False, progress=False)
    assert (loader.rank, loader.world_size) == (0, 1)


@pytest.mark.parametrize("kwargs", [
    {"distributed": True},
    {"distributed": True, "rank": 0},
    {"distributed": True, "world_size": 2},
    {"rank": 1},
    {"world_size": 2},
], ids=["distributed", "rank-only", "world_size-only", "implicit-rank-only",
        "implicit-world_size-only"])
def test_distributed_without_a_process_group_or_placement_is_a_clear_error(cache, kwargs):
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with pytest.raises(ValueError, match=r"rank= and world_size=.*init_process_group"):
        SlipstreamLoader(cache, batch_size=4, seed=0, progress=False, **kwargs)


@pytest.mark.parametrize("rank,world_size", [(2, 2), (-1, 2), (0, 0)])
def test_rank_outside_the_world_is_an_error(cache, rank, world_size):
    with pytest.raises(ValueError, match="outside world_size"):
        SlipstreamLoader(cache, batch_size=4, seed=0, rank=rank, world_size=world_size,
                         progress=False)


def test_an_initialised_process_group_is_detected_in_process(cache, tmp_path):
    """A 1-process gloo group: distributed=True needs nothing more, explicit values win."""
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        loader = SlipstreamLoader(cache, batch_size=4, seed=0, distributed=True, progress=False)
        assert (loader.rank, loader.world_size) == (0, 1)
        loader = SlipstreamLoader(cache, batch_size=4, seed=0, rank=1, world_size=2,
                                  progress=False)
        assert (loader.rank, loader.world_size) == (1, 2)
        loader = SlipstreamLoader(cache, batch_size=4, seed=0, distributed=False,
                                  progress=False)
        assert (loader.rank, loader.world_size) == (0, 1)
    finally:
        dist.destroy_process_group()


def test_sampler_resumed_at_another_world_size_serves_the_rest_once():
    """Saved after k batches at world size w, resumed at w2: the new ranks share out the
    global positions w·k·b … N-1 by the same rule (padding or drop_last included); at
    w2 == w that is exactly the uninterrupted tail."""
    for n in (1, 5, 21, 23):
        for w in (1, 2, 3):
            for bs in (1, 4):
                for drop_last in (False, True):
                    before = [EpochSampler(n, bs, True, 7, drop_last, r, w) for r in range(w)]
                    order = [int(i) for i in before[0].global_order(2)]
                    for k in range(len(before[0])):
                        offset = w * k * bs
                        served = [int(i) for s in before for b in s.batches(2)[:k] for i in b]
                        assert sorted(served) == sorted(order[:offset])
                        for w2 in (1, 2, 3, 4):
                            after = [EpochSampler(n, bs, True, 7, drop_last, r, w2)
                                     for r in range(w2)]
                            runs = [[int(i) for b in s.batches(2, offset=offset) for i in b]
                                    for s in after]
                            where = (n, w, bs, drop_last, k, w2)
                            assert len({len(s.batches(2, offset=offset)) for s in after}) == 1
                            assert all(len(s.batches(2, offset=offset)) == s.num_batches(offset)
                                       for s in after), where
                            rest = order[offset:]
                            if drop_last:
                                per = len(rest) // w2
                                per -= per % bs
                                expected = [rest[r::w2][:per] for r in range(w2)]
                            else:
                                per = -(-len(rest) // w2)
                                padded = (order * (per * w2 // n + 2))[offset:offset + per * w2]
                                expected = [padded[r::w2] for r in range(w2)]
                            assert runs == expected, where
                            got = [i for run in runs for i in run]
                            if drop_last:
                                assert len(set(got)) == len(got), where
                            else:
                                assert set(rest) <= set(got), where
                                assert len(got) - len(rest) < w2, where  # only the padding
                            if w2 == w:  # the same world size: the uninterrupted tail
                                assert runs == [[int(i) for b in s.batches(2, k) for i in b]
                                                for s in before], where
