"""EXIF orientation: ignored by default (pixels as stored, as torchvision's ImageFolder
loader does), applied at build time on request (the image is stored upright). Checked
against Pillow, which decodes independently (``ImageOps.exif_transpose`` for the upright
reference)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from slipstream import DecodeOnly, SlipstreamDataset, SlipstreamLoader
from slipstream.cache import Codec
from slipstream.cli import main as cli_main
from slipstream.sample_data import natural_image


def _with_orientation(pixels: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buf, format=fmt, exif=exif.tobytes(), **options)
    return buf.getvalue()


@pytest.fixture
def oriented_folder(tmp_path):
    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    img = natural_image(np.random.default_rng(0), 40, 64)  # wide: rotation shows in shape
    files = {"rot90.jpg": _with_orientation(img, "JPEG", 6),
             "mirror.png": _with_orientation(img, "PNG", 2),
             "upright.jpg": _with_orientation(img, "JPEG", 1)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root.parent, files


def _decoded(cache):
    loader = SlipstreamLoader(cache, batch_size=len(cache), shuffle=False, seed=0,
                              pipelines={"image": [DecodeOnly()]}, num_threads=2)
    batch = next(iter(loader))
    return {p.split("/")[1]: img.numpy() for p, img in zip(batch["path"], batch["image"])}


def _pillow(data: bytes, upright: bool) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray((ImageOps.exif_transpose(im) if upright else im).convert("RGB"))


def test_by_default_the_tag_is_ignored(oriented_folder, tmp_path):
    root, files = oriented_folder
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "c").build_cache(progress=False)
    assert cache.attrs["exif_orientation"] == "ignore"
    for name, got in _decoded(cache).items():
        assert np.array_equal(got, _pillow(files[name], upright=False)), name
        assert got.shape == (40, 64, 3)
    # the stored bytes are the files' own
    assert sorted(cache[i]["image"] for i in range(len(cache))) == sorted(files.values())


def test_applied_at_build_the_images_are_stored_upright(oriented_folder, tmp_path):
    root, files = oriented_folder
    ignore = SlipstreamDataset(root, cache_dir=tmp_path / "c")
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "c", exif_orientation="apply")
    assert ds.cache_key() != ignore.cache_key()  # another content, another cache
    cache = ds.build_cache(progress=False)
    assert cache.attrs["exif_orientation"] == "apply"
    got = _decoded(cache)
    assert got["rot90.jpg"].shape == (64, 40, 3)  # rotated: the height is now 64
    # one generation of JPEG loss (quality 95, 4:4:4) for the rotated JPEG
    err = np.abs(got["rot90.jpg"].astype(int) - _pillow(files["rot90.jpg"], upright=True))
    # (measured: mean 1.6, max 10 on this small, detailed image)
    assert err.mean() < 2.5 and err.max() <= 16, (err.mean(), err.max())
    # a PNG is re-encoded losslessly; an upright image is stored as it was
    assert np.array_equal(got["mirror.png"], _pillow(files["mirror.png"], upright=True))
    stored = {cache[i]["path"]: cache[i]["image"] for i in range(len(cache))}
    assert stored["a/upright.jpg"] == files["upright.jpg"]
    codecs = dict(zip(stored, cache.column("image").codecs.tolist()))
    assert codecs["a/rot90.jpg"] == Codec.JPEG and codecs["a/mirror.png"] == Codec.ENCODED
    with pytest.raises(ValueError, match="exif_orientation"):
        SlipstreamDataset(root, cache_dir=tmp_path / "c", exif_orientation="auto")


def test_the_command_line_option(oriented_folder, tmp_path, capsys):
    root, _ = oriented_folder
    assert cli_main(["build", str(root), "--cache-dir", str(tmp_path / "c"), "-q",
                     "--exif-orientation", "apply"]) == 0
    path = capsys.readouterr().out.split()[0]
    assert SlipstreamDataset(root, cache_dir=tmp_path / "c",
                             exif_orientation="apply").cache_key() in path
