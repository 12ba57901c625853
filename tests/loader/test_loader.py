"""``SlipstreamLoader`` end to end: batches, order, epochs, determinism, presets,
transforms, errors, thread shutdown and bounded memory. No mocks: real caches built from
small generated ImageFolders, real decode threads."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from slipstream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeCenterCrop,
    DecodeOnly,
    DecodeRandomResizedCrop,
    Lambda,
    MultiCropPipeline,
    PipelineError,
    RandomHorizontalFlip,
    SampleError,
    SlipstreamDataset,
    SlipstreamLoader,
    ToTorchImage,
)
from slipstream.cache import Cache
from slipstream.pipelines import supervised_train, supervised_val
from slipstream.transforms.base import BatchContext, BatchTransform

N = 18  # samples in the image_folder fixture (3 classes x 6)


@pytest.fixture(scope="module")
def cache(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Cache:
    c = SlipstreamDataset(image_folder, cache_dir=tmp_path_factory.mktemp("loader-cache"))
    built = c.build_cache(progress=False)
    assert len(built) == N
    return built


@pytest.fixture(scope="module")
def index_of(cache: Cache) -> dict[str, int]:
    return {cache[i]["path"]: i for i in range(len(cache))}


def crop_pipeline(size: int = 24, **flip):
    stages = [DecodeRandomResizedCrop(size), ToTorchImage()]
    if flip:
        stages.append(RandomHorizontalFlip(**flip))
    return {"image": stages}


@pytest.fixture
def decode_threads():
    """Lists the decode threads started since the test began (a failed test elsewhere may
    leave its own behind: they are not this test's business)."""
    before = set(threading.enumerate())

    def started() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t not in before and t.name.startswith("slipstream-decode")]

    return started


def decoding_stops(loader, timeout: float = 5.0) -> bool:
    """Whether the loader's decode threads are (or soon become) idle: no slice queued or
    running."""
    deadline = time.monotonic() + timeout
    while loader._pool is not None and not loader._pool.idle():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def epoch_indices(loader, index_of) -> list[np.ndarray]:
    return [np.array([index_of[p] for p in b["path"]]) for b in loader]


def snapshot(loader) -> list[dict]:
    """One epoch, each batch copied out of the loader's reusable buffers."""
    return [{"image": b["image"].clone(), "label": b["label"].clone(), "path": list(b["path"])}
            for b in loader]


def assert_same_epochs(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["path"] == y["path"]
        assert torch.equal(x["label"], y["label"])
        assert torch.equal(x["image"], y["image"])


# -- the batch dict ----------------------------------------------------------------------------
def test_batch_keys_types_and_values(cache):
    loader = SlipstreamLoader(cache, batch_size=5, shuffle=False, seed=0,
                              pipelines=supervised_val(32), num_threads=2)
    labels = cache.column("label")
    sizes = []
    for b, batch in enumerate(loader):
        assert set(batch) == {"image", "label", "path"}
        img, label, path = batch["image"], batch["label"], batch["path"]
        n = len(path)
        sizes.append(n)
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
        assert tuple(img.shape) == (n, 3, 32, 32)
        assert isinstance(label, torch.Tensor) and label.dtype == torch.int64
        idx = np.arange(b * 5, b * 5 + n)
        assert label.tolist() == labels[idx].tolist()
        assert isinstance(path, list) and all(isinstance(p, str) for p in path)
        assert path == [cache[int(i)]["path"] for i in idx]
        assert label.tolist() == [cache[int(i)]["label"] for i in idx]
    assert sizes == [5, 5, 5, 3]


def test_uint8_crop_batch_is_channels_first_view(cache):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=0,
                              pipelines={"image": [DecodeCenterCrop((20, 30)), ToTorchImage()]},
                              num_threads=2)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.uint8 and tuple(batch["image"].shape) == (4, 3, 20, 30)


def test_default_pipeline_is_center_crop_224_uint8(cache):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, num_threads=2)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.uint8 and tuple(batch["image"].shape) == (4, 3, 224, 224)


@pytest.mark.parametrize("batch_size,drop_last,sizes", [
    (5, False, [5, 5, 5, 3]),
    (5, True, [5, 5, 5]),
    (6, False, [6, 6, 6]),
    (6, True, [6, 6, 6]),
    (18, True, [18]),
    (20, False, [18]),
    (20, True, []),
    (1, False, [1] * N),
])
def test_len_and_batch_sizes(cache, batch_size, drop_last, sizes):
    loader = SlipstreamLoader(cache, batch_size=batch_size, shuffle=True, seed=3,
                              drop_last=drop_last, pipelines=crop_pipeline(), num_threads=2)
    assert len(loader) == len(sizes)
    # an epoch with no batch at all is surely a mistake: it warns (tests/test_resume.py)
    def epoch():
        return pytest.warns(UserWarning, match="no batches") if not sizes else nullcontext()

    with epoch():
        got = [len(b["path"]) for b in loader]
    assert got == sizes
    with epoch():
        assert all(len(b["label"]) == n for b, n in zip(loader, sizes, strict=True))


def test_invalid_arguments(cache):
    with pytest.raises(ValueError, match="batch_size"):
        SlipstreamLoader(cache, batch_size=0)
    with pytest.raises(ValueError, match="prefetch"):
        SlipstreamLoader(cache, batch_size=2, prefetch=1)


# -- order and epochs --------------------------------------------------------------------------
def test_unshuffled_order_is_the_cache_order(cache, index_of):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=1,
                              pipelines=crop_pipeline(), num_threads=2)
    for _ in range(2):  # every epoch
        order = np.concatenate(epoch_indices(loader, index_of))
        assert order.tolist() == list(range(N))


def test_each_epoch_covers_every_sample_once_in_a_new_order(cache, index_of):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=True, seed=5,
                              pipelines=crop_pipeline(), num_threads=2)
    orders = []
    for epoch in range(3):
        assert loader.epoch == epoch
        order = np.concatenate(epoch_indices(loader, index_of))
        assert sorted(order.tolist()) == list(range(N))
        orders.append(order.tolist())
    assert loader.epoch == 3
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert orders[0] != list(range(N))


def test_same_seed_same_batches_whatever_the_thread_count(cache):
    a = SlipstreamLoader(cache, batch_size=5, shuffle=True, seed=42,
                         pipelines=crop_pipeline(p=0.5), num_threads=1)
    b = SlipstreamLoader(cache, batch_size=5, shuffle=True, seed=42,
                         pipelines=crop_pipeline(p=0.5), num_threads=3)
    for _ in range(2):  # epochs 0 and 1
        assert_same_epochs(snapshot(a), snapshot(b))
    c = SlipstreamLoader(cache, batch_size=5, shuffle=True, seed=43,
                         pipelines=crop_pipeline(p=0.5), num_threads=3)
    a.set_epoch(0)
    assert [x["path"] for x in snapshot(a)] != [x["path"] for x in snapshot(c)]


def test_crops_differ_between_epochs(cache):
    loader = SlipstreamLoader(cache, batch_size=N, shuffle=False, seed=9,
                              pipelines=crop_pipeline(), num_threads=2)
    first, second = snapshot(loader), snapshot(loader)
    assert first[0]["path"] == second[0]["path"]
    assert not torch.equal(first[0]["image"], second[0]["image"])


def test_set_epoch_reproduces_an_epoch(cache):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=True, seed=11,
                              pipelines=crop_pipeline(p=0.5), num_threads=2)
    epochs = [snapshot(loader) for _ in range(3)]
    loader.set_epoch(1)
    assert loader.epoch == 1
    assert_same_epochs(snapshot(loader), epochs[1])
    assert loader.epoch == 2
    fresh = SlipstreamLoader(cache, batch_size=4, shuffle=True, seed=11,
                             pipelines=crop_pipeline(p=0.5), num_threads=2)
    fresh.set_epoch(2)
    assert_same_epochs(snapshot(fresh), epochs[2])


def test_seed_none_draws_and_records_an_int_seed(cache):
    a = SlipstreamLoader(cache, batch_size=6, shuffle=True, pipelines=crop_pipeline(),
                         num_threads=2)
    b = SlipstreamLoader(cache, batch_size=6, shuffle=True, pipelines=crop_pipeline(),
                         num_threads=2)
    assert isinstance(a.seed, int) and isinstance(b.seed, int)
    assert a.seed != b.seed
    again = SlipstreamLoader(cache, batch_size=6, shuffle=True, seed=a.seed,
                             pipelines=crop_pipeline(), num_threads=2)
    assert_same_epochs(snapshot(a), snapshot(again))


# -- presets and transforms --------------------------------------------------------------------
def _preset_pair(cache, preset, **kw):
    """The preset's batches, and the same preset's uint8 batches (same seed)."""
    make = lambda **k: SlipstreamLoader(cache, batch_size=7, shuffle=True, seed=21,  # noqa: E731
                                        pipelines=preset(32, **{**kw, **k}), num_threads=2)
    return snapshot(make()), snapshot(make(normalize=False, dtype=torch.uint8))


@pytest.mark.parametrize("preset", [supervised_train, supervised_val])
def test_presets_uint8_without_normalize(cache, preset):
    _, raw = _preset_pair(cache, preset)
    for b in raw:
        assert b["image"].dtype == torch.uint8
        assert tuple(b["image"].shape) == (len(b["path"]), 3, 32, 32)


@pytest.mark.parametrize("preset", [supervised_train, supervised_val])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 1e-2)])
def test_presets_normalize(cache, preset, dtype, atol):
    normed, raw = _preset_pair(cache, preset, dtype=dtype)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    for x, u in zip(normed, raw, strict=True):
        assert x["path"] == u["path"]
        assert x["image"].dtype == dtype
        assert tuple(x["image"].shape) == (len(x["path"]), 3, 32, 32)
        want = (u["image"].double() / 255 - mean) / std
        torch.testing.assert_close(x["image"].double(), want, atol=atol, rtol=0)


@pytest.mark.parametrize("preset", [supervised_train, supervised_val])
def test_presets_float_without_normalize_is_scaled_to_unit_range(cache, preset):
    scaled, raw = _preset_pair(cache, preset, normalize=False)  # float32, no normalisation
    for x, u in zip(scaled, raw, strict=True):
        assert x["image"].dtype == torch.float32
        assert tuple(x["image"].shape) == (len(x["path"]), 3, 32, 32)
        torch.testing.assert_close(x["image"], u["image"].float() / 255, atol=1e-6, rtol=0)


def test_random_horizontal_flip_flips_exactly_the_flagged_samples(cache, index_of):
    def run(p):
        return snapshot(SlipstreamLoader(cache, batch_size=5, shuffle=True, seed=13,
                                         pipelines=crop_pipeline(p=p), num_threads=2))

    half, none, every = run(0.5), run(0.0), run(1.0)
    flip = RandomHorizontalFlip(0.5)
    flipped = kept = 0
    for h, n, e in zip(half, none, every, strict=True):
        assert h["path"] == n["path"] == e["path"]
        assert torch.equal(e["image"], n["image"].flip(-1))
        indices = np.array([index_of[p] for p in h["path"]])
        flags = flip.flags(BatchContext(13, 0, indices))
        for k, flag in enumerate(flags):
            want = n["image"][k].flip(-1) if flag else n["image"][k]
            assert torch.equal(h["image"][k], want), (h["path"][k], bool(flag))
            flipped += bool(flag)
            kept += not flag
    assert flipped and kept  # both cases occurred
    # and the flip really changes the images (they are not left-right symmetric)
    assert not torch.equal(every[0]["image"], none[0]["image"])


# -- errors ------------------------------------------------------------------------------------
def test_worker_error_surfaces_as_sample_error(writable_folder, tmp_path, decode_threads):
    paths = sorted(p.relative_to(writable_folder).as_posix()
                   for p in writable_folder.rglob("*.jpg"))
    bad = paths[5]  # sample 5 in the cache's order (sorted classes, sorted files)
    data = (writable_folder / bad).read_bytes()
    (writable_folder / bad).write_bytes(data[: len(data) // 2])  # header intact, scan cut
    cache = SlipstreamDataset(writable_folder, cache_dir=tmp_path / "c").build_cache(
        progress=False)  # the build reads headers only: it succeeds
    assert cache[5]["path"] == bad

    good = []
    with SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                          pipelines=crop_pipeline(), num_threads=2) as loader:
        with pytest.raises(SampleError) as info:
            for batch in loader:
                good.append(batch["path"])
        assert decoding_stops(loader)  # nothing left decoding, right away
    assert good == [paths[0:2], paths[2:4]]  # the batches before the bad one came through
    err = info.value
    assert err.index == 5 and err.path == bad
    assert "sample 5" in str(err) and bad in str(err)
    assert isinstance(err, ValueError)


class _Boom(BatchTransform):
    """A batch transform that fails in the consumer thread (as a user's transform may)."""

    def __call__(self, batch, ctx):
        raise RuntimeError("boom in a batch transform")


def test_transform_error_in_consumer_stops_the_decode_threads(cache, decode_threads):
    """A batch transform that raises (in the consumer, not in a decode thread) ends the
    epoch: its decode threads stop at once, even while the exception (and its traceback,
    which references the iterator) is still held, as pytest or a notebook holds it."""
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0, num_threads=2,
                              pipelines={"image": [DecodeCenterCrop(16), ToTorchImage(),
                                                   _Boom()]})
    with pytest.raises(RuntimeError, match="boom") as info:
        for _ in loader:
            pass
    assert info.value is not None
    assert decoding_stops(loader)
    loader.close()  # the threads are the loader's: close() (or dropping it) stops them
    assert decode_threads() == []


def test_next_after_close_stops(cache, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=0,
                              pipelines=crop_pipeline(), num_threads=2)
    it = iter(loader)
    next(it)
    it.close()
    assert decoding_stops(loader)
    with pytest.raises(StopIteration):
        next(it)


def test_unknown_pipeline_field_is_a_clear_error(cache, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=4,
                              pipelines={"imgae": [DecodeCenterCrop(32)]}, num_threads=2)
    with pytest.raises(KeyError, match="imgae") as info:
        iter(loader)
    assert "image" in str(info.value)  # the fields it does have
    assert decode_threads() == []


@pytest.mark.parametrize("stages,match", [
    ([RandomHorizontalFlip()], "must start with a decoder"),
    ([], "must start with a decoder"),
])
def test_image_pipeline_must_start_with_a_decoder(cache, stages, match, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=4, pipelines={"image": stages}, num_threads=2)
    with pytest.raises(PipelineError, match=match):
        iter(loader)
    assert decode_threads() == []


def _flip_rows(batch: torch.Tensor) -> torch.Tensor:
    """A plain function of the batch alone, as torch and torchvision transforms are."""
    return torch.flip(batch, dims=[2])


@pytest.mark.parametrize("stages,match", [
    ([ToTorchImage(), DecodeCenterCrop(32)], r"stage 1: DecodeCenterCrop.* is a decoder"),
    ([DecodeCenterCrop(32), DecodeOnly()], r"stage 1: DecodeOnly.* a decoder can only be"),
    ([DecodeCenterCrop(32), "not callable"], r"stage 1: 'not callable' is not a batch "
                                             r"transform .*; remove it"),
    ([DecodeCenterCrop(32), ToTorchImage(), _flip_rows],
     r"pipelines\['image'\] stage 2: <function _flip_rows.*not a batch transform .*"
     r"wrap it as slipstream\.transforms\.Lambda\(_flip_rows\)"),
    ([DecodeCenterCrop(32), torch.nn.Identity()], r"stage 1: Identity\(\) is not a batch "
                                                  r"transform.*Lambda\(Identity\)"),
], ids=["decoder-late", "two-decoders", "string", "function", "module"])
def test_a_stage_outside_the_contract_fails_when_the_loader_is_made(cache, stages, match):
    """Not at the first batch, and not as an obscure error from inside the stage."""
    with pytest.raises(PipelineError, match=match) as info:
        SlipstreamLoader(cache, batch_size=4, pipelines={"image": stages}, num_threads=2)
    assert isinstance(info.value, TypeError)


def test_multicrop_checks_its_stages_too():
    with pytest.raises(PipelineError, match=r"MultiCropPipeline\['b'\] stage 1: .*Lambda\(relu\)"):
        MultiCropPipeline({"a": [ToTorchImage()], "b": [ToTorchImage(), torch.relu]})


def test_lambda_calls_a_plain_function_with_the_batch(cache):
    def make(*extra):
        return SlipstreamLoader(cache, batch_size=5, shuffle=False, seed=0, num_threads=2,
                                pipelines={"image": [DecodeCenterCrop(24), ToTorchImage(),
                                                     *extra]})

    plain = [b["image"].clone() for b in make()]
    wrapped = make(Lambda(_flip_rows), Lambda(torch.nn.Flatten(1)))
    assert "Lambda(_flip_rows)" in repr(wrapped._pipelines_arg["image"])
    got = [b["image"] for b in wrapped]
    assert [g.shape for g in got] == [(len(p), 3 * 24 * 24) for p in plain]
    for g, p in zip(got, plain, strict=True):
        assert torch.equal(g, torch.flip(p, dims=[2]).flatten(1))


def test_lambda_refuses_what_is_not_a_function_and_a_none_result(cache):
    with pytest.raises(PipelineError, match="Lambda needs a callable"):
        Lambda("x")
    loader = SlipstreamLoader(cache, batch_size=4, num_threads=1,
                              pipelines={"image": [DecodeCenterCrop(24), Lambda(print)]})
    with pytest.raises(PipelineError, match=r"Lambda\(print\) returned None"):
        next(iter(loader))


# -- threads -----------------------------------------------------------------------------------
def test_break_mid_epoch_stops_decoding_and_dropping_the_loader_stops_its_threads(
        cache, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=True, seed=0,
                              pipelines=crop_pipeline(), num_threads=3)
    for i, _ in enumerate(loader):
        assert decode_threads()  # decoding ahead while we consume
        if i == 1:
            break
    assert decoding_stops(loader)
    del loader
    assert decode_threads() == []


def test_deleting_loader_and_iterator_mid_epoch_leaves_no_decode_threads(cache, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=True, seed=0,
                              pipelines=crop_pipeline(), num_threads=3)
    it = iter(loader)
    next(it)
    assert decode_threads()
    del it, loader
    assert decode_threads() == []


def test_iterator_dropped_before_first_batch_stops_decoding(cache, decode_threads):
    loader = SlipstreamLoader(cache, batch_size=2, pipelines=crop_pipeline(), num_threads=2)
    it = iter(loader)  # decoding starts at once
    del it
    assert decoding_stops(loader)
    del loader
    assert decode_threads() == []


def test_decode_threads_live_as_long_as_the_loader(cache, decode_threads):
    """Started once, kept from epoch to epoch, stopped when the loader goes."""
    loader = SlipstreamLoader(cache, batch_size=4, pipelines=crop_pipeline(), num_threads=2)
    it = iter(loader)
    assert len(list(it)) == len(loader)
    first = decode_threads()
    assert len(first) == 2
    assert len(list(loader)) == len(loader)
    assert decode_threads() == first  # the same threads, not new ones
    del it, loader
    assert decode_threads() == []


def test_next_epoch_is_decoding_before_this_one_ends(cache):
    """The last batches of an epoch are consumed while the next epoch's first ones decode;
    the next iteration starts from them."""
    loader = SlipstreamLoader(cache, batch_size=4, seed=3, pipelines=crop_pipeline(),
                              num_threads=2, prefetch=3)
    assert len(list(loader)) == len(loader)
    handover = loader._handover
    assert handover is not None and handover.key[0] == 1 and handover.submitted == 2
    jobs = [job for job, *_ in handover.inflight.values()]
    it = iter(loader)
    assert loader._handover is None
    assert [it.inflight[b][0] for b in range(2)] == jobs  # adopted, not decoded again
    del it


@pytest.mark.parametrize("prefetch", [2, 3, 5])
def test_epoch_boundary_prefetch_keeps_every_batch(cache, prefetch):
    """Epochs run back to back (the next one's first batches decoding early) give exactly
    the batches of epochs run one by one in fresh loaders; an epoch chosen with set_epoch
    after the boundary (so the early batches are for the wrong epoch) too."""
    kw = dict(batch_size=3, seed=5, pipelines=crop_pipeline(p=0.5), num_threads=2,
              prefetch=prefetch)
    loader = SlipstreamLoader(cache, **kw)
    back_to_back = [snapshot(loader) for _ in range(3)]
    loader.set_epoch(7)  # not the epoch that was prefetched
    jumped = snapshot(loader)
    for epoch, got in [(0, back_to_back[0]), (1, back_to_back[1]), (2, back_to_back[2]),
                       (7, jumped)]:
        fresh = SlipstreamLoader(cache, **kw)
        fresh.set_epoch(epoch)
        want = snapshot(fresh)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])
            assert torch.equal(a["label"], b["label"])


# -- datasets and caches -----------------------------------------------------------------------
def test_cache_object_and_dataset_give_the_same_batches(cache, image_folder):
    ds = SlipstreamDataset(image_folder, cache_dir=cache.path.parent)
    from_ds = SlipstreamLoader(ds, batch_size=5, seed=4, pipelines=crop_pipeline(p=0.5),
                               num_threads=2)
    from_cache = SlipstreamLoader(cache, batch_size=5, seed=4, pipelines=crop_pipeline(p=0.5),
                                  num_threads=2)
    assert from_cache.cache is cache
    assert_same_epochs(snapshot(from_ds), snapshot(from_cache))
    assert from_ds.cache.path == cache.path  # found, not rebuilt elsewhere


def test_first_iteration_builds_the_cache_and_a_second_loader_finds_it(image_folder, tmp_path):
    cache_dir = tmp_path / "caches"
    ds = SlipstreamDataset(image_folder, cache_dir=cache_dir)
    assert ds.find_cache() is None
    loader = SlipstreamLoader(ds, batch_size=6, seed=0, pipelines=crop_pipeline(),
                              num_threads=2, progress=False)
    batches = snapshot(loader)
    assert sum(len(b["path"]) for b in batches) == N
    built = ds.find_cache()
    assert built is not None and built.path == loader.cache.path
    assert built.path.parent == cache_dir
    stamp = (built.path / "zarr.json").stat().st_mtime_ns

    again = SlipstreamLoader(SlipstreamDataset(image_folder, cache_dir=cache_dir), batch_size=6,
                             seed=0, pipelines=crop_pipeline(), num_threads=2, progress=False)
    assert_same_epochs(snapshot(again), batches)
    assert again.cache.path == built.path
    assert (built.path / "zarr.json").stat().st_mtime_ns == stamp  # not rebuilt


# -- memory ------------------------------------------------------------------------------------
def test_batch_buffers_are_bounded_by_prefetch(cache):
    """uint8 CPU batches are views of the loader's slot buffers: within an epoch at most
    ``prefetch`` distinct buffers are used, and at any time at most ``prefetch`` of them
    are alive, however many epochs run (the loader reuses them from epoch to epoch)."""
    prefetch = 3
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=True, seed=0, prefetch=prefetch,
                              pipelines={"image": [DecodeCenterCrop(16), ToTorchImage()]},
                              num_threads=2)
    buffers: list[weakref.ref] = []
    for _ in range(4):
        pointers = set()
        for batch in loader:
            img = batch["image"]
            base = img._base
            assert base is not None and base.data_ptr() == img.data_ptr()  # a view, no copy
            pointers.add(img.data_ptr())
            if not any(ref() is base for ref in buffers):
                buffers.append(weakref.ref(base))
            del img, base
            alive = sum(ref() is not None for ref in buffers)
            assert alive <= prefetch, f"{alive} batch buffers alive"
        assert len(pointers) <= prefetch
        del batch
    assert len(buffers) <= prefetch  # the same buffers serve every epoch
    del loader
    gc.collect()
    assert sum(ref() is not None for ref in buffers) == 0


def _cache_with_truncated_samples(folder: Path, tmp_path: Path,
                                  bad: list[int]) -> tuple[Cache, list[str]]:
    """A cache of ``folder`` (8 JPEGs) whose samples ``bad`` have their scans cut in half
    (headers intact, so the build, which reads headers only, succeeds); and its paths."""
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    for i in bad:
        data = (folder / paths[i]).read_bytes()
        (folder / paths[i]).write_bytes(data[: len(data) // 2])
    cache = SlipstreamDataset(folder, cache_dir=tmp_path / "c").build_cache(progress=False)
    assert [cache[i]["path"] for i in range(len(cache))] == paths
    return cache, paths


def test_on_error_skip_leaves_out_bad_samples_and_reports_them(writable_folder, tmp_path,
                                                                decode_threads, caplog):
    """``on_error="skip"``: the bad samples are missing from their batches while the others
    keep their own labels, paths and pixels; each is named in a warning and in
    ``loader.skipped``, the epoch ends with a count, and ``skipped_total`` adds up epochs."""
    bad = [2, 3, 6]
    cache, paths = _cache_with_truncated_samples(writable_folder, tmp_path, bad)
    pipelines = {"image": [DecodeRandomResizedCrop(16), ToTorchImage()]}
    loader = SlipstreamLoader(cache, batch_size=3, shuffle=False, seed=0, num_threads=2,
                              pipelines=pipelines, on_error="skip")
    with caplog.at_level("WARNING", logger="slipstream.loader"):
        batches = [{"image": b["image"].clone(), "label": b["label"].clone(),
                    "path": list(b["path"])} for b in loader]
    assert decoding_stops(loader)
    assert [b["path"] for b in batches] == [paths[0:2], paths[4:6], paths[7:8]]
    for b in batches:
        assert b["image"].shape[0] == b["label"].shape[0] == len(b["path"])
        for k, p in enumerate(b["path"]):
            assert int(b["label"][k]) == cache[paths.index(p)]["label"]
    # pixels (and random crops, keyed by sample index): as each sample decoded on its own
    alone = {b["path"][0]: b["image"][0].clone()
             for b in SlipstreamLoader(cache, batch_size=1, shuffle=False, seed=0,
                                       num_threads=1, pipelines=pipelines, on_error="skip")}
    assert sorted(alone) == sorted(p for b in batches for p in b["path"])
    for b in batches:
        for k, p in enumerate(b["path"]):
            assert torch.equal(b["image"][k], alone[p]), p
    assert [e.index for e in loader.skipped] == bad
    assert [e.path for e in loader.skipped] == [paths[i] for i in bad]
    assert all(isinstance(e, SampleError) for e in loader.skipped)
    assert loader.skipped_total == 3
    messages = [r.getMessage() for r in caplog.records]
    for i in bad:
        assert any(paths[i] in m for m in messages), paths[i]
    assert any("left out 3 sample" in m for m in messages)
    list(loader)  # a second epoch: skipped lists this epoch's, the total grows
    assert len(loader.skipped) == 3 and loader.skipped_total == 6


def test_on_error_skip_drops_a_batch_whose_samples_all_fail(writable_folder, tmp_path):
    cache, paths = _cache_with_truncated_samples(writable_folder, tmp_path, [0, 1])
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0, num_threads=2,
                              pipelines=crop_pipeline(), on_error="skip")
    assert [list(b["path"]) for b in loader] == [paths[2:4], paths[4:6], paths[6:8]]
    assert loader.skipped_total == 2


def test_on_error_skip_keeps_views_and_fields_aligned(writable_folder, tmp_path):
    from slipstream.pipelines import simclr

    cache, paths = _cache_with_truncated_samples(writable_folder, tmp_path, [1])
    loader = SlipstreamLoader(cache, batch_size=3, shuffle=False, seed=0, num_threads=2,
                              pipelines=simclr(16), on_error="skip")
    first = next(iter(loader))
    views = [v for v in first.values() if isinstance(v, torch.Tensor) and v.dim() == 4]
    assert len(views) == 2 and all(v.shape[0] == 2 for v in views)
    assert first["path"] == [paths[0], paths[2]] and first["label"].shape == (2,)


def test_on_error_raise_is_the_default_and_other_values_are_refused(writable_folder,
                                                                     tmp_path):
    cache, _ = _cache_with_truncated_samples(writable_folder, tmp_path, [1])
    with pytest.raises(SampleError):
        list(SlipstreamLoader(cache, batch_size=3, shuffle=False, num_threads=1,
                              pipelines=crop_pipeline()))
    with pytest.raises(ValueError, match="on_error must be one of"):
        SlipstreamLoader(cache, on_error="ignore")


def test_string_fields_are_read_in_one_call_as_the_cache_holds_them(writable_folder, tmp_path):
    """Paths (a str field) come out of the batch exactly as ``Column.values`` reads them,
    non-ASCII names included."""
    victim = sorted(writable_folder.rglob("*.jpg"))[3]
    victim.rename(victim.with_name("çafé-ünï 名前.jpg"))
    cache = SlipstreamDataset(writable_folder, cache_dir=tmp_path / "c").build_cache(
        progress=False)
    loader = SlipstreamLoader(cache, batch_size=5, shuffle=True, seed=2, num_threads=2,
                              pipelines=crop_pipeline())
    col = cache.column("path")
    order = loader._sampler().batches(0)
    seen = []
    for batch, indices in zip(loader, order, strict=True):
        assert batch["path"] == col.values(indices)
        seen += batch["path"]
    assert any("名前" in p for p in seen)
