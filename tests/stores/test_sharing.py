"""Team cache sharing through an S3 server: build and push, pull, write_index and sync.

:class:`SharingSuite` is the workflow against one S3 server, given by a ``server``
fixture (an :class:`~tests._servers.S3Endpoint`). ``TestSharingMoto`` runs it against
moto (below); ``tests/stores/test_sharing_weed.py`` runs the same suite against SeaweedFS.
"""

from __future__ import annotations

import json
import logging
import os
import random
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from slipstream import SlipstreamDataset, SlipstreamLoader, build_cache, write_index
from slipstream.cache.manifest import parse_committed as parse_marker
from slipstream.caching import ensure_cache
from slipstream.cli import main
from slipstream.errors import RemoteStoreError, UnknownStoreError
from slipstream.sample_data import make_image_folder
from slipstream.sources import open_source
from slipstream.stores.local import LocalStore
from slipstream.stores.pull import pull_cache
from slipstream.stores.push import build_id, push_cache
from slipstream.stores.sync import open_remote_store, sync_remote_cache

from .._servers import SECRET, S3Endpoint
from ..helpers import folder_expectation


def make_folder(root: Path, seed: int = 3) -> Path:
    return make_image_folder(root, num_classes=3, images_per_class=5, size=(48, 64), seed=seed)


def scramble(folder: Path) -> None:
    """Replace every image's bytes, keeping its size and mtime (so the content key stays
    the same): a cache built from it now would not match the original images."""
    for p in folder.rglob("*.jpg"):
        st = p.stat()
        p.write_bytes(bytes(reversed(p.read_bytes())))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def count_reads(monkeypatch: pytest.MonkeyPatch, source) -> list[int]:
    reads: list[int] = []
    original = source.read

    def read(i: int):
        reads.append(i)
        return original(i)

    monkeypatch.setattr(source, "read", read)
    return reads


def slowed(write):
    """``write`` after a random pause of up to 20 ms (to interleave two pushers)."""

    def slowly(*args, **kwargs):
        time.sleep(random.uniform(0, 0.02))
        return write(*args, **kwargs)

    return slowly


def push_at_once(caches, remotes) -> list:
    """Push each cache to its remote from its own thread, released together."""
    go = threading.Barrier(len(caches))
    reports: list = [None] * len(caches)
    errors: list = []

    def push(i: int) -> None:
        go.wait()
        try:
            reports[i] = push_cache(caches[i], remotes[i], threads=4, progress=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(caches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return reports


class SharingSuite:
    """The sharing workflow; a subclass's module provides the ``server`` fixture."""

    @pytest.fixture
    def bucket(self, server: S3Endpoint, request: pytest.FixtureRequest):
        name = server.new_bucket(request.node.name)
        yield name
        server.delete_bucket(name)

    def remote(self, server: S3Endpoint, bucket: str, prefix: str = "caches"):
        return open_remote_store(f"s3://{bucket}/{prefix}/", endpoint_url=server.endpoint_url,
                                 storage_options=server.storage_options)

    def test_build_push_then_pull_without_the_source_then_sync_an_index(
        self, server, bucket, tmp_path, monkeypatch
    ):
        folder = make_folder(tmp_path / "data")
        expected = folder_expectation(folder)
        options = dict(remote_cache=f"s3://{bucket}/caches/",
                       remote_cache_endpoint_url=server.endpoint_url,
                       remote_cache_storage_options=server.storage_options,
                       batch_size=4, shuffle=False, progress=False)
        # user A: builds and pushes
        loader_a = SlipstreamLoader(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), **options)
        cache_a = loader_a.cache
        remote = loader_a.remote_cache
        assert remote.keys() == [cache_a.key]
        assert parse_marker(remote.read_marker(cache_a.key))["files"] == cache_a.attrs["files"]

        # user B, empty cache dir (group-shared): pulls, never reads a sample of the source
        scramble(folder)
        shared_b = tmp_path / "B"
        shared_b.mkdir()
        os.chmod(shared_b, 0o2775)
        dataset_b = SlipstreamDataset(folder, cache_dir=shared_b)
        reads = count_reads(monkeypatch, dataset_b.source)
        loader_b = SlipstreamLoader(dataset_b, **options)
        cache_b = loader_b.cache
        assert reads == []
        assert cache_b.path == shared_b / cache_a.key
        assert cache_b.verify().ok
        assert [cache_b[i]["image"] for i in range(len(cache_b))] == [e["image"] for e in expected]
        labels = np.concatenate([b["label"].numpy() for b in loader_b])
        assert labels.tolist() == [e["label"] for e in expected]
        for p in [cache_b.path, *cache_b.path.rglob("*")]:  # usable by B's whole group
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & (0o2770 if p.is_dir() else 0o660) == (0o2770 if p.is_dir() else 0o660)

        # B adds an index and syncs; A syncs and has it, equal
        write_index(cache_b, fields=["label"])
        report = loader_b.sync_remote_cache()
        assert report.pushed and all(r.startswith("_indexes/") for r in report.pushed)
        assert report.pulled == []
        assert parse_marker(remote.read_marker(cache_a.key))["indexes"] == ["label"]
        report = loader_a.sync_remote_cache()
        assert report.pushed == [] and "_indexes/label/samples/c/0" in report.pulled
        assert loader_a.cache.index_names == ("label",)
        a_index, b_index = loader_a.cache.index("label"), cache_b.index("label")
        assert np.array_equal(a_index.values, b_index.values)
        assert np.array_equal(a_index.samples, b_index.samples)
        assert loader_a.cache.verify().ok
        assert not loader_a.sync_remote_cache().moved
        assert not loader_b.sync_remote_cache().moved

    def test_commit_marker_is_written_last(self, server, bucket, tmp_path, monkeypatch):
        cache = SlipstreamDataset(make_folder(tmp_path / "data"),
                                  cache_dir=tmp_path / "A").build_cache(progress=False)
        remote = self.remote(server, bucket)
        events: list[str] = []
        put, put_if_absent = remote.put, remote.put_if_absent

        def spy(write):
            def wrapped(key, rel, data, **kw):
                assert not remote.has(key), "the cache was visible before all its files were up"
                result = write(key, rel, data, **kw)
                events.append(rel)
                return result
            return wrapped

        monkeypatch.setattr(remote, "put", spy(put))
        monkeypatch.setattr(remote, "put_if_absent", spy(put_if_absent))
        report = push_cache(cache, remote, progress=False)
        assert report.committed
        assert events[-1] == "zarr.json" and events.count("zarr.json") == 1
        assert sorted(events[:-1]) == sorted(cache.attrs["files"]) == report.pushed
        assert not push_cache(cache, remote, progress=False).moved  # pushed once

    def test_two_users_push_different_builds_of_one_key_at_once(self, server, bucket, tmp_path):
        folder = make_folder(tmp_path / "data")
        source = open_source(str(folder))
        for attempt in range(3):
            # Builds differ in bytes (heap chunking here; read order in real life).
            caches = [build_cache(source, LocalStore(tmp_path / f"{attempt}-{u}"), progress=False,
                                  heap_chunk_bytes=chunk)
                      for u, chunk in (("a", 9_000), ("b", 20_000))]
            assert build_id(caches[0].attrs) != build_id(caches[1].attrs)
            remotes = [self.remote(server, bucket, f"race{attempt}") for _ in caches]
            for r in remotes:  # interleave the uploads
                for name in ("put", "put_if_absent"):
                    setattr(r, name, slowed(getattr(r, name)))
            reports = push_at_once(caches, remotes)
            key = caches[0].key
            standing = remotes[0].read_commit(key)
            assert build_id(standing) in {build_id(c.attrs) for c in caches}
            assert any(r.committed for r in reports)
            fresh = LocalStore(tmp_path / f"{attempt}-c")
            pull_cache(remotes[0], key, fresh, progress=False)
            pulled = SlipstreamDataset(folder, cache_dir=fresh.root).find_cache()
            assert pulled.verify().ok
            assert [pulled[i]["image"] for i in range(len(pulled))] == \
                [caches[0][i]["image"] for i in range(len(pulled))]
            for cache in caches:  # either build syncs with whichever stands
                write_index(cache, fields=["label"])
                sync_remote_cache(cache, remotes[0], progress=False)
            assert remotes[0].read_commit(key)["indexes"] == ["label"]

    def test_derived_format_travels_with_the_cache(self, server, bucket, tmp_path):
        folder = make_folder(tmp_path / "data")
        remote = self.remote(server, bucket)
        cache_a = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"),
                               image_format="yuv420", remote=remote, progress=False)
        assert "yuv420" in cache_a.image_formats
        assert any(r.startswith("image/yuv420/") for r in remote.read_commit(cache_a.key)["files"])
        # B asks for JPEG only, later for YUV420: the derived heap is fetched, not derived
        dataset_b = SlipstreamDataset(folder, cache_dir=tmp_path / "B")
        assert ensure_cache(dataset_b, remote=remote, progress=False).key == cache_a.key
        cache_b = ensure_cache(dataset_b, image_format="yuv420", remote=remote, progress=False)
        assert "yuv420" in cache_b.image_formats and cache_b.verify().ok
        heap = "image/yuv420/heap/c/0"
        assert (cache_b.path / heap).read_bytes() == (cache_a.path / heap).read_bytes()

    def test_ls_remote_push_and_pull_commands(self, server, bucket, tmp_path, capsys):
        cache = SlipstreamDataset(make_folder(tmp_path / "data"),
                                  cache_dir=tmp_path / "A").build_cache(progress=False)
        write_index(cache, fields=["label"])
        url = f"s3://{bucket}/caches/"
        remote_args = ["--remote", url, "--endpoint-url", server.endpoint_url,
                       "--storage-option", f"key={server.storage_options['key']}",
                       "--storage-option", f"secret={SECRET}", "-q"]
        assert main(["push", cache.key[:10], "--cache-dir", str(tmp_path / "A"),
                     *remote_args]) == 0
        server.client().put_object(Bucket=bucket, Key=f"caches/{'0' * 40}/label/c/0", Body=b"x")
        assert main(["pull", cache.key[:8], "--cache-dir", str(tmp_path / "B"),
                     *remote_args]) == 0
        assert LocalStore(tmp_path / "B").keys() == [cache.key]
        ls_args = [url, *remote_args[2:-1]]
        capsys.readouterr()
        assert main(["ls-remote", *ls_args]) == 0
        out = capsys.readouterr().out
        assert cache.key in out and "15 samples" in out and "indexes: label" in out
        assert f"{'0' * 40}  (incomplete: 1 objects" in out
        assert main(["ls-remote", *ls_args, "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
        entry = next(c for c in listing["caches"] if c["key"] == cache.key)
        assert entry["size_bytes"] == cache.size_bytes() and entry["indexes"] == ["label"]
        assert entry["fields"] == {"image": "image", "label": "int", "path": "str"}
        assert SECRET not in out + json.dumps(listing)

    def test_credentials_never_shown(self, server, bucket, tmp_path, caplog, capsys):
        caplog.set_level(logging.DEBUG)
        folder = make_folder(tmp_path / "data")
        remote = self.remote(server, bucket)
        cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                             progress=False)
        shown = [repr(remote), remote.describe(), remote.describe_url(), json.dumps(cache.info())]
        from slipstream.errors import UrlError

        with pytest.raises(UrlError, match="credentials inside a s3:// URL are not used") as bad:
            open_remote_store(f"s3://{server.storage_options['key']}:{SECRET}@{bucket}/c/",
                              endpoint_url=server.endpoint_url)
        shown.append(str(bad.value))
        gone = open_remote_store(f"s3://{bucket}/caches/", endpoint_url="http://127.0.0.1:9",
                                 storage_options={**server.storage_options,
                                                  "config_kwargs": {"connect_timeout": 1}})
        gone.retry = type(gone.retry)(attempts=2, base_delay=0.01)
        with pytest.raises(RemoteStoreError) as info:
            gone.keys()
        shown.append(str(info.value))
        assert main(["ls-remote", f"s3://{bucket}/caches/", "--endpoint-url",
                     "http://127.0.0.1:9", "--storage-option", f"secret={SECRET}",
                     "--storage-option", "config_kwargs={\"connect_timeout\": 1, "
                     "\"retries\": {\"total_max_attempts\": 1}}"]) == 2
        captured = capsys.readouterr()
        shown += [captured.out, captured.err, caplog.text]
        assert "127.0.0.1:9" in captured.err  # the error names the place
        for text in shown:
            assert SECRET not in text


class TestSharingMoto(SharingSuite):
    @pytest.fixture
    def server(self, s3_server) -> S3Endpoint:
        return S3Endpoint("moto", s3_server.endpoint_url)


# -- without a server ---------------------------------------------------------------------------
def test_group_shared_root_makes_everything_group_writable(tmp_path):
    source = open_source(str(make_folder(tmp_path / "data")))
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    for umask, dir_mode, file_mode in ((0o022, 0o2775, 0o664), (0o077, 0o2770, 0o660)):
        (shared / oct(umask)).mkdir()
        os.chmod(shared / oct(umask), 0o2775)  # as an admin sets up a team directory
        old = os.umask(umask)
        try:
            cache = build_cache(source, LocalStore(shared / oct(umask)), progress=False)
            mine = build_cache(source, LocalStore(private / oct(umask)), progress=False)
        finally:
            os.umask(old)
        for p in [cache.path, *cache.path.rglob("*")]:
            assert stat.S_IMODE(p.stat().st_mode) == (dir_mode if p.is_dir() else file_mode), p
        locks = list((shared / oct(umask) / ".tmp").glob("*lock"))
        assert locks and all(stat.S_IMODE(p.stat().st_mode) == file_mode for p in locks)
        assert stat.S_IMODE((mine.path / "zarr.json").stat().st_mode) == 0o666 & ~umask


def test_remote_cache_url_must_name_a_registered_store(tmp_path):
    with pytest.raises(UnknownStoreError, match="protocol 'nosuch'"):
        open_remote_store("nosuch://bucket/caches/")
    shared = open_remote_store(str(tmp_path / "shared"))  # a shared directory is a store too
    assert isinstance(shared, LocalStore) and shared.root == tmp_path / "shared"
    with pytest.raises(ValueError, match="need remote_cache"):
        SlipstreamLoader(SlipstreamDataset(make_folder(tmp_path / "d")),
                         remote_cache_endpoint_url="http://127.0.0.1:1")


def test_a_shared_directory_serves_as_the_remote_cache(tmp_path):
    folder = make_folder(tmp_path / "data")
    remote = open_remote_store(str(tmp_path / "shared"))
    cache_a = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                           progress=False)
    assert remote.has(cache_a.key)
    first = cache_a[0]
    scramble(folder)  # same key; a build here would differ, so B must pull
    cache_b = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "B"), remote=remote,
                           progress=False)
    assert cache_b.verify().ok and cache_b[0] == first
    # a remote that is the cache root itself is no remote: nothing is copied onto itself
    same = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "shared"), remote=remote,
                        progress=False)
    assert same.path == remote.local_path(cache_a.key) and same.verify().ok
