"""Streaming a remote cache through a bounded local area (docs/streaming.md), against a
real S3 server on loopback: every sample once, the limit kept, chunks verified before
use, two loaders sharing the area, JPEG and YUV420 columns, indexes, resume and DDP."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from slipstream import SlipstreamDataset, SlipstreamLoader
from slipstream.cache import layout
from slipstream.cache.verify import file_digest
from slipstream.caching import build_cache, write_index
from slipstream.decoders import DecodeCenterCrop, ReadBytes
from slipstream.errors import ConfigurationError
from slipstream.sample_data import make_image_folder
from slipstream.sources import open_source
from slipstream.stores.local import LocalStore
from slipstream.stores.push import push_cache
from slipstream.stores.streaming import is_chunk_file, parse_size
from slipstream.stores.sync import open_remote_store

#: small heap chunks, so that a small folder makes many of them
CHUNK = 32 << 10


def streamed_setup(root: Path, endpoint_url: str, storage_options: dict, bucket: str, *,
                   image_format: str = "jpeg", index: bool = False, images: int = 40):
    """A folder, its cache built in ``root/A`` with small chunks and pushed; the remote."""
    folder = make_image_folder(root / "data", num_classes=3, images_per_class=images,
                               size=(64, 80), seed=4)
    with open_source(str(folder)) as source:
        cache = build_cache(source, LocalStore(root / "A"), image_format=image_format,
                            heap_chunk_bytes=CHUNK, progress=False)
    if index:
        write_index(cache, ["label"])
    remote = open_remote_store(f"s3://{bucket}/caches/", endpoint_url=endpoint_url,
                               storage_options=storage_options)
    push_cache(cache, remote, progress=False)
    return folder, cache, remote


def chunk_files(cache) -> dict[str, int]:
    return {rel: e["size"] for rel, e in cache.attrs["files"].items() if is_chunk_file(rel)}


def area_files(area: Path) -> list[Path]:
    return [p for p in area.rglob("*") if p.is_file() and not p.name.startswith(".")]


def area_bytes(area: Path) -> int:
    """Bytes of the files in the area now (the read-ahead may evict one as we look)."""
    total = 0
    for p in area_files(area):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def all_good(area: Path, files: dict) -> None:
    """Every file under its own name in the area matches the manifest."""
    for p in area_files(area):
        rel = p.relative_to(area).as_posix()
        if rel == layout.MANIFEST_NAME:
            continue
        size, digest = file_digest(p)
        assert (size, digest) == (files[rel]["size"], files[rel][layout.CHECKSUM]), rel


@pytest.fixture
def setup(tmp_path, s3_server, s3_bucket):
    return streamed_setup(tmp_path, s3_server.endpoint_url, s3_server.storage_options,
                          s3_bucket)


def loader_for(folder, cache_dir, remote, limit, **kw):
    kw.setdefault("pipelines", {"image": [ReadBytes()]})
    kw.setdefault("batch_size", 8)
    return SlipstreamLoader(SlipstreamDataset(folder, cache_dir=cache_dir),
                            num_threads=2, progress=False, remote_cache=remote,
                            local_cache_limit=limit, **kw)


def test_sizes_parse_and_bad_ones_say_what_is_expected(monkeypatch):
    assert parse_size("50GB") == 50 * 10**9
    assert parse_size("1.5 TB") == 1.5e12
    assert parse_size("200MiB") == 200 << 20
    assert parse_size(1234) == 1234
    for bad in ("lots", "-1GB", 0, "5 XB"):
        with pytest.raises(ConfigurationError, match="local_cache_limit"):
            parse_size(bad)


def test_a_quarter_limit_serves_every_sample_once_within_the_limit(setup, tmp_path):
    folder, full, remote = setup
    chunks = chunk_files(full)
    assert len(chunks) >= 8
    total = sum(e["size"] for e in full.attrs["files"].values())
    limit = total // 4
    loader = loader_for(folder, tmp_path / "B", remote, limit, shuffle=True, seed=3, prefetch=2,
                        batch_size=4)
    cache = loader.cache
    assert cache.chunk_source is not None  # streamed, not pulled
    area = cache.path
    assert not LocalStore(tmp_path / "B").has(full.key)
    assert not any(is_chunk_file(p.relative_to(area).as_posix()) for p in area_files(area))
    seen, peak = [], 0
    reference = {i: full.column("image").value(i) for i in range(len(full))}
    for batch in loader:
        data, offsets = batch["image"].data.numpy(), batch["image"].offsets.numpy()
        for k, path in enumerate(batch["path"]):
            i = full.column("path").values(range(len(full))).index(path)
            assert data[offsets[k]:offsets[k + 1]].tobytes() == reference[i]
            seen.append(i)
        peak = max(peak, area_bytes(area))
    assert sorted(seen) == list(range(len(full)))
    assert peak <= limit + max(chunks.values())
    fetched = cache.chunk_source.fetched
    assert set(fetched) == set(chunks) and max(fetched.values()) <= 2
    all_good(area, full.attrs["files"])


def test_streamed_pixels_equal_the_local_cache_and_the_env_sets_the_limit(
        setup, tmp_path, monkeypatch):
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    monkeypatch.setenv("SLIPSTREAM_LOCAL_CACHE_LIMIT", str(total // 3))
    pipes = {"image": [DecodeCenterCrop(48)]}
    streamed = loader_for(folder, tmp_path / "B", remote, None, shuffle=False, pipelines=pipes)
    assert streamed.local_cache_limit == total // 3
    local = SlipstreamLoader(full, batch_size=8, shuffle=False, num_threads=2, pipelines=pipes,
                             progress=False)
    for a, b in zip(streamed, local, strict=True):
        assert np.array_equal(a["image"].numpy(), b["image"].numpy())
        assert a["path"] == b["path"]


def test_no_limit_or_a_larger_one_pulls_the_whole_cache(setup, tmp_path):
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    cache = loader_for(folder, tmp_path / "B", remote, total * 2).cache
    assert cache.chunk_source is None and LocalStore(tmp_path / "B").has(full.key)


def test_two_loaders_share_the_area_without_downloading_a_chunk_twice(setup, tmp_path):
    """Two loaders of one cache (same seed: they want the same chunks at the same time)
    race through the first half of an epoch."""
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    loaders = [loader_for(folder, tmp_path / "B", remote, total - 1, shuffle=True, seed=7)
               for _ in range(2)]
    caches = [ld.cache for ld in loaders]
    half = len(loaders[0]) // 2
    errors: list[BaseException] = []

    def run(ld):
        try:
            epoch = iter(ld)
            for _ in range(half):
                next(epoch)
            epoch.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ld,)) for ld in loaders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sources = [c.chunk_source for c in caches]
    fetched = sources[0].fetched + sources[1].fetched
    evicted = sources[0].evicted + sources[1].evicted
    assert len(fetched) >= 4
    # a chunk is downloaded again only after one of them evicted it (the area is one
    # chunk short of the cache), never twice at once
    assert all(n <= 1 + evicted[rel] for rel, n in fetched.items()), (fetched, evicted)


def test_resume_mid_epoch_and_ranks_follow_the_block_order(setup, tmp_path):
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    limit = total // 3
    first = loader_for(folder, tmp_path / "B", remote, limit, seed=11)
    whole = [b["path"] for b in first]
    assert sorted(p for b in whole for p in b) == sorted(
        full.column("path").values(range(len(full))))
    again = loader_for(folder, tmp_path / "B", remote, limit, seed=11)
    it = iter(again)
    for _ in range(2):
        next(it)
    state = again.state_dict()
    it.close()
    assert state["shuffle_window"] >= 1
    resumed = loader_for(folder, tmp_path / "B", remote, limit // 2, seed=0)
    resumed.load_state_dict(state)  # another limit: the saved window still rules
    assert [b["path"] for b in resumed] == whole[2:]
    ranks = [loader_for(folder, tmp_path / "B", remote, limit, seed=11, rank=r, world_size=2)
             for r in range(2)]
    per_rank = [[p for b in ld for p in b["path"]] for ld in ranks]
    flat = [p for b in whole for p in b]
    assert per_rank[0] == flat[0::2][:len(per_rank[0])]
    assert per_rank[1] == flat[1::2][:len(per_rank[1])]


def test_yuv420_columns_and_indexes_stream_too(tmp_path, s3_server, s3_bucket):
    folder, full, remote = streamed_setup(tmp_path, s3_server.endpoint_url,
                                          s3_server.storage_options, s3_bucket,
                                          image_format="yuv420", index=True)
    assert "yuv420" in full.image_formats and full.index_names == ("label",)
    total = sum(e["size"] for e in full.attrs["files"].values())
    pipes = {"image": [ReadBytes()]}
    ds = SlipstreamDataset(folder, cache_dir=tmp_path / "B")
    streamed = SlipstreamLoader(ds, batch_size=8, shuffle=False, num_threads=2,
                                pipelines=pipes, progress=False, remote_cache=remote,
                                local_cache_limit=total // 2, image_format="yuv420")
    local = SlipstreamLoader(full, batch_size=8, shuffle=False, num_threads=2,
                             pipelines=pipes, progress=False, image_format="yuv420")
    for a, b in zip(streamed, local, strict=True):
        assert torch_equal(a["image"].data, b["image"].data)
    cache = streamed.cache
    assert cache.chunk_source is not None
    assert any("yuv420/heap/c/" in rel for rel in cache.chunk_source.fetched)
    got, want = cache.index("label"), full.index("label")
    for label in range(3):
        assert np.array_equal(got.samples_for(label), want.samples_for(label))


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_pull_with_a_limit_sets_up_a_streamed_cache(setup, tmp_path, s3_server, capsys):
    from slipstream.cli import main

    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    args = ["--remote", f"s3://{remote.location.path}", "--endpoint-url", s3_server.endpoint_url,
            "--storage-option", "key=testing-key", "--storage-option", "secret=testing-secret",
            "--cache-dir", str(tmp_path / "B"), "-q"]
    assert main(["pull", full.key[:10], "--local-cache-limit", str(total // 2), *args]) == 0
    assert "streamed" in capsys.readouterr().out
    store = LocalStore(tmp_path / "B")
    area = store.stream_dir(full.key)
    assert not store.has(full.key) and (area / "zarr.json").is_file()
    assert not any(is_chunk_file(p.relative_to(area).as_posix()) for p in area_files(area))
    all_good(area, full.attrs["files"])
    # a limit larger than the cache pulls it whole, as before
    assert main(["pull", full.key[:10], "--local-cache-limit", "1TB", *args]) == 0
    assert store.has(full.key)


def test_a_chunk_this_loader_checked_is_not_hashed_again_but_one_kept_from_before_is(
        setup, tmp_path, monkeypatch, caplog):
    """The fetcher hashes each chunk as it arrives; the reader's hash on first touch is
    then skipped for that very file, but not for a chunk found in the area (kept from an
    earlier run), which may have rotted at rest. One loader's threads wait for one
    another's downloads without the lock file's 'waiting for' warning."""
    from slipstream.cache.arrays import ByteHeap
    from slipstream.errors import CacheCorruptError

    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    hashed: list[int] = []
    original = ByteHeap.verify_chunk

    def counting(heap, c, expected):
        hashed.append(c)
        return original(heap, c, expected)

    monkeypatch.setattr(ByteHeap, "verify_chunk", counting)
    with loader_for(folder, tmp_path / "B", remote, total - 1, shuffle=True, seed=2) as first:
        with caplog.at_level("WARNING", logger="slipstream.lock"):
            assert sum(len(b["path"]) for b in first) == len(full)
        assert first.cache.chunk_source.fetched
        area = first.cache.path
    assert not [r for r in caplog.records if "waiting for" in r.getMessage()]
    assert hashed == []

    # a chunk kept in the area rots at rest (same file, one byte flipped in place)
    kept = sorted(p for p in area_files(area) if is_chunk_file(p.relative_to(area).as_posix())
                  and p.relative_to(area).as_posix().startswith("image/"))
    assert kept
    with open(kept[0], "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    with loader_for(folder, tmp_path / "B", remote, total - 1, shuffle=False) as second, \
            pytest.raises(CacheCorruptError, match=re.escape(str(kept[0]))):
        for _ in second:
            pass
    assert hashed  # the chunks found in the area were hashed on first touch


def test_a_chunk_is_known_checked_before_it_appears_under_its_name(setup, tmp_path,
                                                                     monkeypatch):
    """A reader that finds a chunk the moment the fetcher renames it into place (before
    the fetcher's next line runs) still sees it as checked, and does not hash it again:
    the rename is slowed down after it happens, so every chunk hits that moment."""
    import os as real_os
    import time

    from slipstream.cache.arrays import ByteHeap
    from slipstream.stores import streaming

    class SlowRename:
        def __getattr__(self, name):
            return getattr(real_os, name)

        @staticmethod
        def rename(src, dst):
            real_os.rename(src, dst)
            time.sleep(0.05)

    monkeypatch.setattr(streaming, "os", SlowRename())
    hashed: list[int] = []
    original = ByteHeap.verify_chunk
    monkeypatch.setattr(ByteHeap, "verify_chunk",
                        lambda heap, c, expected: (hashed.append(c), original(heap, c, expected))[1])
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    with loader_for(folder, tmp_path / "B", remote, total - 1, shuffle=True, seed=3) as loader:
        assert sum(len(b["path"]) for b in loader) == len(full)
        assert loader.cache.chunk_source.fetched
    assert hashed == []


def test_a_limited_loader_builds_a_missing_cache_into_the_remote_and_streams_it(
        tmp_path, s3_server, s3_bucket):
    """``remote_cache`` + ``local_cache_limit`` and a cache that is nowhere yet: it is
    built straight into the remote (never whole on local disk) and streamed from there,
    with the batches a local cache gives."""
    folder = make_image_folder(tmp_path / "data", num_classes=3, images_per_class=10,
                               size=(64, 80), seed=5)
    remote = open_remote_store(f"s3://{s3_bucket}/caches/", endpoint_url=s3_server.endpoint_url,
                               storage_options=s3_server.storage_options)
    pipes = {"image": [DecodeCenterCrop(48)]}
    with loader_for(folder, tmp_path / "B", remote, "64MB", shuffle=False,
                    pipelines=pipes) as streamed:
        cache = streamed.cache
        assert cache.chunk_source is not None  # streamed, not a local build
        assert remote.has(cache.key) and not LocalStore(tmp_path / "B").has(cache.key)
        local = SlipstreamDataset(folder, cache_dir=tmp_path / "A").build_cache(progress=False)
        assert local.key == cache.key
        with SlipstreamLoader(local, batch_size=8, shuffle=False, num_threads=2,
                              pipelines=pipes, progress=False) as plain:
            for a, b in zip(streamed, plain, strict=True):
                assert np.array_equal(a["image"].numpy(), b["image"].numpy())
                assert a["path"] == b["path"]
                assert np.array_equal(a["label"].numpy(), b["label"].numpy())


def test_the_read_ahead_runs_on_into_the_next_epochs_first_batches(setup, tmp_path):
    """An epoch's tail starts the next epoch's first batches (one per prefetch slot), so
    the read-ahead plan an epoch hands its chunk source ends with the chunks those read:
    they are fetched ahead like any others instead of on demand at the epoch's end."""
    folder, full, remote = setup
    total = sum(e["size"] for e in full.attrs["files"].values())
    with loader_for(folder, tmp_path / "B", remote, total // 2, shuffle=True, seed=5) as loader:
        source = loader.cache.chunk_source
        heaps = [loader.cache.column(f).heap for f in ("image", "path")]  # both streamed
        this_epoch = len(loader)
        it = iter(loader)
        try:
            next(it)
            plan = list(source._plan)
            following = loader._sampler().batches(loader.epoch)  # epoch 1, as it stands
        finally:
            it.close()
    ahead = len(plan) - this_epoch
    assert 1 <= ahead <= len(following)
    assert plan[this_epoch:] == [
        sorted({h.chunk_path(c).relative_to(source.area).as_posix()
                for h in heaps for c in h.chunks_of(b)}) for b in following[:ahead]]
