"""A cache is never half-written where a reader could take it for complete; damage is caught."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from slipstream import SlipstreamDataset
from slipstream.cache import Cache
from slipstream.cache.layout import MANIFEST_NAME
from slipstream.cli import main as cli_main
from slipstream.errors import CacheFormatError, CacheNotFoundError
from slipstream.stores import LocalStore

from ..helpers import SLOW_IMAGEFOLDER_READS, folder_expectation, rewrite_cache_file, sigkill

# Builds in a child process with slow reads, so the parent can kill it mid-build.
_SLOW_BUILD = SLOW_IMAGEFOLDER_READS + textwrap.dedent("""
    import sys
    from slipstream import SlipstreamDataset
    ds = SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2])
    from slipstream import build_cache
    build_cache(ds.source, ds.store, progress=False, num_threads=1, heap_chunk_bytes=20000)
""")


def test_sigkill_midway_leaves_nothing_a_reader_takes_for_a_cache(image_folder, cache_root):
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    key = ds.cache_key()
    child = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(image_folder),
                              str(cache_root)])
    try:
        deadline = time.monotonic() + 60
        # wait until the build has written some heap chunks, then kill it
        while time.monotonic() < deadline:
            chunks = list((cache_root / ".tmp").glob(f"{key}.*/image/heap/c/*"))
            if len(chunks) >= 2:
                break
            assert child.poll() is None, "the build finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the child build never started writing")
    finally:
        returncode = sigkill(child)
    assert returncode == -signal.SIGKILL
    # the half build exists only as a private directory...
    leftovers = [p for p in (cache_root / ".tmp").glob(f"{key}.*") if p.is_dir()]
    assert leftovers, "expected the killed build's private directory"
    # ...which no reader takes for a cache
    store = LocalStore(cache_root)
    assert not store.has(key) and store.keys() == []
    assert ds.find_cache() is None
    with pytest.raises(CacheNotFoundError):
        Cache(cache_root / key)
    for d in leftovers:
        with pytest.raises(CacheNotFoundError):
            Cache(d)
    # the next build succeeds, cleans up, and is complete
    cache = ds.build_cache(progress=False)
    assert cache.verify().ok
    assert len(cache) == len(folder_expectation(image_folder))
    assert not any(p.name.startswith(key) and p.is_dir() for p in (cache_root / ".tmp").iterdir())


def test_flipped_byte_is_caught_by_verify(image_folder, cache_root, capsys):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    assert cache.verify().ok
    chunk = cache.path / "image" / "heap" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    report = cache.verify()
    assert not report.ok
    assert report.problems == ["image/heap/c/0: sha256 mismatch (contents changed)"]
    assert cli_main(["verify", str(cache.path), "-q"]) == 1
    assert "image/heap/c/0" in capsys.readouterr().err


def test_verify_reports_missing_truncated_and_stray_files(image_folder, cache_root):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    (cache.path / "label" / "c" / "0").unlink()
    sizes = cache.path / "image" / "sizes" / "c" / "0"
    sizes.write_bytes(sizes.read_bytes()[:-4])
    (cache.path / "stray.bin").write_bytes(b"x")
    problems = cache.verify().problems
    assert "label/c/0: missing" in problems
    assert any(p.startswith("image/sizes/c/0: ") and "bytes" in p for p in problems)
    assert "stray.bin: not listed in the manifest" in problems


def _rewrite_version(cache_path, version):
    meta_path = cache_path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    if version is None:
        del meta["attributes"]["slipstream"]["format_version"]
    else:
        meta["attributes"]["slipstream"]["format_version"] = version
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("version,match", [
    (99, "newer than"), (None, "no integer format_version"), ("1", "no integer format_version"),
    (0, "unknown cache format version"),
])
def test_unreadable_format_versions_are_refused(image_folder, cache_root, version, match):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    _rewrite_version(cache.path, version)
    with pytest.raises(CacheFormatError, match=match):
        Cache(cache.path)


def test_directory_without_manifest_is_not_a_cache_and_does_not_block_a_build(
        image_folder, cache_root):
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    cache = ds.build_cache(progress=False)
    meta = json.loads((cache.path / MANIFEST_NAME).read_text())
    del meta["attributes"]["slipstream"]["files"]  # as if the last write never happened
    (cache.path / MANIFEST_NAME).write_text(json.dumps(meta))
    with pytest.raises(CacheNotFoundError, match="did not finish"):
        Cache(cache.path)
    assert LocalStore(cache_root).keys() == [] and ds.find_cache() is None
    rebuilt = ds.build_cache(progress=False)
    assert rebuilt.path == cache.path and rebuilt.verify().ok
    os.unlink(cache.path / MANIFEST_NAME)
    with pytest.raises(CacheNotFoundError, match="no zarr.json"):
        Cache(cache.path)


def test_stale_build_from_a_live_process_is_kept(cache_root):
    store = LocalStore(cache_root)
    mine = store.new_build_dir("k" * 40)  # this process is alive: not stale
    assert store.clean_stale_builds() == [] and mine.exists()


_BUILD_AND_REPORT = textwrap.dedent("""
    import sys, time
    from slipstream import SlipstreamDataset
    from slipstream.sources.imagefolder import ImageFolderSource
    calls = 0
    real_read = ImageFolderSource.read
    def counting_read(self, i):
        global calls
        calls += 1
        time.sleep(0.01)
        return real_read(self, i)
    ImageFolderSource.read = counting_read
    cache = SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2]).build_cache(progress=False)
    print(cache.path, calls)
""")


def test_concurrent_builders_build_once(image_folder, cache_root):
    """Two processes wanting the same cache: one builds, the other waits and reuses it."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_AND_REPORT, str(image_folder),
                               str(cache_root)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0][0] == outputs[1][0]  # same cache
    reads = sorted(int(o[1]) for o in outputs)
    assert reads == [0, len(folder_expectation(image_folder))]  # read the source once
    assert Cache(outputs[0][0]).verify().ok


@pytest.mark.parametrize("array,value,match", [
    ("heights", 60000, "claims 60000x"),
    ("codecs", 9, "unknown image codec 9"),
])
def test_image_tables_no_build_writes_are_refused_on_open(image_folder, cache_root, array,
                                                          value, match):
    """Decode buffers are sized from the stored heights and widths: a damaged or hostile
    cache claiming a huge image (or an unknown codec) is refused before any decode."""
    import numpy as np

    from slipstream.errors import CacheCorruptError

    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    rel = f"image/{array}/c/0"
    dtype = {"heights": "<u4", "codecs": "u1"}[array]
    values = np.fromfile(cache.path / rel, dtype=dtype)
    values[3] = value
    rewrite_cache_file(cache.path, rel, values.tobytes())
    if array == "heights":  # make it also wide, so the pixel count is beyond the limit
        w = np.fromfile(cache.path / "image/widths/c/0", dtype="<u4")
        w[3] = 60000
        rewrite_cache_file(cache.path, "image/widths/c/0", w.tobytes())
    with pytest.raises(CacheCorruptError, match=match):
        Cache(cache.path).column("image")


# -- a bit flipped at rest is caught before it trains a model --------------------------------
def _flip_bit(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _one_epoch(cache):
    from slipstream import DecodeCenterCrop, SlipstreamLoader, ToTorchImage

    loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=0, num_threads=2,
                              pipelines={"image": [DecodeCenterCrop(16), ToTorchImage()]})
    return [int(v) for b in loader for v in b["label"]]


def test_a_flipped_bit_in_a_label_chunk_is_refused(image_folder, cache_root):
    """Small columns are read whole at open: their checksum is checked then (before: the
    flipped label was served)."""
    from slipstream.errors import CacheCorruptError

    path = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False).path
    _flip_bit(path / "label" / "c" / "0", 8 * 3)  # sample 3's label
    with pytest.raises(CacheCorruptError, match=r"label/c/0 does not match its sha256") as err:
        _one_epoch(Cache(path))
    assert "slipstream verify" in str(err.value)


def test_a_flipped_bit_in_an_image_chunk_is_refused_before_decoding(image_folder, cache_root):
    """A heap chunk is hashed (as mapped) the first time a batch touches it. The bit is
    flipped in the middle of an image's entropy-coded data, where a decoder would carry
    on with wrong pixels; the loader refuses the chunk instead, naming the file."""
    from slipstream.errors import CacheCorruptError

    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    col = cache.column("image")
    middle = int(col.heap.offsets[5]) + int(col.sizes[5]) // 2
    path = cache.path
    cache.close()
    _flip_bit(path / "image" / "heap" / "c" / "0", middle)
    with pytest.raises(CacheCorruptError, match=r"image/heap/c/0 does not match its sha256"):
        _one_epoch(Cache(path))


def test_chunk_hashing_can_be_turned_off(image_folder, cache_root, monkeypatch):
    """``SLIPSTREAM_CHECK_CHUNKS=0`` skips the first-touch hash (the small columns are still
    checked): the damaged image then reaches the decoder."""
    path = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False).path
    want = _one_epoch(Cache(path))
    _flip_bit(path / "image" / "heap" / "c" / "0", 1000)
    monkeypatch.setenv("SLIPSTREAM_CHECK_CHUNKS", "0")
    try:
        assert _one_epoch(Cache(path)) == want
    except Exception as exc:  # the flipped bit may also break the JPEG: a SampleError
        from slipstream.errors import SampleError

        assert isinstance(exc, SampleError), exc


_HOLD_LOCK_AND_STOP = textwrap.dedent("""
    import os, signal, sys
    from slipstream._filelock import FileLock
    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # a builder suspended (Ctrl-Z) while holding it
""")


def test_a_builder_waiting_on_a_stopped_builder_says_who_holds_the_lock(image_folder,
                                                                        cache_root, caplog):
    import logging
    import socket

    from slipstream.errors import CacheError

    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    lock_path = ds.store.tmp_root / f"{ds.cache_key()}.build-lock"
    lock_path.parent.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK_AND_STOP, str(lock_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        from slipstream import build_cache
        from slipstream._filelock import _process_state

        deadline = time.monotonic() + 30
        while _process_state(child.pid) != "T":  # it stops itself just after printing
            assert time.monotonic() < deadline, "the child never stopped"
            time.sleep(0.01)

        with caplog.at_level(logging.WARNING, logger="slipstream.lock"), \
                pytest.raises(CacheError, match="timed out") as err:
            build_cache(ds.source, ds.store, progress=False, lock_timeout=1.0)
        holder = f"pid {child.pid} on host {socket.gethostname()} (stopped"
        assert holder in str(err.value)
        # said when the wait began, not only at the timeout
        assert f"waiting for {lock_path}, held by {holder}" in caplog.text
    finally:
        sigkill(child)


@pytest.mark.parametrize("value", ["all of them", [{"index": -1, "error": "x"}], [3],
                                   [{"index": 1}]])
def test_a_skipped_list_no_build_writes_is_refused(image_folder, cache_root, value):
    from slipstream.errors import CacheCorruptError

    path = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False).path
    meta = json.loads((path / MANIFEST_NAME).read_text())
    meta["attributes"]["slipstream"]["skipped"] = value
    (path / MANIFEST_NAME).write_text(json.dumps(meta))
    with pytest.raises(CacheCorruptError, match="skipped"):
        Cache(path)


def test_a_flipped_bit_in_an_index_is_refused(image_folder, cache_root):
    from slipstream.cache import write_index
    from slipstream.errors import CacheCorruptError

    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    write_index(cache, fields=["label"])
    _flip_bit(cache.path / "_indexes" / "label" / "samples" / "c" / "0", 8)
    with pytest.raises(CacheCorruptError, match=r"_indexes/label/samples/c/0 does not match"):
        Cache(cache.path).index("label")
