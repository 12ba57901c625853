"""Sharing under faults: a server that stops mid-transfer, a pull killed with SIGKILL,
corrupted objects, transient HTTP errors and timeouts, and processes racing for one key.

Each test runs its own moto server on a fixed loopback port (:class:`MotoS3`), so it can
stop it for real (clients are refused) and start it again with its objects intact.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slipstream import SlipstreamDataset
from slipstream.caching import ensure_cache
from slipstream.errors import CacheCorruptError, RemoteCacheWarning, RemoteStoreError
from slipstream.stores._retry import RetryPolicy, call_with_retries, is_transient
from slipstream.stores.local import LocalStore
from slipstream.stores.pull import pull_cache
from slipstream.stores.push import push_cache
from slipstream.stores.sync import open_remote_store

from .._servers import SECRET
from ..helpers import sigkill
from .test_sharing import make_folder

REPO = Path(__file__).resolve().parents[2]
#: Fail fast once the server is gone: one botocore attempt, two of ours, short timeouts.
FAST = {"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1},
                          "connect_timeout": 1, "read_timeout": 5}}


@pytest.fixture
def bucket(moto, request):
    return moto.endpoint.new_bucket(request.node.name)  # the server's objects die with it


def fast_remote(endpoint, url, **options):
    return open_remote_store(url, endpoint_url=endpoint.endpoint_url,
                             storage_options={**endpoint.storage_options, **FAST, **options},
                             retry=RetryPolicy(attempts=2, base_delay=0.01))


def stop_after(monkeypatch, remote, method: str, n: int, action) -> list[str]:
    """Wrap ``remote.<method>`` to record each completed transfer and to call ``action``
    once ``n`` have completed."""
    done: list[str] = []
    lock = threading.Lock()
    original = getattr(remote, method)

    def wrapped(*args, **kwargs):
        original(*args, **kwargs)
        with lock:
            done.append(args[1])  # (key, rel, ...)
            if len(done) == n:
                action()

    monkeypatch.setattr(remote, method, wrapped)
    return done


def build_dirs(root: Path) -> list[Path]:
    tmp = root / ".tmp"
    return [p for p in tmp.iterdir() if p.is_dir()] if tmp.is_dir() else []


def test_push_stopped_midway_commits_nothing_and_the_next_run_completes_it(
    moto, bucket, tmp_path, monkeypatch
):
    folder = make_folder(tmp_path / "data")
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    uploaded = stop_after(monkeypatch, remote, "put_if_absent", 6, moto.stop)
    with pytest.warns(RemoteCacheWarning, match="resumes on the next run") as caught:
        cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                             progress=False, threads=2)
    assert SECRET not in str(caught[0].message)
    assert cache.verify().ok  # the local cache is complete and usable
    moto.start()
    files = set(cache.attrs["files"])
    present = remote.list_objects(cache.key)
    assert not remote.has(cache.key) and "zarr.json" not in present
    assert set(uploaded) <= set(present) < files and len(present) >= 6

    # the next run finds the local cache, sees the unfinished push, and completes it
    monkeypatch.undo()
    again = []
    original = remote.put_if_absent

    def put_if_absent(key, rel, data, **kw):
        if rel != "zarr.json":  # the commit marker is not one of the cache's files
            again.append(rel)
        return original(key, rel, data, **kw)

    monkeypatch.setattr(remote, "put_if_absent", put_if_absent)
    ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                 progress=False)
    assert remote.has(cache.key)
    assert sorted(again) == sorted(files - set(present))  # finished objects were kept
    pull_cache(remote, cache.key, LocalStore(tmp_path / "B"), progress=False)
    assert SlipstreamDataset(folder, cache_dir=tmp_path / "B").find_cache().verify().ok


def test_pull_stopped_midway_leaves_nothing_and_a_retry_succeeds(
    moto, bucket, tmp_path, monkeypatch
):
    folder = make_folder(tmp_path / "data")
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                         progress=False)
    puller = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    stop_after(monkeypatch, puller, "get_file", 4, moto.stop)
    store = LocalStore(tmp_path / "B")
    with pytest.raises(RemoteStoreError) as info:
        pull_cache(puller, cache.key, store, threads=2, progress=False)
    assert SECRET not in str(info.value) and f"s3://{bucket}/caches/{cache.key}/" in str(info.value)
    assert not store.path(cache.key).exists() and store.keys() == []
    assert build_dirs(store.root) == []
    moto.start()
    monkeypatch.undo()
    report = pull_cache(puller, cache.key, store, progress=False)
    assert sorted(report.pulled) == sorted(cache.attrs["files"])
    assert SlipstreamDataset(folder, cache_dir=store.root).find_cache().verify().ok


CHILD = """
import json, os, sys, time
from slipstream.stores.local import LocalStore
from slipstream.stores.pull import pull_cache
from slipstream.stores.sync import open_remote_store
cfg = json.loads(os.environ["PULL_CFG"])
remote = open_remote_store(cfg["url"], endpoint_url=cfg["endpoint"], storage_options=cfg["options"])
fetch = remote.get_file
def slow(key, rel, dest):
    fetch(key, rel, dest)
    print("got", rel, flush=True)
    time.sleep(cfg["delay"])
remote.get_file = slow
report = pull_cache(remote, cfg["key"], LocalStore(cfg["root"]), threads=1, progress=False)
print("pulled", len(report.pulled), flush=True)
"""


def start_puller(moto, bucket, key, root, delay):
    cfg = {"url": f"s3://{bucket}/caches/", "endpoint": moto.endpoint.endpoint_url,
           "options": moto.endpoint.storage_options, "key": key, "root": str(root),
           "delay": delay}
    env = {**os.environ, "PULL_CFG": json.dumps(cfg), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_pull_killed_with_sigkill_leaves_no_cache_and_the_next_pull_cleans_up(
    moto, bucket, tmp_path
):
    folder = make_folder(tmp_path / "data")
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                         progress=False)
    store = LocalStore(tmp_path / "B")
    child = start_puller(moto, bucket, cache.key, store.root, delay=0.3)
    got = 0
    while got < 3:
        line = child.stdout.readline()
        assert line, f"the puller ended early: {child.stderr.read()}"
        got += line.startswith("got ")
    assert sigkill(child) == -signal.SIGKILL
    assert store.keys() == [] and not store.path(cache.key).exists()
    left = build_dirs(store.root)
    assert [p.name.split(".")[-2].rpartition("-")[2] for p in left] == [str(child.pid)]
    pull_cache(remote, cache.key, store, progress=False)  # the lock died with the child
    assert SlipstreamDataset(folder, cache_dir=store.root).find_cache().verify().ok
    assert build_dirs(store.root) == []


def test_two_processes_pulling_one_key_into_one_directory_download_it_once(
    moto, bucket, tmp_path
):
    folder = make_folder(tmp_path / "data")
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                         progress=False)
    shared = tmp_path / "shared"
    children = [start_puller(moto, bucket, cache.key, shared, delay=0.02) for _ in range(2)]
    counts = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        counts.append(int(out.strip().splitlines()[-1].split()[1]))
    assert sorted(counts) == [0, len(cache.attrs["files"])]
    assert SlipstreamDataset(folder, cache_dir=shared).find_cache().verify().ok


def test_a_corrupted_remote_object_is_named_and_not_used(moto, bucket, tmp_path):
    folder = make_folder(tmp_path / "data")
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=remote,
                         progress=False)
    name = "label/c/0"
    good = (cache.path / name).read_bytes()
    moto.endpoint.client().put_object(Bucket=bucket, Key=f"caches/{cache.key}/{name}",
                                      Body=bytes(reversed(good)))
    store = LocalStore(tmp_path / "B")
    with pytest.raises(CacheCorruptError, match=f"caches/{cache.key}/{name} is corrupt"):
        pull_cache(remote, cache.key, store, progress=False)
    assert store.keys() == [] and build_dirs(store.root) == []
    assert push_cache(cache, remote, repair=True, progress=False).pushed == [name]
    pull_cache(remote, cache.key, store, progress=False)
    assert SlipstreamDataset(folder, cache_dir=store.root).find_cache().verify().ok


def test_a_manifest_naming_paths_outside_the_cache_is_refused(moto, bucket, tmp_path):
    remote = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    key = "ab" * 20
    marker = {"zarr_format": 3, "node_type": "group", "attributes": {"slipstream": {
        "format_version": 1, "key": key, "files": {"../../escape": {"size": 1, "sha256": "0"}}}}}
    remote.write_marker(key, json.dumps(marker).encode())
    with pytest.raises(CacheCorruptError, match="not a relative path inside the cache"):
        pull_cache(remote, key, LocalStore(tmp_path / "B"), progress=False)
    assert not (tmp_path / "escape").exists()


# -- transient errors --------------------------------------------------------------------------
class FlakyProxy:
    """An HTTP proxy in front of the S3 server that fails chosen requests: ``faults`` maps
    a path suffix to what its next GETs get, in order (an HTTP status, or ``"stall"``: no
    answer for ``stall_seconds``, then a closed connection); then requests pass through."""

    def __init__(self, upstream: str, faults: dict[str, list[int | str]],
                 stall_seconds: float = 3.0) -> None:
        self.upstream = upstream.split("://", 1)[1]
        self.faults = {k: list(v) for k, v in faults.items()}
        self.injected: list[tuple[str, int | str]] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _relay(self) -> None:
                fault = proxy._next_fault(self.command, self.path)
                if fault == "stall":  # answer nothing; the client times out and retries
                    proxy.closing.wait(stall_seconds)
                    return
                if fault is not None:
                    body = (f"<Error><Code>{'SlowDown' if fault == 503 else 'InternalError'}"
                            f"</Code><Message>injected</Message></Error>").encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                try:
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("connection", "transfer-encoding"):
                            self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (stall)
                    pass

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _next_fault(self, method: str, path: str) -> int | str | None:
        if method != "GET":
            return None
        with self.lock:
            for suffix, queue in self.faults.items():
                if path.split("?")[0].endswith(suffix) and queue:
                    fault = queue.pop(0)
                    self.injected.append((suffix, fault))
                    return fault
        return None

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_http_500_503_and_timeouts_are_retried_with_backoff(moto, bucket, tmp_path, caplog):
    folder = make_folder(tmp_path / "data")
    pusher = fast_remote(moto.endpoint, f"s3://{bucket}/caches/")
    cache = ensure_cache(SlipstreamDataset(folder, cache_dir=tmp_path / "A"), remote=pusher,
                         progress=False)
    proxy = FlakyProxy(moto.endpoint.endpoint_url, {
        "/label/c/0": [503, 503],  # botocore's own retries absorb these
        "/image/heap/c/0": [500, 500, 500, 500],  # outlasts botocore's 3 attempts: ours retry
        "/path/heap/c/0": ["stall"],  # a read timeout
    }, stall_seconds=3.0)
    try:
        remote = open_remote_store(
            f"s3://{bucket}/caches/", endpoint_url=proxy.endpoint_url,
            storage_options={**moto.endpoint.storage_options,
                             "config_kwargs": {"read_timeout": 1, "connect_timeout": 1}},
            retry=RetryPolicy(attempts=4, base_delay=0.05))
        caplog.set_level(logging.DEBUG, logger="slipstream.stores")
        store = LocalStore(tmp_path / "B")
        pull_cache(remote, cache.key, store, progress=False)
    finally:
        proxy.close()
    assert sorted(proxy.injected, key=str) == sorted(
        [("/label/c/0", 503)] * 2 + [("/image/heap/c/0", 500)] * 4 + [("/path/heap/c/0", "stall")],
        key=str)
    assert any("image/heap/c/0 failed" in r.getMessage() and "retrying" in r.getMessage()
               for r in caplog.records)
    assert SlipstreamDataset(folder, cache_dir=store.root).find_cache().verify().ok


def test_retry_helper_backs_off_exponentially_and_only_on_transient_errors():
    policy = RetryPolicy(attempts=4, base_delay=0.1, max_delay=0.3)
    pauses: list[float] = []
    failures = [ConnectionResetError(), OSError(errno.EBUSY, "SlowDown"), TimeoutError()]

    def flaky():
        if failures:
            raise failures.pop(0)
        return "ok"

    assert call_with_retries(flaky, policy=policy, what="t", sleep=pauses.append) == "ok"
    assert len(pauses) == 3
    for attempt, pause in enumerate(pauses, 1):
        cap = min(0.3, 0.1 * 2 ** (attempt - 1))
        assert cap / 2 <= pause <= cap
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        call_with_retries(missing, policy=policy, what="t", sleep=pauses.append)
    assert calls == [1]

    def always():
        calls.append(1)
        raise ConnectionRefusedError()

    calls.clear()
    with pytest.raises(ConnectionRefusedError):
        call_with_retries(always, policy=policy, what="t", sleep=lambda s: None)
    assert len(calls) == 4


def test_which_errors_count_as_transient():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert is_transient(client_error(503, "SlowDown"))
    assert is_transient(client_error(500, "InternalError"))
    assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://x"))
    wrapped = OSError(errno.EIO, "wrapped")
    wrapped.__cause__ = client_error(502, "BadGateway")
    assert is_transient(wrapped)
    assert not is_transient(client_error(404, "NoSuchKey"))
    assert not is_transient(client_error(403, "AccessDenied"))
    assert not is_transient(CacheCorruptError("bad checksum"))
    assert not is_transient(FileNotFoundError())
