"""Odd files inside a cache: a FIFO, a link to /dev/zero, a directory or an unreadable
file where a chunk should be. The loader and ``verify`` must neither hang nor crash, and
must name the real cause (a permissions problem is not damage). Real FIFOs, symlinks and
permissions; a child process running as nobody when the tests run as root."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from slipstream import DecodeCenterCrop, SlipstreamDataset, SlipstreamLoader, ToTorchImage
from slipstream.cache import Cache
from slipstream.cli import main as cli_main
from slipstream.errors import CacheCorruptError, CachePermissionError

CHUNKS = ["label/c/0", "image/heap/c/0", "image/sizes/c/0", "image/heights/zarr.json"]


@contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging (an open of a FIFO blocks until a writer comes)."""
    def on_alarm(signum, frame):
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_all(path: Path) -> None:
    """What a training run reads: every column, then an epoch."""
    cache = Cache(path)
    loader = SlipstreamLoader(cache, batch_size=8, shuffle=False, seed=0, num_threads=2,
                              pipelines={"image": [DecodeCenterCrop(16), ToTorchImage()]})
    for _ in loader:
        pass


@pytest.fixture
def built(image_folder, cache_root) -> Path:
    return SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False).path


def _replace(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


@pytest.mark.parametrize("rel", CHUNKS)
@pytest.mark.parametrize("how,kind", [("fifo", "a FIFO (named pipe)"),
                                      ("dev-zero", "a character device"),
                                      ("directory", "a directory")])
def test_a_non_regular_file_is_named_by_the_loader_and_verify(built, rel, how, kind, capsys):
    _replace(built / rel, how)
    with no_hang(), pytest.raises(CacheCorruptError,
                                     match=re.escape(f"is {kind}, not a regular file")):
        read_all(built)
    with no_hang():
        report = Cache(built).verify()
    assert any(p.startswith(f"{rel}: ") and f"is {kind}, not a regular file" in p
               for p in report.problems), report.problems
    with no_hang():
        assert cli_main(["verify", str(built), "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{rel}: " in err


def test_a_fifo_in_place_of_the_manifest_is_named(built):
    _replace(built / "zarr.json", "fifo")
    with no_hang(), pytest.raises(CacheCorruptError, match="zarr.json is a FIFO"):
        Cache(built)


_READ_AS_NOBODY = """
import os, sys
import numpy, PIL.Image, PIL.JpegImagePlugin, json, hashlib, cv2, torch  # noqa: F401
from slipstream import DecodeCenterCrop, SlipstreamLoader, ToTorchImage
from slipstream.cache import Cache
from slipstream.errors import CacheError
path = sys.argv[1]
# root reads any file: drop to nobody so that permissions apply (after the imports)
os.setgid(65534)
os.setuid(65534)
report = Cache(path).verify()
print("VERIFY:", *report.problems, sep="\\n")
try:
    cache = Cache(path)
    for _ in SlipstreamLoader(cache, batch_size=8, shuffle=False, seed=0, num_threads=2,
                              pipelines={"image": [DecodeCenterCrop(16), ToTorchImage()]}):
        pass
except CacheError as exc:
    print("LOADER:", type(exc).__name__, exc)
    sys.exit(3)
"""


@pytest.mark.parametrize("rel", ["label/c/0", "image/heap/c/0", "label/zarr.json"])
def test_an_unreadable_chunk_is_a_permissions_problem_not_damage(image_folder, tmp_path, rel):
    as_root = os.geteuid() == 0
    # nobody must reach the cache: pytest's tmp_path is under a root-only directory
    base = Path(tempfile.mkdtemp(prefix="slipstream-perm-")) if as_root else tmp_path
    try:
        base.chmod(0o755)
        path = SlipstreamDataset(image_folder, cache_dir=base / "cache").build_cache(
            progress=False).path
        for p in [base / "cache", *(base / "cache").rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (path / rel).chmod(0)
        if as_root:
            done = subprocess.run([sys.executable, "-c", _READ_AS_NOBODY, str(path)],
                                  capture_output=True, text=True, timeout=300, cwd="/")
            assert done.returncode == 3, done.stdout + done.stderr
            out = done.stdout
        else:
            report = Cache(path).verify()
            with pytest.raises(CachePermissionError) as err:
                read_all(path)
            out = ("VERIFY:\n" + "\n".join(report.problems)
                   + f"\nLOADER: CachePermissionError {err.value}")
        verify_part, loader_part = out.split("LOADER:")
        assert f"{rel}: " in verify_part and "permission denied" in verify_part
        assert "CachePermissionError" in loader_part and rel in loader_part
        assert "permission denied" in loader_part and "not damaged" in loader_part
        assert "delete" not in loader_part
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def test_an_oversized_chunk_is_refused_before_it_is_read(built):
    """Numeric chunks are read whole: one grown to 100 MB is refused by its size (the
    array's metadata bounds it), not loaded."""
    import tracemalloc

    with open(built / "label" / "c" / "0", "r+b") as f:
        f.truncate(100 << 20)  # a sparse file: 100 MB long, nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(CacheCorruptError, match="is 104,857,600 bytes, more than the"):
            Cache(built).column("label")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20
