"""Decoders against an independent reference (Pillow), pixel by pixel, and crop geometry.

How the comparisons work
------------------------
A crop decoder's output for sample ``k`` is compared with Pillow's

    Image.open(bytes).convert("RGB").crop((left, top, left + w, top + h))
                     .resize((W, H), Image.BILINEAR)

using the box ``(top, left, h, w)`` that the decoder itself planned (``decoder.plan``
with the loader's seed and epoch 0; ``shuffle=False`` so the batch is ``arange(n)``).
The geometry is tested separately, against a scalar re-implementation of torchvision's
``RandomResizedCrop.get_params`` and against the definition of a centred crop.

Why the pixel comparison needs tolerances, and which
----------------------------------------------------
Error = ``|slipstream - Pillow|`` per pixel and channel, in uint8 levels. The cases are
split by the *regime* of the crop ``h x w`` resized to ``H x W`` (decided here from the
box, independently of the library's own decision):

* ``enlarge`` (``h <= H`` and ``w <= W``): OpenCV ``INTER_LINEAR`` and Pillow's bilinear
  filter are the same interpolation (Pillow's filter support does not widen when
  enlarging); they differ only by fixed-point rounding. Bound: **max error <= 2**
  (measured: max 1, mean <= 0.3).
* ``shrink`` (any other case without DCT scaling): OpenCV's ``INTER_AREA`` is a box
  filter over the source pixels an output pixel covers; Pillow's ``BILINEAR`` when
  shrinking is a triangle filter whose support grows with the factor. Both are
  anti-aliased averages but with different weights, so they disagree on fine grain and
  at edges. Bounds: **per-image mean <= 2.5**, **per-image 99th percentile <= 16**,
  **mean over all images <= 1.5** (measured: per-image mean <= 1.8, p99 <= 10, overall
  ~0.75).
* ``dct`` (``h >= 2H`` and ``w >= 2W``): libjpeg-turbo decodes at 1/2, 1/4 or 1/8 scale
  (its reduced-size IDCT, a sharper reduction than any spatial filter), and the
  decoder takes the crop on the scaled grid, rounded outwards to whole scaled pixels,
  so the region it resizes can extend up to ``d - 1`` source pixels past the planned box
  on each side (a sub-output-pixel shift). Bounds: **per-image mean <= 6**, **per-image
  99th percentile <= 45**, **mean over all images <= 4** (measured: per-image mean
  <= 4.6, p99 <= 33, overall ~2.5).

Every test asserts which regimes it actually exercised, so a bound is never vacuous.

``DecodeResizeCrop`` is compared with torchvision's definition (Pillow resize of the
shorter side to 256, then centre crop 224) on image sizes where both definitions give
the same box (the crop's offsets are whole pixels at both scales); resizing before
cropping lets Pillow's filter see pixels outside the crop, so when enlarging the
outermost output row/column may differ (excluded: a 2-pixel border). On arbitrary sizes
the two definitions place the box up to half a resized pixel apart, which is a
different crop, not a decoding error: there the geometry is checked (within one resized
pixel) instead of the pixels.

``DecodeOnly`` of a baseline JPEG must equal Pillow's decode exactly (both are
libjpeg-turbo with the accurate integer IDCT and fancy upsampling); non-JPEG images go
through Pillow in slipstream too, so they must also be exact, except 16-bit grayscale
(scaled to 8 bits: +-1 for the rounding convention).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slipstream import (
    DecodeCenterCrop,
    DecodeOnly,
    DecodeRandomResizedCrop,
    DecodeResizeCrop,
    ReadBytes,
    SlipstreamDataset,
    SlipstreamLoader,
)
from slipstream.cache import Cache, Codec
from slipstream.decode.geometry import ATTEMPTS, center_crop_boxes, random_resized_crop_boxes
from slipstream.decoders import ImageColumnView, PackedBytes
from slipstream.sample_data import make_image_folder, natural_image
from slipstream.transforms.base import BatchContext

from ..helpers import encode, set_jpeg_decode

SEED = 1234

# Tolerances, in uint8 levels (see the module docstring for why).
ENLARGE_MAX = 2
SHRINK_MEAN, SHRINK_P99, SHRINK_OVERALL_MEAN = 2.5, 16, 1.5
DCT_MEAN, DCT_P99, DCT_OVERALL_MEAN = 6.0, 45, 4.0


# -- fixtures ---------------------------------------------------------------------------------
def _build(root: Path, cache_dir: Path) -> Cache:
    return SlipstreamDataset(root, cache_dir=cache_dir).build_cache(progress=False)


@pytest.fixture(scope="module")
def small_cache(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """18 JPEGs of about 120 x 160 (sizes jittered by up to 20%)."""
    return _build(image_folder, tmp_path_factory.mktemp("dec-small-cache"))


@pytest.fixture(scope="module")
def large_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """3 photo-sized JPEGs (about 1536 x 2048) and 4 ImageNet-sized ones (about 375 x 500):
    crops here are mostly at least twice a 224 (or 112) output, so DCT scaling applies."""
    root = tmp_path_factory.mktemp("dec-large") / "data"
    make_image_folder(root, class_names=["photo"], images_per_class=3, size=(1536, 2048),
                      size_jitter=0.1, seed=3)
    make_image_folder(root, class_names=["imagenet"], images_per_class=4, size=(375, 500),
                      seed=4)
    return _build(root, tmp_path_factory.mktemp("dec-large-cache"))


#: Sizes where torchvision's Resize(256) + CenterCrop(224) and DecodeResizeCrop(256, 224)
#: choose exactly the same source box, by regime of the final resize.
ALIGNED_SIZES = {
    (128, 160): "enlarge", (160, 128): "enlarge",
    (384, 480): "shrink", (480, 384): "shrink",
    (512, 640): "dct", (640, 512): "dct",
    (256, 256): "identity",
}


@pytest.fixture(scope="module")
def aligned_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    root = tmp_path_factory.mktemp("dec-aligned") / "data"
    rng = np.random.default_rng(11)
    for i, (h, w) in enumerate(ALIGNED_SIZES):
        p = root / "a" / f"{i:02d}_{h}x{w}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(natural_image(rng, h, w), "JPEG", quality=90))
    return _build(root, tmp_path_factory.mktemp("dec-aligned-cache"))


@pytest.fixture(scope="module")
def formats_cache(formats_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return _build(formats_folder, tmp_path_factory.mktemp("dec-formats-cache"))


# -- the independent reference ---------------------------------------------------------------
def reference_rgb(data: bytes) -> Image.Image:
    """What an RGB decode of ``data`` should be, computed with Pillow alone.

    Transparent images are composited on white; 16-bit grayscale is scaled to 8 bits.
    """
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode.startswith("I;16"):
        scaled = np.rint(np.asarray(im, np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


_decoded: dict[tuple[str, int], Image.Image] = {}


def reference_full(cache: Cache, k: int) -> Image.Image:
    key = (str(cache.path), k)
    if key not in _decoded:
        _decoded[key] = reference_rgb(cache[k]["image"])
    return _decoded[key]


def regime(h: int, w: int, out_h: int, out_w: int) -> str:
    if h <= out_h and w <= out_w:
        return "enlarge"
    if h >= 2 * out_h and w >= 2 * out_w:
        return "dct"
    return "shrink"


@dataclass
class Case:
    k: int
    box: tuple[int, int, int, int]
    regime: str
    err: np.ndarray  # |slipstream - reference|, int16, (H, W, 3)

    def describe(self) -> str:
        e = self.err
        return (f"sample {self.k} box {self.box} [{self.regime}]: mean {e.mean():.2f}, "
                f"p99 {np.percentile(e, 99):.0f}, max {e.max()}")


def decode_batch(cache: Cache, decoder, seed: int = SEED):
    """Every sample of ``cache`` through ``decoder`` in one unshuffled batch, with the
    boxes the decoder planned for it."""
    n = len(cache)
    loader = SlipstreamLoader(cache, batch_size=n, shuffle=False, seed=seed,
                              pipelines={"image": [decoder]}, num_threads=2)
    batch = next(iter(loader))
    col = cache.column("image")
    plan = decoder.plan(BatchContext(loader.seed, 0, np.arange(n)),
                        ImageColumnView(col.heights, col.widths, col.sizes))
    return batch, plan


def crop_cases(cache: Cache, decoder, seed: int = SEED) -> list[Case]:
    batch, boxes = decode_batch(cache, decoder, seed)
    out = batch["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    oh, ow = decoder.size
    assert tuple(out.shape) == (len(cache), oh, ow, 3)
    cases = []
    for k in range(len(cache)):
        top, left, h, w = (int(v) for v in boxes[k])
        ref = reference_full(cache, k).crop((left, top, left + w, top + h))
        ref = np.asarray(ref.resize((ow, oh), Image.BILINEAR), np.int16)
        err = np.abs(out[k].numpy().astype(np.int16) - ref)
        cases.append(Case(k, (top, left, h, w), regime(h, w, oh, ow), err))
    return cases


def assert_within_tolerance(cases: list[Case]) -> None:
    by = {r: [c for c in cases if c.regime == r] for r in ("enlarge", "shrink", "dct")}
    for c in by["enlarge"]:
        assert c.err.max() <= ENLARGE_MAX, c.describe()
    for c in by["shrink"]:
        assert c.err.mean() <= SHRINK_MEAN, c.describe()
        assert np.percentile(c.err, 99) <= SHRINK_P99, c.describe()
    for c in by["dct"]:
        assert c.err.mean() <= DCT_MEAN, c.describe()
        assert np.percentile(c.err, 99) <= DCT_P99, c.describe()
    if by["shrink"]:
        overall = np.mean([c.err.mean() for c in by["shrink"]])
        assert overall <= SHRINK_OVERALL_MEAN, f"shrink: mean over images {overall:.2f}"
    if by["dct"]:
        overall = np.mean([c.err.mean() for c in by["dct"]])
        assert overall <= DCT_OVERALL_MEAN, f"dct: mean over images {overall:.2f}"


# -- crop decoders against Pillow --------------------------------------------------------------
CROP_CASES = {
    # name: (cache fixture, decoder factory, regimes that must occur, seeds)
    "rrc224-small": ("small_cache", lambda: DecodeRandomResizedCrop(224), {"enlarge"}, (0, 1)),
    "rrc64-small": ("small_cache", lambda: DecodeRandomResizedCrop(64), {"shrink"}, (0, 1)),
    "rrc48x80-small": ("small_cache", lambda: DecodeRandomResizedCrop((48, 80)), {"shrink"},
                       (0,)),
    "center224-small": ("small_cache", lambda: DecodeCenterCrop(224), {"enlarge"}, (0,)),
    "center64-small": ("small_cache", lambda: DecodeCenterCrop(64), {"shrink"}, (0,)),
    "center48x80-small": ("small_cache", lambda: DecodeCenterCrop((48, 80)), {"shrink"}, (0,)),
    "rrc224-large": ("large_cache", lambda: DecodeRandomResizedCrop(224), {"dct"}, (0, 1)),
    "rrc112-large": ("large_cache", lambda: DecodeRandomResizedCrop(112), {"dct"}, (0,)),
    "center224-large": ("large_cache", lambda: DecodeCenterCrop(224), {"dct"}, (0,)),
    "center48-formats": ("formats_cache", lambda: DecodeCenterCrop(48), {"shrink"}, (0,)),
}


@pytest.mark.parametrize("decode", ["full", "partial"])
@pytest.mark.parametrize("name", list(CROP_CASES))
def test_crop_decoders_match_pillow(name, decode, request, monkeypatch):
    """Both JPEG paths: whole-image decode then crop, and region-only decode
    (tests/decode/test_partial_decode.py)."""
    set_jpeg_decode(monkeypatch, decode)
    fixture, make, must_cover, seeds = CROP_CASES[name]
    cache = request.getfixturevalue(fixture)
    cases = []
    for seed in seeds:
        cases += crop_cases(cache, make(), seed)
    seen = {c.regime for c in cases}
    assert must_cover <= seen, f"{name}: expected regimes {must_cover}, got {seen}"
    assert_within_tolerance(cases)


def test_enlarging_is_bilinear_within_one_level_or_two(small_cache):
    cases = crop_cases(small_cache, DecodeCenterCrop(224))
    assert {c.regime for c in cases} == {"enlarge"}
    worst = max(int(c.err.max()) for c in cases)
    assert worst <= ENLARGE_MAX


def test_reference_comparison_detects_a_one_pixel_shift(small_cache):
    """The tolerances are tight enough to notice a box off by one source pixel."""
    decoder = DecodeCenterCrop(224)
    batch, boxes = decode_batch(small_cache, decoder)
    shifted_worst = []
    for k in range(len(small_cache)):
        top, left, h, w = (int(v) for v in boxes[k])
        ref = reference_full(small_cache, k).crop((left + 1, top, left + 1 + w, top + h))
        ref = np.asarray(ref.resize((224, 224), Image.BILINEAR), np.int16)
        shifted_worst.append(np.abs(batch["image"][k].numpy().astype(np.int16) - ref).max())
    assert min(shifted_worst) > ENLARGE_MAX


def test_regime_split_agrees_with_the_decoders_dct_decision(large_cache, small_cache):
    """The looser ``dct`` bounds apply exactly to the crops the decoder DCT-scales (the
    library's documented rule: crop at least twice the output on both sides)."""
    from slipstream.decode.pixels import dct_denominator

    for cache, decoder in ((large_cache, DecodeCenterCrop(224)),
                           (large_cache, DecodeRandomResizedCrop(112)),
                           (small_cache, DecodeRandomResizedCrop(64))):
        _, boxes = decode_batch(cache, decoder)
        for _top, _left, h, w in boxes:
            expect_dct = regime(int(h), int(w), *decoder.size) == "dct"
            assert (dct_denominator(int(h), int(w), *decoder.size) > 1) == expect_dct


EDGE_IMAGE, EDGE_X, EDGE_BOX_SIDE = 1026, 200, 900


@pytest.fixture(scope="module")
def edge_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """A grey 1026 x 1026 JPEG, dark left of column 200 and light from it on (the edge on
    an 8-pixel block boundary, so the JPEG itself keeps it sharp)."""
    root = tmp_path_factory.mktemp("dec-edge") / "data"
    (root / "a").mkdir(parents=True)
    img = np.full((EDGE_IMAGE, EDGE_IMAGE), 30, np.uint8)
    img[:, EDGE_X:] = 220
    (root / "a" / "edge.jpg").write_bytes(encode(img, "JPEG", quality=95))
    return _build(root, tmp_path_factory.mktemp("dec-edge-cache"))


def _edge_position(profile: np.ndarray) -> float:
    """Where a rising edge crosses half height, in output pixels (pixel j spans [j, j+1))."""
    mid = (profile.min() + profile.max()) / 2
    j = int(np.argmax(profile >= mid)) - 1
    return j + 0.5 + (mid - profile[j]) / (profile[j + 1] - profile[j])


@pytest.mark.parametrize("decode", ["full", "partial"])
@pytest.mark.parametrize("size,dct", [(460, 1), (224, 4), (112, 8)])
def test_crop_lands_where_the_planned_box_says(edge_cache, size, dct, decode, monkeypatch):
    """The edge at source column 200 must appear at output position
    ``(200 - left) * size / width`` of the box the decoder planned, whether or not DCT
    scaling is used (the centre crop here is (63, 63, 900, 900), not aligned to the 1/d
    grid).

    With DCT scaling by 1/d the decoder must resize exactly the planned box: taking the
    box rounded outwards to whole scaled pixels (left 63 -> 56 for d = 8) moves the edge
    by about half an output pixel. Without scaling (size 460) this measurement agrees
    with the box to about 0.05 pixels.
    """
    from slipstream.decode.pixels import dct_denominator

    set_jpeg_decode(monkeypatch, decode)
    decoder = DecodeCenterCrop(size, ratio=EDGE_BOX_SIDE / EDGE_IMAGE)
    batch, boxes = decode_batch(edge_cache, decoder)
    top, left, h, w = (int(v) for v in boxes[0])
    assert abs(left - 63) <= 8 and abs(w - EDGE_BOX_SIDE) <= 16  # about the centre crop
    assert dct_denominator(h, w, size, size) == dct
    profile = batch["image"][0].numpy()[:, :, 0].astype(np.float64).mean(axis=0)
    expected = (EDGE_X - left) * size / w
    got = _edge_position(profile)
    assert abs(got - expected) <= 0.2, (f"edge at {got:.3f} output px; the planned box "
                                        f"{(top, left, h, w)} puts it at {expected:.3f} "
                                        f"(DCT 1/{dct})")


# -- DecodeResizeCrop --------------------------------------------------------------------------
def torchvision_resize_center_crop_box(H: int, W: int, resize: int, crop: int):
    """torchvision ``Resize(resize)`` + ``CenterCrop(crop)`` on a PIL image: the resized
    size, the crop's offsets there, and the crop as a float box in source pixels."""
    if W <= H:
        nw, nh = resize, int(resize * H / W)
    else:
        nh, nw = resize, int(resize * W / H)
    top_r = int(round((nh - crop) / 2.0))
    left_r = int(round((nw - crop) / 2.0))
    sy, sx = H / nh, W / nw
    return (nh, nw), (top_r, left_r), (top_r * sy, left_r * sx, crop * sy, crop * sx)


def test_resize_crop_box_matches_torchvision_geometry():
    """Each edge of the planned box is within two pixels of the resized image (plus one
    source pixel) of torchvision's. Sources of difference: torchvision rounds the offset
    to whole resized pixels and truncates the resized long side (its crop is up to one
    resized pixel longer on that axis); slipstream rounds to whole source pixels, and
    may align a box to the 1/d DCT grid (d - 1 < one resized pixel)."""
    rng = np.random.default_rng(0)
    H = rng.integers(230, 3000, 3000)
    W = rng.integers(230, 3000, 3000)
    H[:4], W[:4] = [256, 300, 1000, 230], [256, 1000, 300, 4000]
    dec = DecodeResizeCrop(256, 224)
    boxes = dec.plan(BatchContext(0, 0, np.arange(len(H))), ImageColumnView(H, W, H * 0))
    for (top, left, h, w), hh, ww in zip(boxes, H, W, strict=True):
        hh, ww = int(hh), int(ww)
        assert top >= 0 and left >= 0 and top + h <= hh and left + w <= ww
        (nh, nw), _, (tt, tl, th, tw) = torchvision_resize_center_crop_box(hh, ww, 256, 224)
        sy, sx = hh / nh, ww / nw  # one pixel of the resized image, in source pixels
        what = (hh, ww, (top, left, h, w), (tt, tl, th, tw))
        assert abs(top - tt) <= 2 * sy + 1 and abs(top + h - (tt + th)) <= 2 * sy + 1, what
        assert abs(left - tl) <= 2 * sx + 1 and abs(left + w - (tl + tw)) <= 2 * sx + 1, what


def test_center_crop_plan_is_the_centred_square():
    """For sizes where no DCT alignment can apply (crop below twice the output), the
    plan is ``center_crop_boxes`` grown to even coordinates (the 4:2:0 chroma grid): at
    most one pixel on each side, and never outside the image."""
    H = np.array([100, 120, 150, 333, 97])
    W = np.array([100, 160, 120, 250, 301])
    dec = DecodeCenterCrop(224)
    plan = dec.plan(BatchContext(0, 0, np.arange(5)), ImageColumnView(H, W, H * 0))
    exact = center_crop_boxes(H, W, 224 / 256)
    top, left, h, w = plan.T
    assert ((top % 2 == 0) & (left % 2 == 0)).all()
    assert (top <= exact[:, 0]).all() and (exact[:, 0] - top <= 1).all()
    assert (left <= exact[:, 1]).all() and (exact[:, 1] - left <= 1).all()
    assert ((top + h) >= exact[:, 0] + exact[:, 2]).all() and ((top + h) <= H).all()
    assert ((left + w) >= exact[:, 1] + exact[:, 3]).all() and ((left + w) <= W).all()
    assert ((h - exact[:, 2]) <= 2).all() and ((w - exact[:, 3]) <= 2).all()


def test_resize_crop_matches_pillow_resize_then_center_crop(aligned_cache):
    resize, crop = 256, 224
    batch, boxes = decode_batch(aligned_cache, DecodeResizeCrop(resize, crop))
    out = batch["image"]
    seen = set()
    for k in range(len(aligned_cache)):
        full = reference_full(aligned_cache, k)
        W, H = full.size
        kind = ALIGNED_SIZES[(H, W)]
        seen.add(kind)
        (nh, nw), (top_r, left_r), src_box = torchvision_resize_center_crop_box(H, W, resize,
                                                                               crop)
        # these sizes are chosen so that both definitions pick the same source box
        assert tuple(int(v) for v in boxes[k]) == tuple(round(v) for v in src_box)
        assert all(float(v).is_integer() for v in src_box)
        ref = full.resize((nw, nh), Image.BILINEAR).crop((left_r, top_r, left_r + crop,
                                                          top_r + crop))
        err = np.abs(out[k].numpy().astype(np.int16) - np.asarray(ref, np.int16))
        what = f"{H}x{W} [{kind}]: mean {err.mean():.2f} p99 {np.percentile(err, 99)} " \
               f"max {err.max()}"
        if kind == "identity":
            assert err.max() == 0, what
        elif kind == "enlarge":
            assert err[2:-2, 2:-2].max() <= ENLARGE_MAX, what
            assert err.mean() <= 1.0, what
        elif kind == "shrink":
            assert err.mean() <= SHRINK_MEAN and np.percentile(err, 99) <= SHRINK_P99, what
        else:
            assert err.mean() <= DCT_MEAN and np.percentile(err, 99) <= DCT_P99, what
    assert seen == set(ALIGNED_SIZES.values())


def test_resize_crop_is_a_center_crop_of_the_resize_ratio():
    dec = DecodeResizeCrop(256, 224)
    assert dec.size == (224, 224) and dec.ratio == 224 / 256
    with pytest.raises(ValueError, match="crop_size"):
        DecodeResizeCrop(200, 224)


# -- DecodeOnly and ReadBytes -------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["small_cache", "large_cache"])
def test_decode_only_equals_pillow_exactly_for_jpegs(fixture, request):
    cache = request.getfixturevalue(fixture)
    assert set(cache.column("image").codecs.tolist()) == {Codec.JPEG}
    batch, _ = decode_batch(cache, DecodeOnly())
    images = batch["image"]
    assert isinstance(images, list) and len(images) == len(cache)
    for k, img in enumerate(images):
        ref = np.asarray(reference_full(cache, k))
        assert img.dtype == torch.uint8 and tuple(img.shape) == ref.shape
        assert np.array_equal(img.numpy(), ref), f"sample {k}: differs from Pillow"


def _index_of_path(cache: Cache) -> dict[str, int]:
    return {cache[i]["path"]: i for i in range(len(cache))}


def test_read_bytes_returns_the_stored_bytes(small_cache):
    where = _index_of_path(small_cache)
    loader = SlipstreamLoader(small_cache, batch_size=5, shuffle=True, seed=SEED,
                              pipelines={"image": [ReadBytes()]}, num_threads=2)
    seen = []
    for batch in loader:
        packed = batch["image"]
        assert isinstance(packed, PackedBytes) and len(packed) == len(batch["path"])
        assert packed.offsets[0] == 0 and packed.offsets[-1] == packed.data.numel()
        for k, path in enumerate(batch["path"]):
            i = where[path]
            assert packed[k].numpy().tobytes() == small_cache[i]["image"], path
            seen.append(i)
    assert sorted(seen) == list(range(len(small_cache)))


# -- formats: grayscale, CMYK, PNG, alpha, 16-bit ----------------------------------------------
FORMAT_FILES = ["a/rgb.jpg", "a/gray.jpg", "a/cmyk.jpg", "b/rgb.png", "b/rgba.png",
                "b/gray.png", "c/gray16.png"]


def test_format_fixture_has_what_it_claims(formats_folder):
    modes = {}
    for rel in FORMAT_FILES:
        with Image.open(formats_folder / rel) as im:
            modes[rel] = im.mode
    assert modes == {"a/rgb.jpg": "RGB", "a/gray.jpg": "L", "a/cmyk.jpg": "CMYK",
                     "b/rgb.png": "RGB", "b/rgba.png": "RGBA", "b/gray.png": "L",
                     "c/gray16.png": "I;16"}


@pytest.mark.parametrize("rel", FORMAT_FILES)
def test_formats_decode_to_correct_rgb(formats_cache, formats_folder, rel):
    where = _index_of_path(formats_cache)
    batch, _ = decode_batch(formats_cache, DecodeOnly())
    got = batch["image"][where[rel]].numpy()
    data = (formats_folder / rel).read_bytes()
    src = Image.open(io.BytesIO(data))
    if src.mode == "RGBA":
        white = Image.new("RGBA", src.size, (255, 255, 255, 255))
        want = np.asarray(Image.alpha_composite(white, src.convert("RGBA")).convert("RGB"))
        assert np.array_equal(got, want)
        assert not np.array_equal(got, np.asarray(src.convert("RGB")))  # alpha was applied
    elif src.mode == "I;16":
        v = np.asarray(src, np.float64)
        want = np.repeat((v * 255.0 / 65535.0)[..., None], 3, axis=2)
        assert got.shape == want.shape
        assert np.abs(got.astype(np.float64) - want).max() <= 1.0
        assert got.min() == 0 and got.max() == 255
    else:
        want = np.asarray(src.convert("RGB"))
        assert got.shape == want.shape and np.array_equal(got, want)


def test_dark_16bit_png_is_scaled_by_its_bit_depth_not_its_content(tmp_path):
    """A 16-bit PNG whose values happen to stay below 256 is a very dark image: its 8-bit
    value is v * 255 / 65535 (0 or 1 here), not v."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    dark = (np.arange(40 * 50).reshape(40, 50) % 256).astype(np.uint16)
    (root / "a" / "dark16.png").write_bytes(encode(dark, "PNG"))
    with Image.open(root / "a" / "dark16.png") as im:
        assert im.mode == "I;16"
    cache = _build(root, tmp_path / "cache")
    batch, _ = decode_batch(cache, DecodeOnly())
    got = batch["image"][0].numpy()
    want = np.repeat((dark * 255.0 / 65535.0)[..., None], 3, axis=2)
    assert np.abs(got - want).max() <= 1.0, f"max value {got.max()}, expected <= 1"


# -- geometry ----------------------------------------------------------------------------------
def torchvision_rrc_box(H: int, W: int, u: np.ndarray, scale, ratio):
    """torchvision's ``RandomResizedCrop.get_params``, scalar, with the draws taken from
    ``u`` (per attempt: area fraction, log aspect ratio, top, left). Returns the box and
    whether it fell back to the centre crop."""
    area = H * W
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for a in range(ATTEMPTS):
        ua, ur, ut, ul = (float(x) for x in u[4 * a : 4 * a + 4])
        target = area * (scale[0] + (scale[1] - scale[0]) * ua)
        aspect = math.exp(lo + (hi - lo) * ur)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return (int(ut * (H - h + 1)), int(ul * (W - w + 1)), h, w), False
    in_ratio = W / H
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        w, h = W, H
    return ((H - h) // 2, (W - w) // 2, h, w), True


def _sizes(rng: np.random.Generator, n: int):
    H = rng.integers(1, 2500, n)
    W = rng.integers(1, 2500, n)
    extreme = np.array([[10, 1000], [1000, 10], [1, 1], [1, 5000], [5000, 1], [2, 3], [7, 7]])
    H[: len(extreme)], W[: len(extreme)] = extreme[:, 0], extreme[:, 1]
    return H, W


@pytest.mark.parametrize("scale,ratio", [
    ((0.08, 1.0), (3 / 4, 4 / 3)),
    ((0.5, 1.0), (1.0, 1.0)),
    ((1.0, 1.0), (3 / 4, 4 / 3)),
    ((0.01, 0.05), (0.2, 5.0)),
])
def test_random_resized_crop_boxes_follow_torchvision(scale, ratio):
    rng = np.random.default_rng(7)
    n = 1500
    H, W = _sizes(rng, n)
    u = rng.random((n, 4 * ATTEMPTS))
    boxes = random_resized_crop_boxes(H, W, u, scale, ratio)
    assert boxes.shape == (n, 4) and boxes.dtype == np.int64
    fell_back = 0
    for (top, left, h, w), hh, ww, row in zip(boxes, H, W, u, strict=True):
        hh, ww = int(hh), int(ww)
        # always inside the image, never empty
        assert h >= 1 and w >= 1 and top >= 0 and left >= 0, (hh, ww, top, left, h, w)
        assert top + h <= hh and left + w <= ww, (hh, ww, top, left, h, w)
        want, fallback = torchvision_rrc_box(hh, ww, row, scale, ratio)
        assert (int(top), int(left), int(h), int(w)) == want, (hh, ww)
        fell_back += fallback
        if not fallback:  # area and aspect within bounds, up to rounding h and w
            frac_lo = (max(h - 0.5, 0) * max(w - 0.5, 0)) / (hh * ww)
            frac_hi = ((h + 0.5) * (w + 0.5)) / (hh * ww)
            assert frac_lo <= scale[1] + 1e-9 and frac_hi >= scale[0] - 1e-9, (hh, ww, h, w)
            assert (w - 0.5) / (h + 0.5) <= ratio[1] + 1e-9, (h, w)
            assert (w + 0.5) / max(h - 0.5, 1e-9) >= ratio[0] - 1e-9, (h, w)
    assert fell_back < n


@pytest.mark.parametrize("H,W,box", [
    (10, 1000, (0, 493, 10, 13)),    # far wider than 4/3: full height, width 4/3 of it
    (1000, 10, (493, 0, 13, 10)),    # far taller than 3/4: full width, height 4/3 of it
])
def test_random_resized_crop_falls_back_for_extreme_aspect(H, W, box):
    rng = np.random.default_rng(3)
    n = 200
    u = rng.random((n, 4 * ATTEMPTS))
    boxes = random_resized_crop_boxes(np.full(n, H), np.full(n, W), u)
    assert (boxes == np.array(box)).all()


def test_random_resized_crop_fallback_for_in_range_aspect_is_whole_image():
    # scale (1, 1) with ratio excluding the image's own aspect: no attempt fits
    boxes = random_resized_crop_boxes(np.array([300]), np.array([300]),
                                      np.full((1, 4 * ATTEMPTS), 0.5), (1.0, 1.0), (2.0, 3.0))
    # in_ratio 1 < 2: full width, height rint(300 / 2)
    assert boxes.tolist() == [[75, 0, 150, 300]]
    boxes = random_resized_crop_boxes(np.array([300]), np.array([400]),
                                      np.full((1, 4 * ATTEMPTS), 0.99), (1.0, 1.0), (1.0, 1.4))
    assert boxes.tolist() == [[0, 0, 300, 400]]  # 4/3 is in range: the whole image


def test_random_resized_crop_same_uniforms_same_boxes_rowwise():
    rng = np.random.default_rng(5)
    H, W = _sizes(rng, 300)
    u = rng.random((300, 4 * ATTEMPTS))
    a = random_resized_crop_boxes(H, W, u)
    b = random_resized_crop_boxes(H.copy(), W.copy(), u.copy())
    assert np.array_equal(a, b)
    perm = rng.permutation(300)  # each box depends only on its own row
    assert np.array_equal(random_resized_crop_boxes(H[perm], W[perm], u[perm]), a[perm])
    assert not np.array_equal(random_resized_crop_boxes(H, W, rng.random(u.shape)), a)


def test_decoder_boxes_are_keyed_by_sample_not_batch_position():
    H = np.array([100, 200, 300, 400, 500, 600])
    W = np.array([640, 480, 320, 300, 700, 800])
    col = ImageColumnView(H, W, H * 0)
    dec = DecodeRandomResizedCrop(64)
    whole = dec.plan(BatchContext(9, 2, np.arange(6)), col)
    again = dec.plan(BatchContext(9, 2, np.arange(6)), col)
    assert np.array_equal(whole, again)
    part = dec.plan(BatchContext(9, 2, np.array([4, 1, 5])), col)
    assert np.array_equal(part, whole[[4, 1, 5]])
    other_epoch = dec.plan(BatchContext(9, 3, np.arange(6)), col)
    assert not np.array_equal(other_epoch, whole)
    own_seed = DecodeRandomResizedCrop(64, seed=77)
    assert np.array_equal(own_seed.plan(BatchContext(9, 2, np.arange(6)), col),
                          own_seed.plan(BatchContext(10, 2, np.arange(6)), col))


@pytest.mark.parametrize("ratio", [224 / 256, 1.0, 0.5, 0.001])
def test_center_crop_boxes_are_centred(ratio):
    rng = np.random.default_rng(2)
    H, W = _sizes(rng, 2000)
    boxes = center_crop_boxes(H, W, ratio)
    top, left, h, w = boxes.T
    assert np.array_equal(h, w)
    side = np.maximum(1, np.rint(np.minimum(H, W) * ratio))
    assert np.array_equal(h, side)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    # the margins on either side differ by at most one pixel
    assert (np.abs((H - top - h) - top) <= 1).all()
    assert (np.abs((W - left - w) - left) <= 1).all()
    if ratio == 1.0:
        square = H == W
        assert (boxes[square] == np.stack([0 * H, 0 * W, H, W], 1)[square]).all()


def test_fast_decode_is_close_to_the_accurate_one():
    """``fast=True`` (integer IDCT, chroma replication): same crops, ~1 level on average."""
    import io as _io

    from PIL import Image as _Image

    from slipstream.decode.kernel import decode_sample
    from slipstream.sample_data import natural_image as _natural

    rgb = _natural(np.random.default_rng(4), 240, 320)
    buf = _io.BytesIO()
    _Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    data = np.frombuffer(buf.getvalue(), np.uint8)
    accurate, fast = np.empty((2, 96, 96, 3), np.uint8)
    decode_sample(data, Codec.JPEG, 240, 320, [(20, 30, 180, 200)], 1, [accurate])
    decode_sample(data, Codec.JPEG, 240, 320, [(20, 30, 180, 200)], 1, [fast], fast=True)
    err = np.abs(accurate.astype(int) - fast.astype(int))
    assert 0 < err.mean() <= 2.0


def test_plan_carries_the_scale_its_box_was_snapped_for():
    """The DCT scale is decided once, from the planned box, and the box is snapped on that
    scale's grid. (2, 2, 895, 895) -> 224 scales by 1/2 (895 < 4 x 224); snapped to
    (2, 2, 896, 896) it would pass the 1/4 test, which a second derivation from the
    snapped box used to pick, so the decoded region was not the planned one."""
    from slipstream.decode.geometry import dct_denominator, plan_crops

    plan = plan_crops(np.array([[2, 2, 895, 895]]), np.array([1000]), np.array([1000]),
                      224, 224)
    assert plan.boxes.tolist() == [[2, 2, 896, 896]] and plan.denoms.tolist() == [2]
    assert dct_denominator(896, 896, 224, 224) == 4  # what re-deriving would have chosen
    rng = np.random.default_rng(3)
    H, W = rng.integers(100, 3000, 500), rng.integers(100, 3000, 500)
    boxes = random_resized_crop_boxes(H, W, rng.random((500, 4 * ATTEMPTS)))
    plan = plan_crops(boxes, H, W, 224, 224)
    d = np.maximum(2, plan.denoms)
    assert ((plan.boxes[:, 0] % d == 0) & (plan.boxes[:, 1] % d == 0)).all()
    assert set(plan.denoms.tolist()) > {1, 2}
