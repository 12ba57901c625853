"""Bad input at build time: a clear error naming the sample, and no cache published."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from slipstream import SampleError, SlipstreamDataset
from slipstream.sample_data import natural_image

from .helpers import encode


def _sof_with_size(jpeg: bytes, height: int, width: int) -> bytes:
    """Rewrite the frame header (SOF0) of a baseline JPEG to claim another size."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


@pytest.mark.parametrize("name,content,message", [
    ("empty.jpg", b"", "empty"),
    ("notes.jpg", b"this is a text file, not a JPEG", "not an image"),
    ("truncated.png", None, "corrupt or truncated"),
    ("bomb.jpg", "bomb", "30000x30000"),
])
def test_bad_files_are_named_and_nothing_is_published(tmp_path, name, content, message):
    root = tmp_path / "data"
    good = encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90)
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.jpg").write_bytes(good)
    if content is None:
        content = encode(natural_image(np.random.default_rng(1), 40, 48), "PNG")[:100]
    elif content == "bomb":
        content = _sof_with_size(good, 30000, 30000)
    (root / "a" / name).write_bytes(content)
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match=message) as err:
        ds.build_cache(progress=False)
    assert name in str(err.value)
    assert ds.find_cache() is None
    assert not [p for p in (tmp_path / "cache").glob("*") if p.name != ".tmp"]
    assert not [p for p in (tmp_path / "cache" / ".tmp").glob("*") if p.is_dir()]


def test_non_image_files_in_an_imagefolder_are_skipped(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(
        encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90))
    (root / "a" / "labels.csv").write_text("x,y\n")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    assert [cache[i]["path"] for i in range(len(cache))] == ["a/1.jpg"]


def _folder_with_one_good_image(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.jpg").write_bytes(
        encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90))
    return root


def test_a_broken_symlink_to_an_image_is_named_not_dropped(tmp_path):
    root = _folder_with_one_good_image(tmp_path)
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match="cannot read image") as err:
        ds.build_cache(progress=False)
    assert "gone.jpg" in str(err.value) and "No such file" in str(err.value)
    assert ds.find_cache() is None


def test_a_symlink_loop_in_an_imagefolder_is_listed_once(tmp_path):
    root = _folder_with_one_good_image(tmp_path)
    (root / "a" / "again").symlink_to(root / "a", target_is_directory=True)
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    assert [cache[i]["path"] for i in range(len(cache))] == ["a/good.jpg"]


_BUILD_AS_NOBODY = """
import os, sys
import PIL.Image, PIL.JpegImagePlugin, numpy, json, hashlib  # noqa: F401
from slipstream import SampleError, SlipstreamDataset
ds = SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2])
# root reads any file: drop to nobody so that permissions apply (after the imports: the
# interpreter's own files may be private to root)
os.setgid(65534)
os.setuid(65534)
try:
    ds.build_cache(progress=False)
except SampleError as exc:
    print("SampleError:", exc)
    sys.exit(3)
"""


def test_an_unreadable_file_is_named_and_nothing_is_published(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() == 0:
        # root reads any file: build in a child running as nobody, over a directory
        # nobody can reach (pytest's tmp_path lives under a root-only directory)
        base = Path(tempfile.mkdtemp(prefix="slipstream-unreadable-"))
        base.chmod(0o755)
    else:
        base = tmp_path
    try:
        root = _folder_with_one_good_image(base)
        secret = root / "a" / "secret.jpg"
        secret.write_bytes((root / "a" / "good.jpg").read_bytes())
        secret.chmod(0)
        cache_dir = base / "cache"
        if os.geteuid() == 0:
            cache_dir.mkdir(mode=0o777)
            cache_dir.chmod(0o777)
            done = subprocess.run([sys.executable, "-c", _BUILD_AS_NOBODY, str(root),
                                   str(cache_dir)], capture_output=True, text=True,
                                  timeout=300, cwd="/")
            assert done.returncode == 3, done.stdout + done.stderr
            message = done.stdout
        else:
            with pytest.raises(SampleError) as err:
                SlipstreamDataset(root, cache_dir=cache_dir).build_cache(progress=False)
            message = str(err.value)
        assert "secret.jpg" in message and "Permission denied" in message
        assert SlipstreamDataset(root, cache_dir=cache_dir).find_cache() is None
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)
