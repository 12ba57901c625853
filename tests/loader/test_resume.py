"""Resume: ``state_dict()`` taken anywhere in a run and restored with ``load_state_dict()``
in a new process (other seed argument, other thread count) yields exactly the batches the
uninterrupted run yielded next: same samples, same labels, same augmented pixels. Restored
at another world size (torchrun, 2 → 1 and 1 → 2 processes), the new ranks serve the rest
of the epoch once, with the same crops. Damaged states and bad arguments are refused by
name."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from slipstream import (
    DecodeRandomResizedCrop,
    InvalidArgumentError,
    SlipstreamDataset,
    SlipstreamLoader,
    ToTorchImage,
)
from slipstream.cache import Cache
from slipstream.sample_data import make_image_folder

WORKER = Path(__file__).with_name("_resume_worker.py")
SEED = 99
CROP = 24
EPOCHS = 3
BATCH = 4
N = 21

# name -> (the saved run's loader arguments, stop point, the resumed run's num_threads).
# A stop point (e, k) runs e whole epochs, then takes k batches of the next one (k=None:
# takes none and does not even start it; k="all": takes every batch by next(), without
# reaching StopIteration).
SCENARIOS = {
    "before_any_batch": ({}, (0, None), 1),
    "epoch_started_batch_0": ({}, (1, 0), 3),
    "mid_epoch": ({}, (0, 2), 1),
    "epoch_boundary": ({}, (1, None), 3),
    "last_batch_taken": ({}, (1, "all"), 1),
    "mid_last_epoch_drop_last": ({"drop_last": True}, (2, 3), 3),
    "mid_epoch_rank_1_of_2": ({"rank": 1, "world_size": 2}, (1, 1), 1),
    "unshuffled_mid_epoch": ({"shuffle": False}, (0, 1), 3),
}


def make_loader(cache: Cache, *, seed: int = SEED, num_threads: int = 2, **kw) -> SlipstreamLoader:
    return SlipstreamLoader(
        cache, batch_size=kw.pop("batch_size", BATCH), seed=seed, num_threads=num_threads,
        progress=False, pipelines={"image": [DecodeRandomResizedCrop(CROP), ToTorchImage()]},
        **kw,
    )


def record(batch: dict, epoch: int) -> dict:
    return {"epoch": epoch, "image": batch["image"].clone(), "label": batch["label"].clone(),
            "path": list(batch["path"])}


def run_uninterrupted(cache: Cache, epochs: int, **kw) -> list[tuple[int, int, dict]]:
    """Every batch of ``epochs`` epochs as ``(epoch, batch index, batch)``."""
    loader = make_loader(cache, **kw)
    out = []
    for epoch in range(epochs):
        for k, batch in enumerate(loader):
            out.append((epoch, k, record(batch, epoch)))
    return out


def stop_and_save(cache: Cache, stop: tuple[int, int | str | None], **kw) -> dict:
    """Run up to ``stop`` and return the loader's state_dict there."""
    epochs, k = stop
    loader = make_loader(cache, **kw)
    for _ in range(epochs):
        for _batch in loader:
            pass
    if k is None:
        return loader.state_dict()
    it = iter(loader)
    try:
        for _ in range(len(loader) if k == "all" else k):
            next(it)
        return loader.state_dict()
    finally:
        it.close()  # abandoned mid-epoch, as a crashing job would


def remaining(reference: list[tuple[int, int, dict]], stop) -> list[dict]:
    """What the uninterrupted run yielded after the stop point."""
    epochs, k = stop
    if k == "all":
        epochs, k = epochs + 1, 0
    return [b for e, i, b in reference if (e, i) >= (epochs, k or 0)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    root = tmp_path_factory.mktemp("resume")
    data = make_image_folder(root / "data", num_classes=3, images_per_class=7, size=(48, 64),
                             seed=21, num_threads=1)
    built = SlipstreamDataset(data, cache_dir=root / "cache").build_cache(progress=False)
    assert len(built) == N
    return built


@pytest.fixture(scope="module")
def resumed(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Save every scenario's state here, restore them all in one new process."""
    tmp = tmp_path_factory.mktemp("resume-jobs")
    states, jobs = {}, {}
    for name, (kw, stop, threads) in SCENARIOS.items():
        state = stop_and_save(cache, stop, **kw)
        text = json.dumps(state)  # a state_dict is plain JSON
        assert json.loads(text) == state
        states[name] = state
        jobs[name] = {"state": json.loads(text),
                      "loader": {**kw, "batch_size": BATCH, "seed": SEED + 1,
                                 "num_threads": threads}}
    spec = {"cache": str(cache.path), "crop": CROP, "epochs": EPOCHS, "jobs": jobs}
    (tmp / "jobs.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "jobs.json"),
                           str(tmp / "out.pt")], env=env, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"the resume process exited with {proc.returncode}\n{proc.stdout[-3000:]}"
                    f"\n{proc.stderr[-6000:]}")
    return SimpleNamespace(states=states, batches=torch.load(tmp / "out.pt"))


@pytest.fixture(scope="module")
def references(cache: Cache) -> dict[str, list]:
    out: dict[str, list] = {}
    for kw, _, _ in SCENARIOS.values():
        key = json.dumps(kw, sort_keys=True)
        if key not in out:
            out[key] = run_uninterrupted(cache, EPOCHS, **kw)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_resumed_in_a_new_process_yields_the_uninterrupted_remainder(name, resumed, references):
    kw, stop, _ = SCENARIOS[name]
    expected = remaining(references[json.dumps(kw, sort_keys=True)], stop)
    got = resumed.batches[name]
    assert expected, "the stop point must leave something to resume"
    assert len(got) == len(expected)
    for j, (g, e) in enumerate(zip(got, expected, strict=True)):
        where = f"{name}: remaining batch {j} (epoch {e['epoch']})"
        assert g["epoch"] == e["epoch"], where
        assert g["path"] == e["path"], where
        assert torch.equal(g["label"], e["label"]), where
        assert g["image"].shape == e["image"].shape, where
        assert torch.equal(g["image"], e["image"]), where


def test_the_references_are_not_trivial(references):
    """Epochs differ in order and crops, so matching them means the resume was exact."""
    ref = references[json.dumps({}, sort_keys=True)]
    by_epoch = [[b for e, _, b in ref if e == epoch] for epoch in range(EPOCHS)]
    assert by_epoch[0][0]["path"] != by_epoch[1][0]["path"]
    paths0 = sorted(p for b in by_epoch[0] for p in b["path"])
    paths1 = sorted(p for b in by_epoch[1] for p in b["path"])
    assert paths0 == paths1 and len(paths0) == N


def test_a_restored_state_reads_back_unchanged(cache):
    state = stop_and_save(cache, (1, 2))
    fresh = make_loader(cache, seed=0, num_threads=1)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.seed == SEED
    assert fresh.state_dict() == state


@pytest.mark.parametrize("key,change", [
    ("batch_size", {"batch_size": 5}),
    ("drop_last", {"drop_last": True}),
    ("shuffle", {"shuffle": False}),
])
def test_load_state_dict_refuses_a_different_run_shape(cache, key, change):
    state = stop_and_save(cache, (0, 2))
    other = make_loader(cache, seed=5, **change)
    before = other.state_dict()
    with pytest.raises(InvalidArgumentError, match=rf"\b{key}\b"):
        other.load_state_dict(state)
    assert other.state_dict() == before  # a refused state changes nothing


@pytest.mark.parametrize("bad,match", [
    (None, r"expects the dict that state_dict\(\) returned, got NoneType"),
    ({}, r"lacks \['seed', 'epoch', 'samples_done'\]"),
    ([1, 2], "got list"),
    ({"samples_done": -4}, "samples_done must be an integer >= 0, got -4"),
    ({"samples_done": 6}, "samples_done=6 is not a whole number of batches of 4"),
    ({"samples_done": 44}, "samples_done=44 is past the 21 samples"),
    ({"epoch": -1}, "epoch must be an integer >= 0, got -1"),
    ({"epoch": "1"}, "epoch must be an integer >= 0, got '1'"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"samples_done": None, "batches_done": -1}, "batches_done must be an integer >= 0"),
], ids=lambda v: str(v)[:24])
def test_load_state_dict_refuses_a_damaged_state_in_one_line(cache, bad, match):
    """A state that is not one is refused by name, and the loader is left as it was;
    dicts here are changes to a real state (None deletes the key)."""
    if isinstance(bad, dict) and bad:
        state = {**stop_and_save(cache, (0, 2)), **bad}
        bad = {k: v for k, v in state.items() if v is not None}
    loader = make_loader(cache, seed=5)
    before = loader.state_dict()
    with pytest.raises(InvalidArgumentError, match=match) as info:
        loader.load_state_dict(bad)
    assert "\n" not in str(info.value)
    assert loader.state_dict() == before


def test_a_state_saved_with_batches_done_still_restores(cache):
    """States written before positions were global count batches per rank."""
    state = stop_and_save(cache, (1, 2), rank=1, world_size=2)
    old = {k: v for k, v in state.items() if k != "samples_done"}
    old["batches_done"] = state["samples_done"] // (BATCH * 2)
    a, b = make_loader(cache, rank=1, world_size=2), make_loader(cache, rank=1, world_size=2)
    a.load_state_dict(state)
    b.load_state_dict(old)
    assert a.state_dict() == b.state_dict()
    assert [x["path"] for x in a] == [x["path"] for x in b]


@pytest.mark.parametrize("num_threads", [0, -1, 1.5, True, "4"])
def test_num_threads_is_checked_when_the_loader_is_made(cache, num_threads):
    with pytest.raises(InvalidArgumentError, match="num_threads must be a positive integer"):
        make_loader(cache, num_threads=num_threads)


def test_default_threads_share_the_cpus_among_the_local_ranks(cache, monkeypatch):
    usable = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert make_loader(cache, num_threads=None).num_threads == usable
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert make_loader(cache, num_threads=None).num_threads == max(1, usable // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * usable))  # more ranks than CPUs
    assert make_loader(cache, num_threads=None).num_threads == 1


def test_drop_last_with_a_batch_larger_than_the_dataset_warns(cache):
    loader = make_loader(cache, batch_size=N + 1, drop_last=True)
    with pytest.warns(UserWarning, match=rf"no batches: drop_last=True and batch_size={N + 1}"):
        assert list(loader) == []
    loader = make_loader(cache, batch_size=11, drop_last=True, rank=0, world_size=2)
    with pytest.warns(UserWarning, match="than the 10 samples each of 2 rank"):
        assert list(loader) == []


def test_set_epoch_keeps_a_restored_position(tmp_path):
    """The common loop calls set_epoch(e) at the top of each epoch: after a restore it must
    continue the interrupted epoch, not replay it."""
    from slipstream import DecodeCenterCrop, SlipstreamDataset, SlipstreamLoader, ToTorchImage
    from slipstream.sample_data import make_image_folder

    root = make_image_folder(tmp_path / "d", num_classes=2, images_per_class=5, size=(40, 48))
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "c").build_cache(progress=False)

    def make():
        return SlipstreamLoader(cache, batch_size=2, seed=4, num_threads=1, progress=False,
                                pipelines={"image": [DecodeCenterCrop(8), ToTorchImage()]})

    ref = make()
    ref.set_epoch(1)
    expected = [b["path"] for b in ref]
    first = make()
    first.set_epoch(1)
    it = iter(first)
    taken = [next(it)["path"] for _ in range(2)]
    state = first.state_dict()
    del it
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert taken + [b["path"] for b in resumed] == expected
    resumed.set_epoch(1)  # outside a restore, set_epoch starts the epoch from the top
    assert [b["path"] for b in resumed] == expected


# -- elastic: saved at one world size, resumed at another, under torchrun ---------------------
ELASTIC_WORKER = Path(__file__).with_name("_elastic_worker.py")
ELASTIC_EPOCH = 1


def _run_torchrun(nproc: int, cache: Cache, out: Path, *args: str) -> None:
    from .test_distributed import _torchrun

    cmd = [*_torchrun(), "--standalone", "--nproc-per-node", str(nproc), str(ELASTIC_WORKER),
           "--cache", str(cache.path), "--out", str(out), "--seed", str(SEED),
           "--batch-size", str(BATCH), "--crop", str(CROP), "--epoch", str(ELASTIC_EPOCH), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun ({nproc} processes) exited with {proc.returncode}\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


@pytest.fixture(scope="module")
def elastic(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """2 → 1: two ranks take 2 batches each, one process resumes. 1 → 2: one process takes
    3 batches (here, world size 1), two ranks resume. Two torchrun jobs in all."""
    out = tmp_path_factory.mktemp("elastic")
    single = make_loader(cache)
    single.set_epoch(ELASTIC_EPOCH)
    it = iter(single)
    saved_w1 = [p for _ in range(3) for p in next(it)["path"]]
    (out / "state-w1.json").write_text(json.dumps(single.state_dict()))
    it.close()
    _run_torchrun(2, cache, out, "--save-after", "2", "--resume", str(out / "state-w1.json"))
    _run_torchrun(1, cache, out, "--resume", str(out / "state-w2.json"))

    def read(name: str) -> dict:
        return json.loads((out / f"{name}.json").read_text())

    reference = make_loader(cache)
    reference.set_epoch(ELASTIC_EPOCH)
    paths, crops = [], {}
    for batch in reference:
        paths += batch["path"]
        for path, image in zip(batch["path"], batch["image"], strict=True):
            crops[path] = hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest()
    return SimpleNamespace(
        order=paths, crops=crops, saved_w1=saved_w1,
        state_w1=read("state-w1"), state_w2=read("state-w2"),
        saved_w2=[read(f"save-w2-rank{r}") for r in range(2)],
        resumed_w2=[read(f"resume-w2-rank{r}") for r in range(2)],
        resumed_w1=read("resume-w1-rank0"))


def _check_crops(elastic: SimpleNamespace, *runs: dict) -> None:
    for run in runs:
        assert run["crops"] == [elastic.crops[p] for p in run["paths"]]


def test_elastic_resume_from_two_ranks_to_one(elastic):
    order = elastic.order
    assert len(order) == N and len(set(order)) == N
    saved = [p for pair in zip(*(r["paths"] for r in elastic.saved_w2), strict=True) for p in pair]
    assert saved == order[:16]  # 2 ranks x 2 batches x 4: the first 16 global positions
    assert elastic.state_w2["samples_done"] == 16 and elastic.state_w2["world_size"] == 2
    resumed = elastic.resumed_w1["paths"]
    assert resumed == order[16:]  # the other 5, once each, in the global order
    assert sorted(saved + resumed) == sorted(order)
    _check_crops(elastic, *elastic.saved_w2, elastic.resumed_w1)


def test_elastic_resume_from_one_rank_to_two(elastic):
    order = elastic.order
    assert elastic.saved_w1 == order[:12]
    assert elastic.state_w1["samples_done"] == 12 and elastic.state_w1["world_size"] == 1
    per_rank = [r["paths"] for r in elastic.resumed_w2]
    # 9 left for 2 ranks: 5 each, the tenth slot padded with the global order's first sample
    assert per_rank[0] == order[12::2]
    assert per_rank[1] == order[13::2] + order[:1]
    assert elastic.resumed_w2[0]["len"] == elastic.resumed_w2[1]["len"] == 3  # a whole epoch
    served = per_rank[0] + per_rank[1]
    assert sorted(served[:-1]) == sorted(order[12:])  # every remaining sample exactly once
    assert not set(served) & set(elastic.saved_w1[1:])  # and nothing served before again
    _check_crops(elastic, *elastic.resumed_w2)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"prefetch": 1}, "prefetch must be an integer of at least 2"),
    ({"on_error": "ignore"}, "on_error must be one of"),
    ({"rank": 2, "world_size": 2}, "rank 2 is outside world_size 2"),
])
def test_bad_loader_arguments_fail_at_construction(cache, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        make_loader(cache, **kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
