"""Remote failures are one line that says what failed, on which object, and what to do,
and a remote operation never outlives its deadline. Real servers on loopback: weed (which
checks credentials), moto, and a socket server that accepts connections and never answers.
The CLI runs as a user runs it (a subprocess): one error line, exit code 2, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slipstream import SlipstreamDataset
from slipstream.errors import (
    ConfigurationError,
    RemoteAccessError,
    RemoteObjectNotFoundError,
    RemoteStoreError,
    RemoteTimeoutError,
)
from slipstream.sample_data import make_image_folder
from slipstream.stores import LocalStore, RetryPolicy, open_remote_store, pull_cache, push_cache

from .._servers import ACCESS_KEY, SECRET


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slipstream.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def assert_one_line_error(r: subprocess.CompletedProcess[str], command: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"slipstream {command}: error:"), r.stderr
    return lines[0]


@pytest.fixture
def built_cache(tmp_path):
    folder = make_image_folder(tmp_path / "data", num_classes=2, images_per_class=3,
                               size=(32, 40), seed=7)
    return SlipstreamDataset(folder, cache_dir=tmp_path / "A").build_cache(progress=False)


# -- wrong credentials ---------------------------------------------------------------------
def test_wrong_credentials_are_one_line_naming_the_store(weed_server, request, tmp_path):
    endpoint = weed_server.endpoint
    bucket = endpoint.new_bucket(request.node.name)
    wrong = "not-the-secret-7f3e2a"
    store = open_remote_store(f"s3://{bucket}/caches", endpoint_url=endpoint.endpoint_url,
                              storage_options={"key": ACCESS_KEY, "secret": wrong},
                              retry=RetryPolicy(attempts=2, base_delay=0.01))
    for operation in (store.names,
                      lambda: store.get_file("ab" * 20, "label/c/0", tmp_path / "c0")):
        with pytest.raises(RemoteAccessError) as info:
            operation()
        message = str(info.value)
        assert isinstance(info.value, PermissionError)
        assert f"s3://{bucket}/caches" in message and "credentials" in message
        assert "SignatureDoesNotMatch" in message  # the service's own code
        assert wrong not in message and "\n" not in message
    r = run_cli("ls-remote", f"s3://{bucket}/caches", "--endpoint-url", endpoint.endpoint_url,
                "--storage-option", f"key={ACCESS_KEY}", "--storage-option", f"secret={wrong}")
    line = assert_one_line_error(r, "ls-remote")
    assert "refused" in line and "credentials" in line and wrong not in r.stderr + r.stdout
    endpoint.delete_bucket(bucket)


# -- a missing bucket ------------------------------------------------------------------------
def test_push_to_a_missing_bucket_says_create_it(s3_server, built_cache, tmp_path):
    store = open_remote_store("s3://no-such-bucket-4d1c/caches",
                              storage_options=s3_server.storage_options,
                              retry=RetryPolicy(attempts=2, base_delay=0.01))
    with pytest.raises(RemoteObjectNotFoundError) as info:
        push_cache(built_cache, store, threads=2, progress=False)
    message = str(info.value)
    assert "s3://no-such-bucket-4d1c/caches/" + built_cache.key in message
    assert "bucket" in message and "does not exist" in message and "Create it" in message
    r = run_cli("push", str(built_cache.path), "--remote", "s3://no-such-bucket-4d1c/caches",
                "--endpoint-url", s3_server.endpoint_url, "--storage-option", "key=testing-key",
                "--storage-option", "secret=testing-secret", "-q")
    assert "Create it" in assert_one_line_error(r, "push")


# -- an object deleted from a committed cache -----------------------------------------------
def test_an_object_deleted_from_a_committed_cache_is_named_with_the_repair(
        s3_server, s3_bucket, built_cache, tmp_path):
    url = f"s3://{s3_bucket}/caches"
    store = open_remote_store(url, storage_options=s3_server.storage_options)
    push_cache(built_cache, store, threads=2, progress=False)
    victim = "label/c/0"
    s3_server.client().delete_object(Bucket=s3_bucket, Key=f"caches/{built_cache.key}/{victim}")
    local = LocalStore(tmp_path / "B")
    with pytest.raises(RemoteObjectNotFoundError) as info:
        pull_cache(store, built_cache.key, local, threads=2, progress=False)
    message = str(info.value)
    assert f"{url}/{built_cache.key}/{victim} is missing" in message
    assert f"push --repair {built_cache.key}" in message and "\n" not in message
    assert not local.has(built_cache.key)  # nothing published
    r = run_cli("pull", built_cache.key, "--remote", url, "--endpoint-url",
                s3_server.endpoint_url, "--storage-option", "key=testing-key",
                "--storage-option", "secret=testing-secret", "--cache-dir",
                str(tmp_path / "C"), "-q")
    assert victim in assert_one_line_error(r, "pull")


# -- an endpoint that accepts connections and never answers ---------------------------------
class SilentServer:
    """Accepts TCP connections on loopback and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("reader", ["obstore", "s3fs"])
def test_a_hung_endpoint_times_out_by_the_deadline_and_says_so(silent_server, tmp_path, reader,
                                                               monkeypatch):
    if reader == "obstore":
        pytest.importorskip("obstore", reason="obstore is in the s3 and test extras")
    monkeypatch.setenv("SLIPSTREAM_S3_READER", "auto" if reader == "obstore" else "s3fs")
    deadline = 1.5
    store = open_remote_store("s3://hung/caches", endpoint_url=silent_server.url,
                              storage_options={"key": ACCESS_KEY, "secret": SECRET},
                              retry=RetryPolicy(deadline=deadline))
    assert store.download_client == reader
    for operation in (store.names, lambda: store.get("ab" * 20, "zarr.json"),
                      lambda: store.get_file("ab" * 20, "image/heap/c/0", tmp_path / "c0"),
                      lambda: store.put("ab" * 20, "x", b"data")):
        started = time.monotonic()
        with pytest.raises(RemoteTimeoutError) as info:
            operation()
        elapsed = time.monotonic() - started
        # not a speed goal: the point is that it ends (botocore alone would wait 60 s per
        # read, times its attempts, times ours)
        assert elapsed < deadline + 15, elapsed
        message = str(info.value)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, RemoteStoreError)
        assert "timed out" in message and "1.5 s" in message and "s3://hung/caches" in message
        assert "SLIPSTREAM_REMOTE_TIMEOUT" in message and SECRET not in message
    assert silent_server.accepted  # the requests really reached the server


def test_the_cli_deadline_comes_from_the_environment(silent_server):
    r = run_cli("ls-remote", "s3://hung/caches", "--endpoint-url", silent_server.url,
                "--storage-option", f"key={ACCESS_KEY}", "--storage-option", f"secret={SECRET}",
                env={"SLIPSTREAM_REMOTE_TIMEOUT": "1"})
    line = assert_one_line_error(r, "ls-remote")
    assert "timed out" in line and "within 1 s" in line and SECRET not in r.stderr


def test_a_deadline_must_be_positive(monkeypatch):
    with pytest.raises(ConfigurationError, match="deadline"):
        RetryPolicy(deadline=0)
    monkeypatch.setenv("SLIPSTREAM_REMOTE_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="SLIPSTREAM_REMOTE_TIMEOUT.*'soon'"):
        RetryPolicy()
    r = run_cli("ls-remote", "s3://any/caches", env={"SLIPSTREAM_REMOTE_TIMEOUT": "-1"})
    assert "positive number of seconds" in assert_one_line_error(r, "ls-remote")


def test_local_paths_in_messages_stay_paths(tmp_path: Path):
    store = LocalStore(tmp_path / "s")
    with pytest.raises(RemoteObjectNotFoundError, match=str(tmp_path / "s")):
        store.get("ab" * 20, "zarr.json")


def test_listing_a_missing_bucket_says_so_and_an_empty_prefix_is_empty(s3_server, s3_bucket):
    store = open_remote_store("s3://no-such-bucket-9e2b/caches",
                              storage_options=s3_server.storage_options)
    with pytest.raises(RemoteObjectNotFoundError, match="bucket of s3://no-such-bucket-9e2b"):
        store.names()
    empty = open_remote_store(f"s3://{s3_bucket}/nothing/here",
                              storage_options=s3_server.storage_options)
    assert empty.names() == [] and empty.keys() == []
