"""Building a cache larger than the local disk straight into a remote store
(``build_cache(..., remote=, local_cache_limit=)``, ``slipstream build --remote
--local-cache-limit``; docs/streaming.md), against real S3 servers on loopback: the local
disk stays within the limit plus one chunk, the commit marker comes last, the samples
equal a locally built cache's, and a server going away mid-upload commits nothing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from slipstream.cache import layout
from slipstream.caching import build_cache
from slipstream.errors import ConfigurationError, RemoteStoreError
from slipstream.sample_data import make_image_folder
from slipstream.sources import open_source
from slipstream.stores._retry import RetryPolicy
from slipstream.stores.local import LocalStore
from slipstream.stores.pull import pull_cache
from slipstream.stores.remote_build import ChunkUploader
from slipstream.stores.streaming import is_chunk_file
from slipstream.stores.sync import open_remote_store

#: small heap chunks, so that a small folder makes many of them
CHUNK = 32 << 10
#: fail fast once the server is gone (one attempt per request, short timeouts)
FAST = {"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1},
                          "connect_timeout": 1, "read_timeout": 5}}


def folder_of(root: Path, images: int = 60) -> Path:
    return make_image_folder(root / "data", num_classes=3, images_per_class=images,
                             size=(96, 128), seed=11)


def tree_bytes(root: Path) -> int:
    """Bytes of every file below ``root`` (apparent sizes: a sparse tail counts in full)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            try:
                total += os.stat(os.path.join(dirpath, n)).st_size
            except FileNotFoundError:
                pass  # removed while we walked
    return total


class DiskWatch:
    """The peak of ``tree_bytes(root)``, sampled every millisecond by a thread and at each
    moment a chunk file is final (the uploader's hook: the moment the build holds most)."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.peak, self.at_hook = root, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        original = ChunkUploader.__call__

        def measured(uploader, path, rel, entry):
            self.at_hook = max(self.at_hook, tree_bytes(self.root))
            return original(uploader, path, rel, entry)

        monkeypatch.setattr(ChunkUploader, "__call__", measured)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_bytes(self.root))
            self._stop.wait(0.001)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.at_hook)


def s3_remote(endpoint_url: str, storage_options: dict, bucket: str, **extra):
    return open_remote_store(f"s3://{bucket}/caches/", endpoint_url=endpoint_url,
                             storage_options={**storage_options, **extra.pop("options", {})},
                             **extra)


def remote_build(folder: Path, root: Path, remote, limit, **kw):
    with open_source(str(folder)) as source:
        return build_cache(source, LocalStore(root), heap_chunk_bytes=CHUNK, progress=False,
                           remote=remote, local_cache_limit=limit, threads=2, **kw)


def local_build(folder: Path, root: Path):
    with open_source(str(folder)) as source:
        return build_cache(source, LocalStore(root), heap_chunk_bytes=CHUNK, progress=False)


def same_samples(got, want) -> None:
    assert got.key == want.key and len(got) == len(want)
    every = range(len(want))
    assert got.column("path").values(every) == want.column("path").values(every)
    assert np.array_equal(got.column("label"), want.column("label"))
    for i in range(len(want)):
        assert got.column("image").value(i) == want.column("image").value(i)


def check_remote_build(folder: Path, tmp_path: Path, remote, monkeypatch) -> None:
    want = local_build(folder, tmp_path / "A")
    files = want.attrs["files"]
    chunks = {rel: e["size"] for rel, e in files.items() if is_chunk_file(rel)}
    total = sum(e["size"] for e in files.values())
    limit = 3 * CHUNK
    assert total > 4 * limit and len(chunks) > 8  # the cache is much larger than the limit
    # the limit, one chunk more, and what is not an image chunk (the small files written
    # at the end, and the path field's heap, whose one chunk stays open all along)
    small = sum(e["size"] for rel, e in files.items() if not rel.startswith("image/heap/"))
    root = tmp_path / "B"
    with DiskWatch(root, monkeypatch) as watch:
        got = remote_build(folder, root, remote, limit)
    assert watch.at_hook > 0 and watch.peak <= limit + CHUNK + small, (watch.peak, limit)
    assert remote.has(want.key)
    assert got.chunk_source is not None  # streamed back through the bounded area
    assert not LocalStore(root).has(want.key)
    assert not list((root / ".tmp").glob(f"*{want.key}*/"))  # the build dir is gone
    same_samples(got, want)
    listed = set(remote.read_commit(want.key)["files"])
    assert set(remote.list_objects(want.key)) == listed | {layout.MANIFEST_NAME}
    pull_cache(remote, want.key, LocalStore(tmp_path / "C"), progress=False)
    pulled = LocalStore(tmp_path / "C").open_cache(want.key)
    assert pulled.verify().ok
    same_samples(pulled, want)
    got.close()


def test_a_build_larger_than_the_limit_uploads_as_it_goes_and_streams_back_equal(
        tmp_path, s3_server, s3_bucket, monkeypatch):
    remote = s3_remote(s3_server.endpoint_url, s3_server.storage_options, s3_bucket)
    check_remote_build(folder_of(tmp_path), tmp_path, remote, monkeypatch)


def test_building_into_seaweedfs(weed_server, tmp_path, monkeypatch):
    endpoint = weed_server.endpoint
    remote = s3_remote(endpoint.endpoint_url, endpoint.storage_options,
                       endpoint.new_bucket("remote-build"))
    check_remote_build(folder_of(tmp_path), tmp_path, remote, monkeypatch)


def test_the_server_going_away_mid_upload_commits_nothing_and_a_rerun_completes(
        moto, tmp_path, monkeypatch):
    folder = folder_of(tmp_path)
    bucket = moto.endpoint.new_bucket("stopped-build")
    remote = s3_remote(moto.endpoint.endpoint_url, moto.endpoint.storage_options, bucket,
                       options=FAST, retry=RetryPolicy(attempts=2, base_delay=0.01))
    uploads: list[str] = []
    original = remote.put_if_absent

    def put_if_absent(key, rel, data, **kw):
        written = original(key, rel, data, **kw)
        uploads.append(rel)
        if len(uploads) == 3:
            moto.stop()  # the server goes away after the third chunk
        return written

    monkeypatch.setattr(remote, "put_if_absent", put_if_absent)
    with pytest.raises(RemoteStoreError, match=r"caches/[0-9a-f]{40}/image/heap/c/\d+") as err:
        remote_build(folder, tmp_path / "B", remote, 2 * CHUNK, num_threads=1)
    assert "testing-secret" not in str(err.value)
    moto.start()
    key = local_build(folder, tmp_path / "A").key
    present = remote.list_objects(key)
    assert not remote.has(key) and layout.MANIFEST_NAME not in present
    assert set(uploads[:3]) <= set(present)
    assert not any(p.is_dir() for p in (tmp_path / "B" / ".tmp").iterdir())  # no build left

    # a new run completes it; the chunks the first one uploaded are not uploaded again
    monkeypatch.undo()
    written: list[str] = []

    def counting(key, rel, data, **kw):
        done = original(key, rel, data, **kw)
        if done:
            written.append(rel)
        return done

    monkeypatch.setattr(remote, "put_if_absent", counting)
    got = remote_build(folder, tmp_path / "B", remote, 2 * CHUNK, num_threads=1)
    assert remote.has(key)
    assert not set(written) & set(present)
    same_samples(got, local_build(folder, tmp_path / "A"))
    got.close()


def test_the_limit_needs_a_remote_and_a_remote_build_keeps_the_stored_format(
        tmp_path, s3_server, s3_bucket):
    folder = folder_of(tmp_path, images=4)
    remote = s3_remote(s3_server.endpoint_url, s3_server.storage_options, s3_bucket)
    with pytest.raises(ConfigurationError, match="needs remote=URL"):
        remote_build(folder, tmp_path / "B", None, "1MB")
    with pytest.raises(ConfigurationError, match="image_format='yuv420'"):
        remote_build(folder, tmp_path / "B", remote, "1MB", image_format="yuv420")
    with pytest.raises(ConfigurationError, match="on_error='skip'"):
        remote_build(folder, tmp_path / "B", remote, "1MB", on_error="skip")
    assert remote.keys() == []


def test_cli_build_into_a_remote_with_a_local_cache_limit(tmp_path, s3_server, s3_bucket,
                                                          capsys):
    from slipstream.cli import main

    folder = folder_of(tmp_path, images=20)
    args = ["build", str(folder), "--remote", f"s3://{s3_bucket}/caches/", "--endpoint-url",
            s3_server.endpoint_url, "--remote-storage-option", "key=testing-key",
            "--remote-storage-option", "secret=testing-secret",
            "--cache-dir", str(tmp_path / "B"), "-q"]
    assert main([*args, "--local-cache-limit", "50KB"]) == 0
    out = capsys.readouterr().out
    assert "built into" in out and "testing-secret" not in out
    remote = s3_remote(s3_server.endpoint_url, s3_server.storage_options, s3_bucket)
    (key,) = remote.keys()
    assert not LocalStore(tmp_path / "B").has(key)
    # without --remote the limit means nothing: refused, and it says why
    assert main(["build", str(folder), "--cache-dir", str(tmp_path / "C"),
                 "--local-cache-limit", "50KB", "-q"]) != 0
    assert "--local-cache-limit needs --remote" in capsys.readouterr().err


KILLED = """
import json, sys
from slipstream.caching import build_cache
from slipstream.sources import open_source
from slipstream.stores.local import LocalStore
from slipstream.stores.sync import open_remote_store
remote = open_remote_store(sys.argv[3], endpoint_url=sys.argv[4],
                           storage_options=json.loads(sys.argv[5]))
with open_source(sys.argv[1]) as source:
    build_cache(source, LocalStore(sys.argv[2]), heap_chunk_bytes=int(sys.argv[6]),
                progress=False, remote=remote, local_cache_limit=1, threads=1, num_threads=1)
print("finished", flush=True)
"""


def test_a_remote_build_killed_midway_commits_nothing_and_a_rerun_completes(moto, tmp_path):
    import json
    import subprocess
    import sys
    import time

    from ..helpers import sigkill

    folder = folder_of(tmp_path)
    want = local_build(folder, tmp_path / "A")
    bucket = moto.endpoint.new_bucket("killed-build")
    client = moto.endpoint.client()
    script = tmp_path / "build.py"
    script.write_text(KILLED)
    child = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(tmp_path / "B"), f"s3://{bucket}/caches/",
         moto.endpoint.endpoint_url, json.dumps(moto.endpoint.storage_options), str(CHUNK)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            listed = client.list_objects_v2(Bucket=bucket,
                                            Prefix=f"caches/{want.key}/image/heap/c/")
            if listed.get("KeyCount", 0) >= 3:
                break
            time.sleep(0.005)
    finally:
        assert sigkill(child) == -9  # killed mid-build, not finished
    remote = s3_remote(moto.endpoint.endpoint_url, moto.endpoint.storage_options, bucket)
    present = remote.list_objects(want.key)
    assert len(present) >= 3 and layout.MANIFEST_NAME not in present
    assert not remote.has(want.key) and remote.keys() == []
    assert any(p.is_dir() for p in (tmp_path / "B" / ".tmp").iterdir())  # its build dir

    got = remote_build(folder, tmp_path / "B", remote, 2 * CHUNK)
    assert remote.has(want.key)
    assert not any(p.is_dir() for p in (tmp_path / "B" / ".tmp").iterdir())
    same_samples(got, want)
    got.close()
