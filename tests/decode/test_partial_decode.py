"""Partial JPEG decoding: with a TurboJPEG 3 library, a crop decodes only its region.

What is checked, and against what
---------------------------------
* Against Pillow, through the loader, with the same per-regime tolerances as the full
  decode (tests/decode/test_decoders.py: ``assert_within_tolerance``), on JPEGs of every
  subsampling TurboJPEG names (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, grayscale), odd and
  tiny sizes, progressive and with restart markers; crops that enlarge, shrink, and
  shrink with DCT scaling.
* Against the full decode (whole image, then crop), before any resize, on boxes that
  touch every edge and corner, 1-pixel strips, the whole image and random boxes, at
  DCT scales 1, 1/2, 1/4 and 1/8, with the accurate and the fast IDCT. The region is
  decoded a few pixels wider than the crop (``_tj3.CONTEXT``) so that chroma upsampling
  sees the same neighbours as in a full decode. Measured: identical, max difference 0
  and mean 0, on every box here and on ~20000 random crops (sizes 1-700 pixels, every
  subsampling, baseline and progressive); without the margin, up to 56 levels on the
  crop's outermost pixels (mean 0.02-0.5 per crop). The one exception is not about
  crops: images of a few pixels, where ``tjDecompress2`` picks a larger scale (3/8
  rather than 1/8) because both give the same size.
* ``fast=True`` (plain chroma upsampling) always decodes the whole image: libjpeg-turbo's
  row skipping with merged upsampling writes past the buffer (it crashed the process).
* Errors: truncated and corrupt JPEGs raise ``JpegDecodeError`` (``SampleError`` in the
  loader) as on the full path, whichever crop is asked for.
* Library discovery: the environment variable wins, a system TurboJPEG 3 library next,
  then the ``turbojpeg`` wheel's, then a system 2.x library; nothing found is a
  ``MissingDependencyError`` that says how to install one.
"""

from __future__ import annotations

import ctypes
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slipstream import DecodeCenterCrop, DecodeRandomResizedCrop, SlipstreamDataset, SlipstreamLoader
from slipstream.cache import Cache, Codec
from slipstream.decode import _tj3, libturbojpeg, pixels
from slipstream.decode.libturbojpeg import JpegDecodeError, TurboDecoder, library, library_path
from slipstream.decode.pixels import ThreadState, dct_denominator, decode_region
from slipstream.errors import MissingDependencyError, SampleError
from slipstream.sample_data import natural_image

from ..helpers import TURBOJPEG3_EXPECTED, encode, require_partial_decode, set_jpeg_decode
from .test_decoders import assert_within_tolerance, crop_cases

_TJSAMP = {"444": 0, "422": 1, "420": 2, "gray": 3, "440": 4, "411": 5}


@pytest.fixture(scope="module", autouse=True)
def _needs_tj3() -> None:
    """Before the module's fixtures too: they encode with TurboJPEG 3 library calls."""
    require_partial_decode()


def tj_encode(rgb: np.ndarray, subsampling: str, quality: int = 90) -> bytes:
    """Encode with libjpeg-turbo itself: Pillow cannot write 4:4:0 or 4:1:1."""
    lib = library()
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    handle = lib.tjInitCompress()
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    try:
        assert lib.tjCompress2(handle, rgb.ctypes.data, w, w * 3, h, 0, ctypes.byref(buf),
                               ctypes.byref(size), _TJSAMP[subsampling], quality, 0) == 0
        return ctypes.string_at(buf, size.value)
    finally:
        lib.tjFree(buf)
        lib.tjDestroy(handle)


def variety() -> dict[str, bytes]:
    """JPEGs of every subsampling, odd and tiny sizes, progressive, restart markers."""
    rng = np.random.default_rng(21)
    out = {}
    for h, w in [(375, 500), (97, 131), (601, 803), (7, 5)]:
        img = natural_image(rng, h, w)
        for sub in ("444", "422", "420"):
            out[f"{sub}_{h}x{w}.jpg"] = encode(img, "JPEG", quality=90,
                                               subsampling=f"4:{sub[1]}:{sub[2]}")
        out[f"gray_{h}x{w}.jpg"] = encode(img[..., 1].copy(), "JPEG", quality=90)
    img = natural_image(rng, 333, 451)
    out["440_333x451.jpg"] = tj_encode(img, "440")
    out["411_333x451.jpg"] = tj_encode(img, "411")
    out["progressive_333x451.jpg"] = encode(img, "JPEG", quality=85, progressive=True)
    out["restarts_333x451.jpg"] = encode(img, "JPEG", quality=85, restart_marker_blocks=3)
    return out


@pytest.fixture(scope="module")
def variety_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    root = tmp_path_factory.mktemp("partial") / "data"
    (root / "a").mkdir(parents=True)
    for name, data in variety().items():
        (root / "a" / name).write_bytes(data)
    cache = SlipstreamDataset(root, cache_dir=tmp_path_factory.mktemp("partial-cache")
                              ).build_cache(progress=False)
    assert set(cache.column("image").codecs.tolist()) == {Codec.JPEG}
    return cache


# -- against Pillow, through the loader --------------------------------------------------------
#: name: (decoder, whether the Pillow tolerances apply). They are stated for the crops
#: tests/decode/test_decoders.py measures; outputs of 32-64 pixels DCT-scaled by 1/8, and 4:1:1
#: images at 1/4 and below, exceed the ``dct`` bound on the full path too (mean up to
#: 10.7 against 6): those are compared with the full decode only.
DECODERS = {
    "rrc224": (lambda: DecodeRandomResizedCrop(224), True),
    "rrc112": (lambda: DecodeRandomResizedCrop(112), True),
    "center224": (lambda: DecodeCenterCrop(224), True),
    "center48x80": (lambda: DecodeCenterCrop((48, 80)), True),
    "rrc64": (lambda: DecodeRandomResizedCrop(64), False),
    "rrc32": (lambda: DecodeRandomResizedCrop(32), False),
}


def test_partial_crops_match_pillow_as_the_full_decode_does(variety_cache, monkeypatch):
    """Same tolerances as the full path, every regime exercised; and the batches are
    identical to the full path's."""
    cases = []
    for name, (make, against_pillow) in DECODERS.items():
        for seed in (0, 1):
            set_jpeg_decode(monkeypatch, "partial")
            if against_pillow:
                cases += crop_cases(variety_cache, make(), seed)
            partial = _batch(variety_cache, make(), seed)
            set_jpeg_decode(monkeypatch, "full")
            full = _batch(variety_cache, make(), seed)
            assert torch.equal(partial, full), f"{name} seed {seed}: partial != full decode"
    assert {c.regime for c in cases} == {"enlarge", "shrink", "dct"}
    assert_within_tolerance(cases)


def _batch(cache: Cache, decoder, seed: int) -> torch.Tensor:
    loader = SlipstreamLoader(cache, batch_size=len(cache), shuffle=False, seed=seed,
                              pipelines={"image": [decoder]}, num_threads=2)
    return next(iter(loader))["image"].clone()


# -- against the full decode, box by box ---------------------------------------------------------
def edge_boxes(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Corners, edges, 1-pixel strips, the whole image, and random boxes."""
    bh, bw = max(1, (h * 2) // 3), max(1, (w * 3) // 5)
    boxes = [(0, 0, bh, bw), (0, w - bw, bh, bw), (h - bh, 0, bh, bw), (h - bh, w - bw, bh, bw),
             (0, 0, h, w), (0, 0, h, 1), (0, w - 1, h, 1), (0, 0, 1, w), (h - 1, 0, 1, w),
             (h // 3, w // 3, 1, 1), (0, 0, h, min(w, 2)), (0, w - min(w, 2), h, min(w, 2))]
    for _ in range(12):
        bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        boxes.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw))
    return boxes


def _region(state: ThreadState, data: np.ndarray, h: int, w: int, box, out: tuple[int, int],
            fast: bool = False) -> np.ndarray:
    return decode_region(state, data, Codec.JPEG, h, w, box, *out, fast=fast).copy()


@pytest.mark.parametrize("fast_dct", [False, True])
def test_partial_region_equals_the_full_decode_crop(monkeypatch, fast_dct):
    rng = np.random.default_rng(5)
    state = ThreadState(fast_dct=fast_dct)
    scales, n = set(), 0
    for name, raw in variety().items():
        data = np.frombuffer(raw, np.uint8)
        hdr = state.turbo.header(data)
        for box in edge_boxes(hdr.height, hdr.width, rng):
            for d in (1, 2, 4, 8):  # an output size that makes the decoder pick 1/d
                out = (max(1, box[2] // d), max(1, box[3] // d))
                scales.add(dct_denominator(box[2], box[3], *out))
                monkeypatch.setattr(pixels, "partial_decode", False)
                full = _region(state, data, hdr.height, hdr.width, box, out)
                monkeypatch.setattr(pixels, "partial_decode", True)
                part = _region(state, data, hdr.height, hdr.width, box, out)
                assert part.shape == full.shape, (name, box, out)
                assert np.array_equal(part, full), (
                    f"{name} box {box} at 1/{dct_denominator(box[2], box[3], *out)}: max "
                    f"{np.abs(part.astype(int) - full).max()}")
                n += 1
    assert scales == {1, 2, 4, 8} and n > 1000


def test_fast_decode_never_takes_the_region_path(monkeypatch):
    """``fast=True`` means merged chroma upsampling, with which libjpeg-turbo's row
    skipping writes past the output buffer: such crops decode the whole image."""
    set_jpeg_decode(monkeypatch, "partial")
    state = ThreadState()
    calls = []
    real = state.turbo.decode_region_rgb
    monkeypatch.setattr(state.turbo, "decode_region_rgb",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    data = np.frombuffer(variety()["420_375x500.jpg"], np.uint8)
    fast = _region(state, data, 375, 500, (13, 73, 355, 343), (100, 100), fast=True)
    assert not calls
    accurate = _region(state, data, 375, 500, (13, 73, 355, 343), (100, 100))
    assert calls and fast.shape == accurate.shape and not np.array_equal(fast, accurate)


def test_region_decode_without_context_differs_at_the_edges():
    """Why ``_tj3.CONTEXT`` exists: decoding exactly the (aligned) crop changes its border
    pixels in a 4:2:0 image; the margin brings them back."""
    data = np.frombuffer(encode(natural_image(np.random.default_rng(2), 200, 300), "JPEG",
                                quality=92), np.uint8)
    full = np.empty((200, 300, 3), np.uint8)
    dec = TurboDecoder()
    dec.decode_rgb(data, full)
    box = (40, 64, 100, 150)  # left on the 16-pixel iMCU grid: no column of context
    scratch = lambda h, w: np.empty((h, w, 3), np.uint8)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_tj3, "CONTEXT", 0)
        bare = dec.decode_region_rgb(data, box, 1, scratch)
    with_context = dec.decode_region_rgb(data, box, 1, scratch)
    want = full[40:140, 64:214]
    assert np.abs(bare.astype(int) - want).max() > 4
    assert np.array_equal(with_context, want)


def test_sampling_wider_than_its_turbojpeg_name_decodes_whole_rows():
    """2x1 sampling in all three components: TurboJPEG calls it 4:4:4 (8-pixel iMCU) but
    libjpeg crops on 16-pixel columns and refuses an 8-aligned region; the decoder then
    decodes whole rows, same pixels."""
    raw = bytearray(encode(natural_image(np.random.default_rng(3), 64, 80), "JPEG",
                           quality=90, subsampling=0))
    sof = raw.find(b"\xff\xc0")
    for k in range(3):
        raw[sof + 11 + 3 * k] = 0x21
    data = np.frombuffer(bytes(raw), np.uint8)
    dec = TurboDecoder()
    assert dec.header(data).subsampling == _TJSAMP["444"]
    full = np.empty((64, 80, 3), np.uint8)
    dec.decode_rgb(data, full)
    for left in (10, 26, 40):
        got = dec.decode_region_rgb(data, (5, left, 30, 20), 1,
                                    lambda h, w: np.empty((h, w, 3), np.uint8))
        assert np.array_equal(got, full[5:35, left : left + 20]), left


def test_decode_threads_each_use_their_own_handles(monkeypatch):
    """One decoder per thread, as for the full decode: concurrent region decodes give
    the same pixels as one thread alone."""
    set_jpeg_decode(monkeypatch, "partial")
    images = [np.frombuffer(raw, np.uint8) for raw in variety().values()]
    rng = np.random.default_rng(9)
    jobs = []
    alone = ThreadState()
    for data in images:
        hdr = alone.turbo.header(data)
        for box in edge_boxes(hdr.height, hdr.width, rng)[:8]:
            jobs.append((data, hdr.height, hdr.width, box))
    want = [_region(alone, *job, (max(1, job[3][2] // 2), max(1, job[3][3] // 2)), False)
            for job in jobs]
    failures: list[str] = []

    def work() -> None:
        state = ThreadState()
        for _ in range(3):
            for k, job in enumerate(jobs):
                got = _region(state, *job, (max(1, job[3][2] // 2), max(1, job[3][3] // 2)),
                              False)
                if not np.array_equal(got, want[k]):
                    failures.append(f"job {k}")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# -- errors ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(natural_image(np.random.default_rng(4), 240, 320), "JPEG", quality=90)


def _outcome(data: bytes, box, partial: bool, monkeypatch) -> str:
    monkeypatch.setattr(pixels, "partial_decode", partial)
    try:
        decode_region(ThreadState(), np.frombuffer(data, np.uint8), Codec.JPEG, 240, 320, box,
                      60, 80)
    except JpegDecodeError as exc:
        return f"JpegDecodeError: {str(exc).split(': ', 1)[1]}"
    return "ok"


def damaged(jpeg: bytes, damage: str) -> bytes:
    sof, dht = jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc4")
    if damage == "truncated":
        return jpeg[: len(jpeg) * 2 // 3]
    if damage == "truncated-early":
        return jpeg[:700]
    if damage == "zero-height":  # SOF: marker, length, precision, then the height
        return jpeg[: sof + 5] + b"\x00\x00" + jpeg[sof + 7 :]
    if damage == "bad-huffman":  # DHT: marker, length, class/id, then 16 code counts
        return jpeg[: dht + 5] + b"\xff" * 16 + jpeg[dht + 21 :]
    if damage == "no-sof":
        return jpeg.replace(b"\xff\xc0", b"\xff\xfe")
    raise AssertionError(damage)


@pytest.mark.parametrize("damage", ["truncated", "truncated-early", "zero-height",
                                    "bad-huffman", "no-sof"])
def test_damaged_jpeg_fails_as_on_the_full_path(jpeg, damage, monkeypatch):
    """Whichever crop is asked for, even one the damage does not reach: data that does
    not end with the end-of-image marker decodes whole, so a truncated file is an error
    every epoch, not only when the random crop reaches its end. (libjpeg's message is
    the same; the step it names may differ.)"""
    data = damaged(jpeg, damage)
    for box in [(0, 0, 40, 60), (0, 0, 240, 320), (200, 280, 40, 40)]:
        full = _outcome(data, box, False, monkeypatch)
        part = _outcome(data, box, True, monkeypatch)
        assert full.startswith("JpegDecodeError"), (box, full)
        assert part == full, box


def test_region_decode_reports_truncation_it_reaches(jpeg):
    """The region decoder itself sees only the data its rows need: truncation inside the
    region is an error; beyond it, not (why ``decode_region`` checks the end marker)."""
    data = np.frombuffer(jpeg[: len(jpeg) // 2], np.uint8)
    dec = TurboDecoder()
    scratch = lambda h, w: np.empty((h, w, 3), np.uint8)  # noqa: E731
    with pytest.raises(JpegDecodeError, match="Premature end"):
        dec.decode_region_rgb(data, (200, 0, 40, 320), 1, scratch)
    assert dec.decode_region_rgb(data, (0, 0, 16, 320), 1, scratch).shape == (16, 320, 3)
    with pytest.raises(ValueError, match="not inside"):
        dec.decode_region_rgb(np.frombuffer(jpeg, np.uint8), (0, 300, 10, 40), 1, scratch)


def test_truncated_sample_is_a_sample_error_in_the_loader(writable_folder: Path, tmp_path,
                                                           monkeypatch):
    set_jpeg_decode(monkeypatch, "partial")
    victim = sorted(writable_folder.rglob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[:-200])  # header intact: the build succeeds
    cache = SlipstreamDataset(writable_folder, cache_dir=tmp_path / "c").build_cache(
        progress=False)
    pipelines = {"image": [DecodeRandomResizedCrop(16, scale=(0.01, 0.02))]}
    with pytest.raises(SampleError):
        list(SlipstreamLoader(cache, batch_size=4, shuffle=False, num_threads=1,
                              pipelines=pipelines))
    for seed in range(3):  # small crops far from the damage: skipped every time
        loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=seed,
                                  num_threads=1, pipelines=pipelines, on_error="skip")
        list(loader)
        assert [e.index for e in loader.skipped] == [1]


# -- switching it off ----------------------------------------------------------------------------
def test_environment_turns_partial_decoding_off(jpeg, monkeypatch):
    state = ThreadState()
    calls = []
    real = state.turbo.decode_region_rgb
    monkeypatch.setattr(state.turbo, "decode_region_rgb",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    data = np.frombuffer(jpeg, np.uint8)
    monkeypatch.setattr(pixels, "partial_decode", None)
    for value, used in [("0", False), ("1", True), ("", True)]:
        monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, value)
        monkeypatch.setattr(pixels, "_env_partial_decode", None)  # read once per process
        calls.clear()
        decode_region(state, data, Codec.JPEG, 240, 320, (10, 10, 100, 100), 50, 50)
        assert bool(calls) == used, value
    monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, "0")  # read once: a later change is not
    decode_region(state, data, Codec.JPEG, 240, 320, (10, 10, 100, 100), 50, 50)  # seen
    assert calls
    monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, "yes")
    monkeypatch.setattr(pixels, "_env_partial_decode", None)
    with pytest.raises(ValueError, match="SLIPSTREAM_PARTIAL_DECODE"):
        decode_region(state, data, Codec.JPEG, 240, 320, (10, 10, 100, 100), 50, 50)
    monkeypatch.setattr(pixels, "partial_decode", False)  # the module flag wins
    calls.clear()
    decode_region(state, data, Codec.JPEG, 240, 320, (10, 10, 100, 100), 50, 50)
    assert not calls


# -- the library ---------------------------------------------------------------------------------
def test_abi_check_passes_and_would_catch_a_wrong_parameter_number(monkeypatch):
    lib = library()
    _tj3.check_abi(lib, library_path())
    # TJPARAM_SCANLIMIT: settable on a decompressor, no effect on a baseline JPEG
    monkeypatch.setattr(_tj3, "TJPARAM_FASTDCT", 13)
    with pytest.raises(RuntimeError, match="FASTDCT=1 differs"):
        _tj3.check_abi(lib, "this lib")
    monkeypatch.setattr(_tj3, "TJPARAM_FASTDCT", 10)
    monkeypatch.setattr(_tj3, "TJPARAM_FASTUPSAMPLE", 11)  # TJPARAM_OPTIMIZE: refused
    with pytest.raises(RuntimeError, match="this lib: .*OPTIMIZE"):
        _tj3.check_abi(lib, "this lib")
    monkeypatch.setattr(_tj3, "TJPARAM_FASTUPSAMPLE", 9)
    monkeypatch.setattr(_tj3, "TJPARAM_JPEGWIDTH", 6)
    with pytest.raises(RuntimeError, match="tj3Get reads"):
        _tj3.check_abi(lib, "this lib")


def test_a_failed_abi_check_is_not_one_bad_sample(monkeypatch, jpeg):
    """It stops the loader even with ``on_error="skip"`` (MissingDependencyError), and
    says how to carry on."""
    monkeypatch.setattr(libturbojpeg, "_tj3_checked", False)
    monkeypatch.setattr(_tj3, "TJPARAM_JPEGWIDTH", 6)
    with pytest.raises(MissingDependencyError, match="SLIPSTREAM_PARTIAL_DECODE=0"):
        TurboDecoder().decode_region_rgb(np.frombuffer(jpeg, np.uint8), (0, 0, 8, 8), 1,
                                         lambda h, w: np.empty((h, w, 3), np.uint8))


@pytest.fixture
def no_system_library(monkeypatch):
    monkeypatch.delenv(libturbojpeg.TURBOJPEG_LIB_ENV, raising=False)
    monkeypatch.setattr(libturbojpeg.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(libturbojpeg, "_CANDIDATES", ())


def test_discovery_prefers_the_environment(monkeypatch):
    monkeypatch.setenv(libturbojpeg.TURBOJPEG_LIB_ENV, "/somewhere/libturbojpeg.so.0")
    assert libturbojpeg._find_library() == "/somewhere/libturbojpeg.so.0"


@pytest.mark.skipif(not TURBOJPEG3_EXPECTED, reason="the turbojpeg wheel is not installed here")
def test_discovery_finds_the_wheels_library(no_system_library):
    """Through the distribution's file record (``import turbojpeg`` may be PyTurboJPEG's)."""
    path = libturbojpeg._find_library()
    assert Path(path).parent.name == "turbojpeg.libs" and Path(path).is_file()
    assert hasattr(ctypes.CDLL(path), "tj3Init")


@pytest.mark.skipif(not TURBOJPEG3_EXPECTED, reason="the turbojpeg wheel is not installed here")
def test_discovery_order_system_tj3_then_wheel_then_system_2x(no_system_library, monkeypatch,
                                                              tmp_path):
    wheel = libturbojpeg._wheel_library()
    assert wheel is not None
    # a "system" library with the tj3 API beats the wheel's
    system3 = tmp_path / "libturbojpeg.so.0"
    system3.symlink_to(wheel)
    monkeypatch.setattr(libturbojpeg, "_CANDIDATES", (str(system3),))
    assert libturbojpeg._find_library() == str(system3)
    # a 2.x-only system library loses to the wheel's, but is used without it
    system2 = [p for p in ("/usr/lib/x86_64-linux-gnu/libturbojpeg.so.0",)
               if Path(p).exists() and not hasattr(ctypes.CDLL(p), "tj3Init")]
    if system2:
        monkeypatch.setattr(libturbojpeg, "_CANDIDATES", tuple(system2))
        assert libturbojpeg._find_library() == wheel
        monkeypatch.setattr(libturbojpeg, "WHEEL_DISTRIBUTION", "no-such-distribution")
        assert libturbojpeg._find_library() == system2[0]


def test_discovery_without_any_library_says_how_to_install_one(no_system_library, monkeypatch):
    monkeypatch.setattr(libturbojpeg, "WHEEL_DISTRIBUTION", "no-such-distribution")
    with pytest.raises(MissingDependencyError, match="apt-get install libturbojpeg0"):
        libturbojpeg._find_library()


def test_build_time_header_reads_use_our_binding():
    """Cache builds read JPEG headers through slipstream's own binding (no PyTurboJPEG,
    whose ``turbojpeg`` module the wheel's extension module would shadow)."""
    from slipstream.cache.images import header_reader, probe_image

    raw = encode(np.zeros((30, 40, 3), np.uint8), "JPEG")
    assert isinstance(header_reader(), TurboDecoder)
    info = probe_image(raw, "x.jpg")
    assert (info.height, info.width) == (30, 40)


def test_reference_images_are_what_they_claim():
    """The variety really has each subsampling (TurboJPEG's own reading of the header)."""
    dec = TurboDecoder()
    seen = {}
    for name, raw in variety().items():
        seen[name.split("_")[0]] = dec.header(np.frombuffer(raw, np.uint8)).subsampling
    assert {k: v for k, v in seen.items() if k in _TJSAMP} == _TJSAMP
    with Image.open(io.BytesIO(variety()["progressive_333x451.jpg"])) as im:
        assert im.info.get("progressive")
    assert variety()["restarts_333x451.jpg"].count(b"\xff\xdd") == 1  # a DRI marker
