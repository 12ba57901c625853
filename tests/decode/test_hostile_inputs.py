"""The hostile-input corpus at build and load time: what can never decode is refused at
build, by name; the rest decodes as Pillow decodes it; the decode path refuses on its own
what the build would have refused (for caches written before these checks).

Real files (tests/fixtures/hostile/, see its generator), a real build, a real loader.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, features

from slipstream import DecodeOnly, SampleError, SlipstreamDataset, SlipstreamLoader, build_cache
from slipstream.cache import Codec
from slipstream.decode.jpeg_frame import read_frame

from ..helpers import rewrite_cache_file
from ..hostile import EXPECTED, HOSTILE_DIR, hostile_files

sys.path.insert(0, str(HOSTILE_DIR.parent))
import make_hostile_fixtures as gen  # noqa: E402


def test_the_corpus_is_complete_and_small():
    files = hostile_files()
    assert set(files) == set(EXPECTED)
    assert sum(len(d) for d in files.values()) < 64 << 10


def test_the_pure_python_encoders_wrote_the_committed_files():
    """The lossless and 12-bit files come from this repository's own encoders (no tool at
    hand writes them): regenerating them gives the committed bytes."""
    files = hostile_files()
    img = gen.natural()
    assert gen.lossless_jpeg(img) == files["lossless_rgb_48x40.jpg"]
    assert gen.lossless_jpeg(img[..., 1]) == files["lossless_gray_48x40.jpg"]
    assert gen.corpus()["12bit_gray_48x40.jpg"] == files["12bit_gray_48x40.jpg"]


@pytest.mark.skipif(not (features.version("libjpeg_turbo") or "0").startswith(("3", "4")),
                    reason="Pillow's libjpeg-turbo predates lossless decoding (3.0)")
@pytest.mark.parametrize("name,channel", [("lossless_rgb_48x40.jpg", None),
                                          ("lossless_gray_48x40.jpg", 1)])
def test_the_lossless_files_are_real_lossless_jpegs(name, channel):
    """An independent decoder (Pillow's libjpeg-turbo 3) reads them back exactly."""
    with Image.open(HOSTILE_DIR / name) as im:
        got = np.asarray(im)
    want = gen.natural() if channel is None else gen.natural()[..., channel]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name,marker,precision,size", [
    ("lossless_rgb_48x40.jpg", 0xC3, 8, (40, 48)),
    ("12bit_gray_48x40.jpg", 0xC1, 12, (40, 48)),  # handmade: nothing here decodes 12-bit
    ("arithmetic_48x40.jpg", 0xC9, 8, (40, 48)),
    ("progressive_48x40.jpg", 0xC2, 8, (40, 48)),
    ("header_lies_13000x13000.jpg", 0xC0, 8, (13000, 13000)),
])
def test_frame_headers(name, marker, precision, size):
    frame = read_frame((HOSTILE_DIR / name).read_bytes())
    assert frame is not None
    assert (frame.marker, frame.precision, (frame.height, frame.width)) == (
        marker, precision, size)


def _folder(tmp_path, names):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for name in names:
        (root / "a" / name).write_bytes((HOSTILE_DIR / name).read_bytes())
    return root


@pytest.mark.parametrize("name", [n for n, (what, _) in EXPECTED.items() if what == "refused"])
def test_the_build_refuses_by_name(tmp_path, name):
    root = _folder(tmp_path, ["baseline_48x40.jpg", name])
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match=EXPECTED[name][1]) as err:
        ds.build_cache(progress=False)
    assert name in str(err.value)
    assert ds.find_cache() is None


def test_max_pixels_is_a_setting(tmp_path):
    root = _folder(tmp_path, ["bilevel_9000x9000.png"])
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match="more than max_pixels=80,000,000"):
        build_cache(ds.source, ds.store, progress=False, max_pixels=80_000_000)
    cache = build_cache(ds.source, ds.store, progress=False, max_pixels=81_000_000)
    assert (int(cache.column("image").heights[0]), cache.attrs["max_pixels"]) == (
        9000, 81_000_000)
    for bad in (0, -1, 2.5, True, 10**12):
        with pytest.raises(ValueError, match="max_pixels"):
            build_cache(ds.source, ds.store, progress=False, max_pixels=bad)


def _decode_all(cache):
    with SlipstreamLoader(cache, batch_size=len(cache), shuffle=False, seed=0,
                          pipelines={"image": [DecodeOnly()]}, num_threads=2) as loader:
        batch = next(iter(loader))
    return dict(zip(batch["path"], batch["image"]))


def test_what_decodes_decodes_like_pillow(tmp_path):
    names = [n for n, (what, _) in EXPECTED.items() if what == "decodes"]
    cache = SlipstreamDataset(_folder(tmp_path, names),
                              cache_dir=tmp_path / "cache").build_cache(progress=False)
    codecs = dict(zip((cache[i]["path"] for i in range(len(cache))),
                      cache.column("image").codecs.tolist()))
    assert codecs["a/cmyk_48x40.jpg"] == Codec.ENCODED
    assert codecs["a/arithmetic_48x40.jpg"] == Codec.JPEG
    for path, img in _decode_all(cache).items():
        with Image.open(HOSTILE_DIR / path.split("/")[1]) as im:
            want = np.asarray(im.convert("RGB")).astype(int)
        err = np.abs(img.numpy().astype(int) - want)
        # Pillow bundles another libjpeg-turbo release: the same IDCT, within a level
        assert err.max() <= 1, (path, err.max())


def test_a_truncated_jpeg_fails_at_decode_by_name(tmp_path):
    cache = SlipstreamDataset(_folder(tmp_path, ["baseline_48x40.jpg", "truncated_48x40.jpg"]),
                              cache_dir=tmp_path / "cache").build_cache(progress=False)
    with pytest.raises(SampleError, match=EXPECTED["truncated_48x40.jpg"][1]) as err:
        _decode_all(cache)
    assert "truncated_48x40.jpg" in str(err.value)


@pytest.mark.parametrize("name", ["lossless_rgb_48x40.jpg", "12bit_gray_48x40.jpg"])
def test_the_decode_path_refuses_what_the_build_would(tmp_path, name):
    """A cache from before the build refused such files (or a hostile one, its checksums
    consistent) stores one as an ordinary JPEG: decoding it must be a SampleError raised
    before libjpeg-turbo sees the bytes (a libjpeg-turbo 3 ignores the DCT scale for
    lossless JPEGs and writes past the buffer), and on_error="skip" skips it."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # big enough to hold the other
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(noisy).save(root / "a" / f"{k}.jpg", quality=100)
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    col = cache.column("image")
    planted = (HOSTILE_DIR / name).read_bytes()
    assert len(planted) <= int(col.sizes[1])
    offset = int(col.heap.offsets[1])
    rel = "image/heap/c/0"
    heap = bytearray((cache.path / rel).read_bytes())
    # the JPEG ends at its EOI marker; the old image's tail after it is ignored
    heap[offset:offset + len(planted)] = planted
    rewrite_cache_file(cache.path, rel, bytes(heap))
    cache.close()
    reopened = type(cache)(cache.path)
    reason = EXPECTED[name][1]
    with pytest.raises(SampleError, match="refused before decoding: it is " + reason) as err:
        _decode_all(reopened)
    assert "a/1.jpg" in str(err.value)
    loader = SlipstreamLoader(reopened, batch_size=3, shuffle=False, seed=0, on_error="skip",
                              pipelines={"image": [DecodeOnly()]}, num_threads=2)
    paths = [p for b in loader for p in b["path"]]
    assert paths == ["a/0.jpg", "a/2.jpg"]
    assert re.search(reason, str(loader.skipped[0]))


def test_deriving_yuv420_refuses_what_the_build_would(tmp_path):
    """The YUV 4:2:0 derivation decodes stored JPEGs too: the same guard applies."""
    from slipstream.decode.libturbojpeg import JpegDecodeError, TurboDecoder
    from slipstream.decode.yuv import jpeg_to_yuv420

    turbo = TurboDecoder()
    try:
        for name in ("lossless_rgb_48x40.jpg", "12bit_gray_48x40.jpg"):
            data = np.frombuffer((HOSTILE_DIR / name).read_bytes(), np.uint8)
            with pytest.raises(JpegDecodeError, match="refused before decoding"):
                jpeg_to_yuv420(turbo, data)
        ok = np.frombuffer((HOSTILE_DIR / "baseline_48x40.jpg").read_bytes(), np.uint8)
        assert jpeg_to_yuv420(turbo, ok).size == 48 * 40 + 2 * 24 * 20
    finally:
        turbo.close()


def _png_claiming(height: int, width: int) -> bytes:
    """An 8x8 PNG whose header (IHDR, its CRC fixed) claims ``height x width``."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    i = data.index(b"IHDR")
    data[i + 4:i + 12] = struct.pack(">II", width, height)
    data[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(data[i:i + 17])))
    return bytes(data)


def test_max_pixels_decides_not_pillows_warning_threshold():
    """Pillow warns above 89,478,485 pixels; a build that raised max_pixels past that
    accepts such a header, and the default refuses it by max_pixels, by name."""
    from slipstream.cache.images import probe_image

    data = _png_claiming(10000, 10000)
    assert probe_image(data, "big.png", max_pixels=100_000_000).height == 10000
    with pytest.raises(SampleError, match="big.png: the image claims 10000x10000"):
        probe_image(data, "big.png")


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(prefix=st.sampled_from([b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00\x10"]),
       body=st.binary(max_size=200))
def test_read_frame_never_fails_on_any_bytes(prefix, body):
    """The frame-header walk runs on untrusted bytes in the build and before every decode:
    any input gives a frame with in-range fields, or None; never an exception."""
    frame = read_frame(prefix + body)
    if frame is not None:
        assert 0xC0 <= frame.marker <= 0xCF and 0 <= frame.precision <= 255
        assert 0 <= frame.height < 65536 and 0 <= frame.width < 65536


def test_a_refused_header_does_not_poison_the_threads_header_reader():
    """libjpeg-turbo 2.1 leaves a TurboJPEG handle inside the header after an error, and
    every later header read on it failed ("two SOI markers"): a build thread that met one
    bad JPEG then stored every good JPEG after it as a Pillow-decoded image. Each error now
    starts a fresh handle."""
    from slipstream.decode.libturbojpeg import JpegDecodeError, TurboDecoder

    turbo = TurboDecoder()
    try:
        good = (HOSTILE_DIR / "baseline_48x40.jpg").read_bytes()
        for name in ("12bit_gray_48x40.jpg", "truncated_48x40.jpg", "lossless_rgb_48x40.jpg"):
            try:
                turbo.header((HOSTILE_DIR / name).read_bytes())
            except JpegDecodeError:
                pass
            head = turbo.header(good)
            assert (head.height, head.width) == (40, 48), name
    finally:
        turbo.close()
