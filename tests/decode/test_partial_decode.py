"""Region decoding in the native kernel: a JPEG crop decodes only its region, through the
libjpeg API of the system's libjpeg-turbo (``jpeg_crop_scanline``, ``jpeg_skip_scanlines``).

What is checked, and against what
---------------------------------
* Against Pillow, through the loader, with the same per-regime tolerances as the full
  decode (tests/decode/test_decoders.py: ``assert_within_tolerance``), on JPEGs of every
  subsampling (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, grayscale, and 2x1 sampling in every
  component), odd and tiny sizes, progressive and with restart markers; crops that
  enlarge, shrink, and shrink with DCT scaling. The region path's batches equal the
  whole-image path's exactly.
* Against an independent whole-image decode (TurboJPEG's ``tjDecompress2`` through
  slipstream's ctypes binding, at the same DCT scale, then cropped), before any resize:
  the kernel is asked for an output exactly the size of the scaled box, where its
  resize is the identity. On boxes that touch every edge and corner, 1-pixel strips,
  the whole image and random boxes, at scales 1, 1/2, 1/4 and 1/8: identical. The
  region is decoded a few pixels wider than the crop (``CONTEXT``) so that chroma
  upsampling sees the same neighbours as in a full decode. (Images of a few pixels are
  compared with the kernel's own whole-image mode only: there ``tjDecompress2`` picks a
  larger scale that gives the same size.)
* ``fast=True`` (plain chroma upsampling: libjpeg-turbo's row skipping with merged
  upsampling writes past the buffer) never skips or crops: its region and whole-image
  results are identical.
* Errors: truncated and corrupt JPEGs are errors whichever crop is asked for, with the
  same code as a whole-image decode; malformed JPEGs the library would decode at
  another geometry than planned are refused before a row is written.
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
from slipstream.decode import kernel, pixels
from slipstream.decode.kernel import KernelDecodeError, decode_sample
from slipstream.decode.libturbojpeg import TurboDecoder, library_path, scaled_size
from slipstream.errors import SampleError
from slipstream.sample_data import natural_image

from ..helpers import encode, set_jpeg_decode
from .test_decoders import assert_within_tolerance, crop_cases

_TJSAMP = {"444": 0, "422": 1, "420": 2, "gray": 3, "440": 4, "411": 5}


def tj_encode(rgb: np.ndarray, subsampling: str, quality: int = 90) -> bytes:
    """Encode with libjpeg-turbo itself: Pillow cannot write 4:4:0 or 4:1:1."""
    c = ctypes
    lib = c.CDLL(library_path())
    lib.tjInitCompress.restype = c.c_void_p
    lib.tjCompress2.argtypes = [c.c_void_p, c.c_void_p, c.c_int, c.c_int, c.c_int, c.c_int,
                                c.POINTER(c.POINTER(c.c_ubyte)), c.POINTER(c.c_ulong), c.c_int,
                                c.c_int, c.c_int]
    lib.tjFree.argtypes = [c.c_void_p]
    lib.tjDestroy.argtypes = [c.c_void_p]
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    handle = lib.tjInitCompress()
    buf, size = c.POINTER(c.c_ubyte)(), c.c_ulong(0)
    try:
        assert lib.tjCompress2(handle, rgb.ctypes.data, w, w * 3, h, 0, c.byref(buf),
                               c.byref(size), _TJSAMP[subsampling], quality, 0) == 0
        return c.string_at(buf, size.value)
    finally:
        lib.tjFree(buf)
        lib.tjDestroy(handle)


def wide_sampling(rgb: np.ndarray) -> bytes:
    """2x1 sampling in all three components: TurboJPEG calls it 4:4:4 (8-pixel iMCU
    columns) but libjpeg crops it on 16-pixel columns."""
    raw = bytearray(encode(rgb, "JPEG", quality=90, subsampling=0))
    sof = raw.find(b"\xff\xc0")
    for k in range(3):
        raw[sof + 11 + 3 * k] = 0x21
    return bytes(raw)


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
    out["wide_64x80.jpg"] = wide_sampling(natural_image(rng, 64, 80))
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
#: tests/test_decoders.py measures; outputs of 32-64 pixels DCT-scaled by 1/8, and 4:1:1
#: images at 1/4 and below, exceed the ``dct`` bound on the full path too: those are
#: compared with the full decode only.
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


# -- against a whole-image decode, box by box ----------------------------------------------------
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


def scaled(box, d: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The box on the 1/d grid, rounded outwards and clipped (what the kernel decodes)."""
    top, left, bh, bw = box
    y0, x0 = top // d, left // d
    y1 = min(scaled_size(h, d), -(-(top + bh) // d))
    x1 = min(scaled_size(w, d), -(-(left + bw) // d))
    return y0, x0, y1 - y0, x1 - x0


def kernel_region(data: np.ndarray, h: int, w: int, box, d: int, region: bool = True,
                  fast: bool = False) -> np.ndarray:
    """The kernel's decoded pixels of ``box`` at 1/d: the output is the scaled box's own
    size, where the resize copies."""
    _, _, sh, sw = scaled(box, d, h, w)
    out = np.empty((sh, sw, 3), np.uint8)
    decode_sample(data, Codec.JPEG, h, w, [box], d, [out], region=region, fast=fast)
    return out


def test_region_decode_equals_an_independent_whole_image_decode():
    rng = np.random.default_rng(5)
    turbo = TurboDecoder()
    n = 0
    for name, raw in variety().items():
        data = np.frombuffer(raw, np.uint8)
        hdr = turbo.header(data)
        h, w = hdr.height, hdr.width
        for d in (1, 2, 4, 8):
            whole = np.empty((scaled_size(h, d), scaled_size(w, d), 3), np.uint8)
            turbo.decode_rgb(data, whole)
            independent = min(h, w) >= 64  # tiny images: tjDecompress2 picks another scale
            for box in edge_boxes(h, w, rng):
                got = kernel_region(data, h, w, box, d)
                y0, x0, sh, sw = scaled(box, d, h, w)
                want = (whole[y0 : y0 + sh, x0 : x0 + sw] if independent
                        else kernel_region(data, h, w, box, d, region=False))
                assert np.array_equal(got, want), (
                    f"{name} box {box} at 1/{d}: max {np.abs(got.astype(int) - want).max()}")
                n += 1
    assert n > 1500


def test_fast_decode_never_skips_or_crops():
    """``fast=True`` decodes every row and column down to the crop (merged upsampling
    with skipping is unsafe): its region and whole-image results are the same, and it
    differs from the accurate decode."""
    data = np.frombuffer(variety()["420_375x500.jpg"], np.uint8)
    box = (13, 73, 355, 343)
    fast = kernel_region(data, 375, 500, box, 1, fast=True)
    assert np.array_equal(fast, kernel_region(data, 375, 500, box, 1, region=False, fast=True))
    accurate = kernel_region(data, 375, 500, box, 1)
    assert not np.array_equal(fast, accurate)
    assert np.abs(fast.astype(int) - accurate).mean() < 4  # raw pixels: no resize averages


def test_decode_threads_each_use_their_own_worker():
    """One kernel worker per thread: concurrent region decodes give the same pixels as one
    thread alone."""
    images = [np.frombuffer(raw, np.uint8) for raw in variety().values()]
    rng = np.random.default_rng(9)
    turbo = TurboDecoder()
    jobs = []
    for data in images:
        hdr = turbo.header(data)
        for box in edge_boxes(hdr.height, hdr.width, rng)[:8]:
            jobs.append((data, hdr.height, hdr.width, box, 2))
    want = [kernel_region(*job) for job in jobs]
    failures: list[str] = []

    def work() -> None:
        for _ in range(3):
            for k, job in enumerate(jobs):
                if not np.array_equal(kernel_region(*job), want[k]):
                    failures.append(f"job {k}")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_union_of_views_decodes_once_with_each_views_pixels():
    """Several boxes of one sample (multi-crop) come from one region decode of their
    union: each equals its own decode alone."""
    data = np.frombuffer(variety()["420_601x803.jpg"], np.uint8)
    boxes = [(10, 20, 300, 400), (400, 600, 150, 160), (0, 0, 601, 803)]
    sizes = [(96, 128), (40, 40), (64, 80)]
    together = [np.empty((*s, 3), np.uint8) for s in sizes]
    decode_sample(data, Codec.JPEG, 601, 803, boxes, 2, together)
    for box, size, got in zip(boxes, sizes, together):
        alone = np.empty((*size, 3), np.uint8)
        decode_sample(data, Codec.JPEG, 601, 803, [box], 2, [alone])
        assert np.array_equal(got, alone), box


# -- errors ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(natural_image(np.random.default_rng(4), 240, 320), "JPEG", quality=90)


def _outcome(data: bytes, box, region: bool) -> str:
    try:
        out = np.empty((60, 80, 3), np.uint8)
        decode_sample(np.frombuffer(data, np.uint8), Codec.JPEG, 240, 320, [box], 1, [out],
                      region=region)
    except KernelDecodeError as exc:
        return kernel.ERROR_NAMES[exc.code]
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
def test_damaged_jpeg_fails_as_on_the_full_path(jpeg, damage):
    """Whichever crop is asked for, even one the damage does not reach: data that does
    not end with the end-of-image marker decodes to the end, so a truncated file is an
    error every epoch, not only when the random crop reaches its end."""
    data = damaged(jpeg, damage)
    for box in [(0, 0, 40, 60), (0, 0, 240, 320), (200, 280, 40, 40)]:
        full = _outcome(data, box, False)
        assert full != "ok", (box, full)
        assert _outcome(data, box, True) == full, box


@pytest.mark.parametrize("patch,code", [
    ("sof3", "corrupt"),  # lossless: libjpeg-turbo 2.x refuses it; 3.x would ignore the scale
    ("precision12", "corrupt"),  # 12-bit samples: refused, never read into 8-bit rows
    ("taller", "header mismatch"),  # the header lies about the size the cache stored
])
def test_jpegs_not_decodable_as_planned_are_refused(jpeg, patch, code):
    raw = bytearray(jpeg)
    sof = raw.find(b"\xff\xc0")
    if patch == "sof3":
        raw[sof + 1] = 0xC3
    elif patch == "precision12":
        raw[sof + 4] = 12
    else:
        raw[sof + 5 : sof + 7] = (480).to_bytes(2, "big")
    for region in (True, False):
        assert _outcome(bytes(raw), (0, 0, 240, 320), region) in (code, "unsupported")


def test_plans_the_kernel_cannot_obey_are_errors_not_writes(jpeg):
    data = np.frombuffer(jpeg, np.uint8)
    out = np.empty((8, 8, 3), np.uint8)
    with pytest.raises(KernelDecodeError, match="bad crop box"):
        decode_sample(data, Codec.JPEG, 240, 320, [(230, 0, 20, 20)], 1, [out])
    with pytest.raises(KernelDecodeError, match="unexpected output geometry"):
        decode_sample(data, Codec.JPEG, 240, 320, [(0, 0, 20, 20)], 3, [out])
    with pytest.raises(KernelDecodeError, match="bad size"):
        decode_sample(data, Codec.YUV420, 240, 320, [(0, 0, 20, 20)], 1, [out])
    with pytest.raises(KernelDecodeError, match="too large"):
        decode_sample(data, Codec.JPEG, 60000, 60000, [(0, 0, 20, 20)], 1, [out])
    table = np.array([[data.ctypes.data], [data.nbytes], [Codec.JPEG], [240], [320]],
                     np.uint64)
    one = dict(table=table, boxes=np.array([[0, 0, 20, 20]], np.int64),
               denoms=np.ones(1, np.int64))
    with pytest.raises(ValueError, match="outs"):  # an output buffer smaller than it says
        kernel.worker().run(*one.values(), (out[:4],), ((8, 8),), 0, 1, True, False,
                            kernel.MAX_PIXELS)
    with pytest.raises(ValueError, match="at least 10 items"):  # a slice past the arrays
        kernel.worker().run(*one.values(), (out,), ((8, 8),), 0, 2, True, False,
                            kernel.MAX_PIXELS)
    with pytest.raises(ValueError, match=r"table: expected uint64 \(5, n\)"):
        kernel.worker().run(table.reshape(-1), *list(one.values())[1:], (out,), ((8, 8),),
                            0, 1, True, False, kernel.MAX_PIXELS)


def test_kernel_pixel_bound_is_the_builds():
    from slipstream.cache.images import MAX_PIXELS

    assert kernel.MAX_PIXELS == MAX_PIXELS


def test_truncated_sample_is_a_sample_error_in_the_loader(writable_folder: Path, tmp_path,
                                                           monkeypatch):
    set_jpeg_decode(monkeypatch, "partial")
    victim = sorted(writable_folder.rglob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[:-200])  # header intact: the build succeeds
    cache = SlipstreamDataset(writable_folder, cache_dir=tmp_path / "c").build_cache(
        progress=False)
    pipelines = {"image": [DecodeRandomResizedCrop(16, scale=(0.01, 0.02))]}
    with pytest.raises(SampleError, match="truncated"):
        list(SlipstreamLoader(cache, batch_size=4, shuffle=False, num_threads=1,
                              pipelines=pipelines))
    for seed in range(3):  # small crops far from the damage: skipped every time
        loader = SlipstreamLoader(cache, batch_size=4, shuffle=False, seed=seed,
                                  num_threads=1, pipelines=pipelines, on_error="skip")
        list(loader)
        assert [e.index for e in loader.skipped] == [1]


# -- switching it off ----------------------------------------------------------------------------
def test_environment_turns_partial_decoding_off(monkeypatch):
    monkeypatch.setattr(pixels, "partial_decode", None)
    for value, on in [("0", False), ("1", True), ("", True)]:
        monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, value)
        monkeypatch.setattr(pixels, "_env_partial_decode", None)  # read once per process
        assert pixels.partial_decode_on() == on, value
    monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, "0")  # read once: a later change is not
    assert pixels.partial_decode_on()  # seen
    monkeypatch.setenv(pixels.PARTIAL_DECODE_ENV, "yes")
    monkeypatch.setattr(pixels, "_env_partial_decode", None)
    with pytest.raises(ValueError, match="SLIPSTREAM_PARTIAL_DECODE"):
        pixels.partial_decode_on()
    monkeypatch.setattr(pixels, "partial_decode", False)  # the module flag wins
    assert not pixels.partial_decode_on()


# -- the libraries -------------------------------------------------------------------------------
def test_build_time_header_reads_use_our_binding():
    """Cache builds read JPEG headers through slipstream's own TurboJPEG binding."""
    from slipstream.cache.images import header_reader, probe_image

    raw = encode(np.zeros((30, 40, 3), np.uint8), "JPEG")
    assert isinstance(header_reader(), TurboDecoder)
    info = probe_image(raw, "x.jpg")
    assert (info.height, info.width) == (30, 40)


def test_a_missing_kernel_says_how_to_build_it(monkeypatch, tmp_path):
    from slipstream.errors import MissingDependencyError

    monkeypatch.setattr(kernel, "_module", None)
    monkeypatch.setenv(kernel.KERNEL_ENV, str(tmp_path / "nowhere.so"))
    with pytest.raises(MissingDependencyError, match="nowhere.so"):
        kernel.load()
    monkeypatch.delenv(kernel.KERNEL_ENV)
    assert kernel.load().Worker  # the installed build


def test_reference_images_are_what_they_claim():
    """The variety really has each subsampling (TurboJPEG's own reading of the header)."""
    dec = TurboDecoder()
    seen = {}
    for name, raw in variety().items():
        seen[name.split("_")[0]] = dec.header(np.frombuffer(raw, np.uint8)).subsampling
    assert {k: v for k, v in seen.items() if k in _TJSAMP} == _TJSAMP
    assert seen["wide"] == _TJSAMP["444"]  # named 4:4:4, cropped on 16-pixel columns
    with Image.open(io.BytesIO(variety()["progressive_333x451.jpg"])) as im:
        assert im.info.get("progressive")
    assert variety()["restarts_333x451.jpg"].count(b"\xff\xdd") == 1  # a DRI marker


def test_simd_variants_give_the_same_pixels(jpeg):
    """The AVX2 resampler (chosen at import where the CPU has it) and the baseline SSE2
    one compute the same integer sums: identical outputs, checked in a child process
    that turns AVX2 off."""
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, sys, numpy as np\n"
        "from slipstream.decode.kernel import decode_sample, load\n"
        "data = np.frombuffer(sys.stdin.buffer.read(), np.uint8)\n"
        "h = hashlib.sha256()\n"
        "for box, size in [((0, 0, 240, 320), (224, 224)), ((13, 7, 101, 203), (57, 91)),\n"
        "                  ((100, 150, 20, 30), (64, 64))]:\n"
        "    out = np.empty((*size, 3), np.uint8)\n"
        "    decode_sample(data, 0, 240, 320, [box], 1, [out])\n"
        "    h.update(out.tobytes())\n"
        "print(load().SIMD, h.hexdigest())\n")
    runs = {}
    base = {k: v for k, v in os.environ.items() if k != "SLIPSTREAM_KERNEL_NO_AVX2"}
    for env in (base, {**base, "SLIPSTREAM_KERNEL_NO_AVX2": "1"}):
        simd, digest = subprocess.run([sys.executable, "-c", code], input=jpeg, env=env,
                                      capture_output=True, check=True).stdout.decode().split()
        runs[simd] = digest
    if len(runs) == 1:
        pytest.skip(f"only one SIMD variant on this machine: {list(runs)}")
    assert len(set(runs.values())) == 1, runs
