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
