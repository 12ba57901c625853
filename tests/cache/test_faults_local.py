"""Local faults: the disk filling up during a build, a cache file changed under a running
loader, and SIGKILL of a process that is building or loading. Real filesystems (a small
tmpfs), real resource limits and real signals; nothing is mocked."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from slipstream import DecodeCenterCrop, SlipstreamDataset, SlipstreamLoader, ToTorchImage, build_cache
from slipstream.cache.arrays import file_stamp
from slipstream.errors import CacheCorruptError, CacheWriteError, SlipstreamError
from slipstream.sample_data import make_image_folder

from ..helpers import SLOW_IMAGEFOLDER_READS, sigkill

PIPELINES = {"image": [DecodeCenterCrop(32), ToTorchImage()]}


def epoch(loader: SlipstreamLoader) -> list[tuple[str, int, torch.Tensor]]:
    """One epoch as (path, label, image) per sample, copied out of the loader's buffers."""
    return [(p, int(lab), img.clone())
            for b in loader for p, lab, img in zip(b["path"], b["label"], b["image"])]


def assert_epochs_equal(got, want) -> None:
    assert [(p, lab) for p, lab, _ in got] == [(p, lab) for p, lab, _ in want]
    for (p, _, a), (_, _, b) in zip(got, want):
        assert torch.equal(a, b), p


def leftovers(cache_root: Path) -> list[Path]:
    """Directories other than published caches: private builds, moved-aside caches."""
    tmp = cache_root / ".tmp"
    return [p for p in tmp.iterdir() if p.is_dir()] if tmp.is_dir() else []


# -- the disk filling up --------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs of its own (needs CAP_SYS_ADMIN: root in the CI container)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); "
                    f"test_file_size_limit_during_build covers the same path")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 3.5 MB of JPEGs: more than the small disk holds."""
    return make_image_folder(tmp_path_factory.mktemp("big") / "data", num_classes=2,
                             images_per_class=24, size=(300, 400), quality=95, seed=3)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jpg"))


def test_disk_full_during_build_publishes_nothing_and_the_next_build_recovers(
        big_folder, small_disk):
    assert folder_bytes(big_folder) > 2 * 2**20  # the build cannot fit
    cache_root = small_disk / "caches"
    ds = SlipstreamDataset(big_folder, cache_dir=cache_root)
    with pytest.raises(CacheWriteError) as info:
        ds.build_cache(progress=False)
    err = info.value
    assert err.errno == errno.ENOSPC
    assert isinstance(err, OSError) and isinstance(err, SlipstreamError)
    msg = str(err)
    assert str(cache_root) in msg and "No space left" in msg and "cache_dir" in msg
    assert str(big_folder) in msg  # names what was being built
    # nothing published, nothing half-written left behind, the space is free again
    assert ds.find_cache() is None
    assert [p.name for p in cache_root.iterdir() if p.name != ".tmp"] == []
    assert leftovers(cache_root) == []
    assert shutil.disk_usage(small_disk).used < 64 * 1024
    # with room (a smaller dataset on the same disk), the next build succeeds and verifies
    small = make_image_folder(small_disk.parent / "small", num_classes=2, images_per_class=3,
                              size=(64, 80), seed=4)
    cache = SlipstreamDataset(small, cache_dir=cache_root).build_cache(progress=False)
    assert cache.verify().ok and len(cache) == 6


def test_disk_full_while_deriving_yuv420_leaves_the_cache_as_it_was(tmp_path, small_disk):
    """Deriving YUV420 (about 3x the JPEG bytes) into a disk that fills: the stored cache
    is untouched and still verifies; nothing half-derived is listed."""
    folder = make_image_folder(tmp_path / "data", num_classes=2, images_per_class=10,
                               size=(300, 400), quality=80, seed=5)
    cache_root = small_disk / "caches"
    ds = SlipstreamDataset(folder, cache_dir=cache_root)
    cache = ds.build_cache(progress=False)
    assert cache.image_formats == ("jpeg",)
    with pytest.raises(CacheWriteError, match="No space left") as info:
        ds.build_cache(image_format="yuv420", progress=False)
    assert "yuv420" in str(info.value)
    cache.refresh()
    assert cache.image_formats == ("jpeg",) and cache.verify().ok
    assert leftovers(cache_root) == []
    assert not (cache.path / "image" / "yuv420").exists()


_FSIZE_BUILD = textwrap.dedent("""
    import resource, signal, sys
    from slipstream import SlipstreamDataset
    from slipstream.errors import CacheWriteError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
    try:
        SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2]).build_cache(progress=False)
    except CacheWriteError as exc:
        print("CacheWriteError", exc.errno, exc)
        sys.exit(3)
""")


def test_file_size_limit_during_build(big_folder, tmp_path):
    """The same failure path without a mount: a process whose files may not exceed 64 KB
    (RLIMIT_FSIZE) hits EFBIG writing a heap chunk."""
    cache_root = tmp_path / "caches"
    done = subprocess.run([sys.executable, "-c", _FSIZE_BUILD, str(big_folder),
                           str(cache_root), str(64 * 1024)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"CacheWriteError {errno.EFBIG}" in done.stdout
    assert "File too large" in done.stdout
    ds = SlipstreamDataset(big_folder, cache_dir=cache_root)
    assert ds.find_cache() is None and leftovers(cache_root) == []
    assert ds.build_cache(progress=False).verify().ok  # without the limit: fine


# -- a cache changed under a running loader ---------------------------------------------------
@pytest.fixture
def chunked(image_folder, cache_root):
    """The 18-image folder's cache with small heap chunks (a few images each), written in
    index order (one read thread: a parallel build writes in arrival order)."""
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    cache = build_cache(ds.source, ds.store, progress=False, heap_chunk_bytes=20000,
                        num_threads=1)
    heap = cache.column("image").heap
    assert len(heap._views) >= 4
    return ds, cache


def last_chunk_of(cache, index: int) -> Path:
    heap = cache.column("image").heap
    return heap.chunk_path(int(heap.offsets[index]) // heap.chunk_bytes)


def chunks_of(cache, indices) -> set[Path]:
    heap = cache.column("image").heap
    out = set()
    for i in indices:
        start = int(heap.offsets[i])
        end = start + int(heap.sizes[i]) - 1
        out |= {heap.chunk_path(c) for c in range(start // heap.chunk_bytes,
                                                     end // heap.chunk_bytes + 1)}
    return out


@pytest.mark.parametrize("damage", ["rewrite", "truncate"])
def test_cache_file_changed_under_a_running_loader(chunked, damage, cache_root):
    ds, cache = chunked
    reference = epoch(SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                                       pipelines=PIPELINES, num_threads=2, prefetch=2))
    target = last_chunk_of(cache, 17)
    # batches 0..2 (samples 0..5) are submitted before the damage; none may read it
    assert target not in chunks_of(cache, range(6))
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                              pipelines=PIPELINES, num_threads=2, prefetch=2)
    got = []
    with pytest.raises(CacheCorruptError) as info:
        for k, b in enumerate(loader):
            got.extend((p, int(lab), img.clone())
                       for p, lab, img in zip(b["path"], b["label"], b["image"]))
            if k == 0:
                data = target.read_bytes()
                if damage == "rewrite":  # same size, other bytes: caught by the checksum
                    target.write_bytes(bytes(reversed(data)))
                else:
                    target.write_bytes(data[: len(data) // 3])
    msg = str(info.value)
    assert target.name in msg and "changed while it was being read" in msg
    assert "moved aside" in msg
    # every batch handed out before the damage was seen is the right data
    assert got and len(got) < 18
    assert_epochs_equal(got, reference[: len(got)])
    # the damaged cache is out of the way; the next run builds a fresh one and recovers
    assert ds.find_cache() is None
    fresh = SlipstreamLoader(ds, batch_size=2, shuffle=False, seed=0, pipelines=PIPELINES,
                             num_threads=2, progress=False)
    assert_epochs_equal(epoch(fresh), reference)
    assert fresh.cache.verify().ok


def test_touched_but_unchanged_cache_file_is_accepted(chunked):
    _, cache = chunked
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                              pipelines=PIPELINES, num_threads=2, prefetch=2)
    reference = epoch(loader)
    target = last_chunk_of(cache, 17)
    got = []
    for k, b in enumerate(loader):
        got.extend((p, int(lab), img.clone())
                   for p, lab, img in zip(b["path"], b["label"], b["image"]))
        if k == 0:
            # rewritten in place with the same bytes, a second later: re-hashed, accepted
            target.write_bytes(target.read_bytes())
            os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert_epochs_equal(got, reference)
    assert cache.path.is_dir() and cache.verify().ok
    heap = cache.column("image").heap
    chunk = int(target.name)
    assert heap._stamps[chunk] == file_stamp(target)  # re-hashed and taken as unchanged


def test_cache_replaced_under_a_running_loader_keeps_serving_the_old_one(chunked, cache_root):
    """Deleting (or atomically replacing) a whole cache while a loader reads it: the loader's
    maps keep the old files alive, so the epoch completes with the old, correct data."""
    ds, cache = chunked
    reference = epoch(SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                                       pipelines=PIPELINES, num_threads=2, prefetch=2))
    loader = SlipstreamLoader(cache, batch_size=2, shuffle=False, seed=0,
                              pipelines=PIPELINES, num_threads=2, prefetch=2)
    got = []
    for k, b in enumerate(loader):
        got.extend((p, int(lab), img.clone())
                   for p, lab, img in zip(b["path"], b["label"], b["image"]))
        if k == 0:
            shutil.rmtree(cache.path)
    assert_epochs_equal(got, reference)
    assert ds.find_cache() is None
    rebuilt = SlipstreamLoader(ds, batch_size=2, shuffle=False, seed=0, pipelines=PIPELINES,
                               num_threads=2, progress=False)
    assert_epochs_equal(epoch(rebuilt), reference)


# -- SIGKILL of a process that builds, or loads ----------------------------------------------
_LOADER_CHILD = textwrap.dedent("""
    import sys
    from slipstream import SlipstreamDataset, SlipstreamLoader, DecodeCenterCrop, ToTorchImage
    ds = SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2])
    loader = SlipstreamLoader(ds, batch_size=2, num_threads=2, progress=False,
                              pipelines={"image": [DecodeCenterCrop(32), ToTorchImage()]})
    while True:
        for batch in loader:
            print("batch", flush=True)
""")


@pytest.mark.parametrize("phase", ["build", "epoch"])
def test_sigkill_of_a_loading_process_then_the_next_run_recovers(image_folder, cache_root,
                                                                 phase):
    # slow reads while building, so that the build can be killed midway
    script = (SLOW_IMAGEFOLDER_READS if phase == "build" else "") + _LOADER_CHILD
    child = subprocess.Popen([sys.executable, "-c", script, str(image_folder),
                              str(cache_root)], stdout=subprocess.PIPE, text=True)
    try:
        if phase == "build":
            key = SlipstreamDataset(image_folder, cache_dir=cache_root).cache_key()
            deadline = time.monotonic() + 60
            while not list((cache_root / ".tmp").glob(f"{key}.*/image/heap/c/*")):
                assert child.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        else:
            for _ in range(20):  # well into the epochs: several epochs of 9 batches
                assert child.stdout.readline() == "batch\n"
    finally:
        returncode = sigkill(child)
    assert returncode == -signal.SIGKILL
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    if phase == "build":
        assert ds.find_cache() is None
    loader = SlipstreamLoader(ds, batch_size=2, shuffle=False, seed=0, pipelines=PIPELINES,
                              num_threads=2, progress=False)
    got = epoch(loader)
    assert len(got) == 18 and loader.cache.verify().ok
    want = folder_labels(image_folder)
    assert {p: lab for p, lab, _ in got} == want
    assert not [p for p in leftovers(cache_root) if p.name.startswith(ds.cache_key())]


def folder_labels(root: Path) -> dict[str, int]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    return {p.relative_to(root).as_posix(): classes.index(p.parent.name)
            for p in root.rglob("*.jpg")}


def test_write_errors_other_than_no_room_are_not_relabelled(tmp_path):
    """Only "no room" errnos become CacheWriteError; others pass through unchanged."""
    from slipstream.cache._space import out_of_space_errors

    with pytest.raises(PermissionError), out_of_space_errors("testing", tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    with pytest.raises(CacheWriteError) as info, out_of_space_errors("testing", tmp_path):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "x"))
    assert info.value.errno == errno.EDQUOT and "quota" in str(info.value).lower()
