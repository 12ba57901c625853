"""Batch augmentations, checked per sample against independent references.

Each transform's ``params(ctx)`` gives the per-sample draws; the references below
recompute every sample from them with numpy (float64), PIL or ``colorsys``, never with
torch. Tolerances, and why:

- float input (float32 on [0, 1]) vs the float64 reference: ``atol 1e-5`` — float32
  rounding only (about 1e-7 relative per operation; the hue conversion divides by the
  chroma, which costs a few more ulps). Measured max errors are well below 1e-5.
- uint8 vs the same reference rounded to nearest: at most 1 level, and at most 1% of
  the values may differ at all — a float32 result that lands within ~1e-4 of a .5 tie
  can round the other way; a systematic error (truncating instead of rounding, an
  off-by-half-pixel sample grid) would change far more values. Measured: a handful of
  values, often none.
- PIL cross-checks: ``ImageEnhance`` blends and truncates toward zero where we round,
  and ``Contrast`` uses the integer-rounded mean of the integer ``L`` image, so ours is
  0 or 1 level above PIL's, never below and never more. ``convert("L")`` uses 16-bit
  fixed-point weights: within 1 level of the luma formula. ``ImageOps.solarize`` is
  exact. PIL's ``GaussianBlur`` approximates the Gaussian by box filters, so the blur is
  checked against an explicit numpy convolution with the same kernel instead.
- zoom: the reference is a separable numpy bilinear sampler over the pixel grid
  described in ``RandomZoom``'s docstring, clamping coordinates to the image (``grid_sample``'s
  ``padding_mode="border"``); same tolerances as above.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from slipstream.transforms import (
    BatchContext,
    ColorJitter,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomSolarization,
    RandomZoom,
)

H, W = 14, 18
INDICES = np.array([3, 5, 7, 11, 20, 42, 64, 99])
LUMA = np.array([0.299, 0.587, 0.114])
DTYPES = [torch.uint8, torch.float32]


def image(index: int) -> np.ndarray:
    """The ``H x W x 3`` uint8 image of dataset sample ``index``: noise over a colour ramp."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 1, W)[None, :, None] * rng.uniform(0, 255, 3)
    return np.clip(ramp + rng.normal(0, 60, (H, W, 3)), 0, 255).astype(np.uint8)


def images(indices) -> np.ndarray:
    return np.stack([image(int(i)) for i in indices])


def to_batch(imgs: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    return t if dtype == torch.uint8 else t.to(dtype) / 255


def from_batch(batch: torch.Tensor) -> np.ndarray:
    """``[B, C, H, W]`` → ``[B, H, W, C]`` float64 numpy on the tensor's own scale."""
    return batch.detach().cpu().permute(0, 2, 3, 1).double().numpy()


def ctx(indices=INDICES, seed: int = 0) -> BatchContext:
    return BatchContext(seed, 0, np.asarray(indices))


def scale(dtype: torch.dtype) -> float:
    return 255.0 if dtype == torch.uint8 else 1.0


def check_sample(out: np.ndarray, ref: np.ndarray, dtype: torch.dtype, what: str) -> None:
    """``ref`` is the float64 result on the input's scale; see the module docstring."""
    if dtype == torch.uint8:
        expected = np.clip(np.round(ref), 0, 255)
        diff = np.abs(out - expected)
        assert diff.max() <= 1, f"{what}: uint8 off by {diff.max()} levels"
        assert (diff > 0).mean() <= 0.01, f"{what}: {(diff > 0).mean():.1%} values off by 1"
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5, err_msg=what)


def run_against(transform, reference, dtype: torch.dtype, apply: np.ndarray) -> None:
    """Run ``transform`` on the standard batch and compare each sample with
    ``reference(k, img)`` (applied samples) or with its input (the others, exactly)."""
    assert apply.any(), "the test needs at least one applied sample"
    src = images(INDICES)
    x = to_batch(src, dtype)
    out = from_batch(transform(x.clone(), ctx()))
    inp = from_batch(x)
    for k in range(len(INDICES)):
        if apply[k]:
            check_sample(out[k], reference(k, inp[k]), dtype, f"sample {k}")
        else:
            np.testing.assert_array_equal(out[k], inp[k], err_msg=f"untouched sample {k}")


# --- references (numpy / PIL / colorsys) ---------------------------------------------------


def zoom_reference(img: np.ndarray, z: float, x: float, y: float) -> np.ndarray:
    h, w = img.shape[:2]
    cx = min(max(x, z / 2), 1 - z / 2)
    cy = min(max(y, z / 2), 1 - z / 2)

    def taps(c, n):
        s = np.clip(((c - z / 2) + z * (np.arange(n) + 0.5) / n) * n - 0.5, 0, n - 1)
        i0 = np.floor(s).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), s - i0

    r0, r1, wy = taps(cy, h)
    c0, c1, wx = taps(cx, w)
    rows = img[r0] * (1 - wy)[:, None, None] + img[r1] * wy[:, None, None]
    return rows[:, c0] * (1 - wx)[None, :, None] + rows[:, c1] * wx[None, :, None]


def jitter_reference(img, m, b, c, s, hue, order) -> np.ndarray:
    x = img.copy()
    for op in order:
        if op == 0:
            x = np.clip(b * x, 0, m)
        elif op == 1:
            x = np.clip(c * x + (1 - c) * (x @ LUMA).mean(), 0, m)
        elif op == 2:
            x = np.clip(s * x + (1 - s) * (x @ LUMA)[..., None], 0, m)
        else:
            out = np.empty_like(x)
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    hh, ss, vv = colorsys.rgb_to_hsv(*(x[i, j] / m))
                    out[i, j] = np.array(colorsys.hsv_to_rgb((hh + hue) % 1.0, ss, vv)) * m
            x = out
    return x


def blur_reference(img: np.ndarray, sigma: float, size: int) -> np.ndarray:
    t = np.arange(size) - size // 2
    kern = np.exp(-(t**2) / (2 * sigma**2))
    kern /= kern.sum()
    pad = size // 2
    x = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    x = sum(kern[i] * x[:, i:i + img.shape[1]] for i in range(size))  # rows
    return sum(kern[i] * x[i:i + img.shape[0]] for i in range(size))  # columns


# --- each transform against its reference ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_zoom_matches_numpy_bilinear(dtype):
    t = RandomZoom(p=0.8, zoom=(0.3, 0.95), x=(0.0, 1.0), y=(0.1, 0.9))
    prm = t.params(ctx())
    assert (prm.zoom >= 0.3).all() and (prm.zoom < 0.95).all()
    run_against(t, lambda k, img: zoom_reference(img, prm.zoom[k], prm.x[k], prm.y[k]),
                dtype, prm.apply)


def test_zoom_half_reads_the_central_half():
    """A horizontal ramp ``v = column``: a 2x zoom at the centre of an 8-wide image reads
    columns 2..6 with output pixel j at input coordinate 1.75 + 0.5 j."""
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 3, 8, 8).clone()
    out = RandomZoom(p=1.0, zoom=(0.5, 0.5), x=0.5, y=0.5)(ramp, ctx([0]))
    expected = 1.75 + 0.5 * torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(out[0, 0, 3], expected, rtol=0, atol=1e-12)


def test_zoom_window_is_clamped_inside_the_image():
    """Centre x=0 with z=0.5 is clamped to cx=0.25: the left half, not a window off the edge."""
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 3, 8, 8).clone()
    out = RandomZoom(p=1.0, zoom=0.5, x=0.0, y=0.5)(ramp, ctx([0]))
    expected = (-0.25 + 0.5 * torch.arange(8, dtype=torch.float64)).clamp(min=0)
    torch.testing.assert_close(out[0, 0, 3], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_color_jitter_matches_numpy_and_colorsys(dtype):
    t = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2, p=0.8)
    prm = t.params(ctx())
    assert sorted(map(tuple, prm.order)) != [tuple(range(4))] * len(INDICES), "orders vary"
    m = scale(dtype)
    run_against(t, lambda k, img: jitter_reference(
        img, m, prm.brightness[k], prm.contrast[k], prm.saturation[k], prm.hue[k], prm.order[k]),
        dtype, prm.apply)


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_color_jitter_single_op_matches_pil_enhance(op):
    enhance = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
               "saturation": ImageEnhance.Color}[op]
    kw = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, op: 0.5}
    t = ColorJitter(**kw, p=1.0)
    factors = getattr(t.params(ctx()), op)
    out = from_batch(t(to_batch(images(INDICES), torch.uint8), ctx()))
    for k, i in enumerate(INDICES):
        pil = np.asarray(enhance(Image.fromarray(image(int(i)))).enhance(factors[k]))
        diff = out[k] - pil
        assert diff.min() >= 0 and diff.max() <= 1, (k, diff.min(), diff.max())


def test_color_jitter_hue_only_keeps_value_and_gray_pixels():
    t = ColorJitter(brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0)
    gray = torch.linspace(0, 1, H * W).view(1, 1, H, W).expand(2, 3, H, W).clone()
    torch.testing.assert_close(t(gray.clone(), ctx([1, 2])), gray, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grayscale_matches_luma(dtype):
    t = RandomGrayscale(p=0.6)
    flags = t.params(ctx())
    run_against(t, lambda k, img: np.repeat((img @ LUMA)[..., None], 3, axis=-1),
                dtype, flags)


def test_grayscale_within_one_level_of_pil():
    out = from_batch(RandomGrayscale(p=1.0)(to_batch(images(INDICES), torch.uint8), ctx()))
    for k, i in enumerate(INDICES):
        pil = np.asarray(Image.fromarray(image(int(i))).convert("L")).astype(float)
        for c in range(3):
            assert np.abs(out[k, ..., c] - pil).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_blur_matches_numpy_convolution(dtype):
    t = RandomGaussianBlur(p=0.7, kernel_size=23, sigma=(0.1, 3.0))
    prm = t.params(ctx())
    run_against(t, lambda k, img: blur_reference(img, prm.sigma[k], 23), dtype, prm.apply)


def test_solarization_matches_pil():
    t = RandomSolarization(p=0.5, threshold=100)
    flags = t.params(ctx())
    assert flags.any() and not flags.all()
    out = from_batch(t(to_batch(images(INDICES), torch.uint8), ctx()))
    for k, i in enumerate(INDICES):
        img = image(int(i))
        expected = np.asarray(ImageOps.solarize(Image.fromarray(img), 100)) if flags[k] else img
        np.testing.assert_array_equal(out[k], expected)


def test_solarization_float_inverts_the_same_pixels_as_uint8():
    src = to_batch(images(INDICES), torch.uint8)
    t = RandomSolarization(p=1.0)
    as_uint8 = t(src.clone(), ctx())
    as_float = t(src.float() / 255, ctx())
    torch.testing.assert_close(as_float, as_uint8.float() / 255, rtol=0, atol=1e-6)
    half = torch.tensor([0.49, 0.5, 0.51]).view(1, 3, 1, 1)
    torch.testing.assert_close(t(half.clone(), ctx([0])).flatten(),
                               torch.tensor([0.49, 0.5, 0.49]))


# --- properties every transform shares ---------------------------------------------------------

MAKERS = {
    "zoom": lambda p: RandomZoom(p=p, zoom=(0.4, 0.9), x=(0.1, 0.9), y=(0.2, 0.8)),
    "jitter": lambda p: ColorJitter(p=p),
    "grayscale": lambda p: RandomGrayscale(p=p),
    "blur": lambda p: RandomGaussianBlur(p=p, kernel_size=9, sigma=(0.5, 2.0)),
    "solarization": lambda p: RandomSolarization(p=p),
}


def flags_of(t, c: BatchContext) -> np.ndarray:
    prm = t.params(c)
    return prm if isinstance(prm, np.ndarray) else prm.apply


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_same_context_same_output_and_dtype(name, dtype):
    t = MAKERS[name](0.7)
    x = to_batch(images(INDICES), dtype)
    a, b = t(x.clone(), ctx()), t(x.clone(), ctx())
    assert a.dtype == dtype and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, t(x.clone(), ctx(seed=1))), "another seed, other draws"


@pytest.mark.parametrize("name", MAKERS)
def test_p0_is_identity_and_p1_transforms_all(name):
    x = to_batch(images(INDICES), torch.uint8)
    assert torch.equal(MAKERS[name](0.0)(x.clone(), ctx()), x)
    t = MAKERS[name](1.0)
    assert flags_of(t, ctx()).all()
    out = t(x.clone(), ctx())
    for k in range(len(INDICES)):
        assert not torch.equal(out[k], x[k]), f"sample {k} unchanged"


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_result_does_not_depend_on_its_batch(name, dtype):
    t = MAKERS[name](1.0)
    many = t(to_batch(images([3, 5, 7]), dtype), ctx([3, 5, 7]))
    alone = t(to_batch(images([5]), dtype), ctx([5]))
    assert torch.equal(many[1:2], alone)


@pytest.mark.parametrize("name", MAKERS)
def test_uint8_and_float_agree(name):
    t = MAKERS[name](0.7)
    src = to_batch(images(INDICES), torch.uint8)
    as_uint8 = t(src.clone(), ctx()).double()
    as_float = t(src.float() / 255, ctx()).double() * 255
    assert (as_uint8 - as_float).abs().max() <= 0.5 + 1e-3


def test_p_is_the_fraction_applied():
    many = ctx(np.arange(4000))
    for name, maker in MAKERS.items():
        assert abs(flags_of(maker(0.3), many).mean() - 0.3) < 0.03, name


@pytest.mark.parametrize("make, match", [
    (lambda: RandomZoom(p=1.5), "p must be"),
    (lambda: RandomZoom(zoom=(0.0, 0.5)), "zoom"),
    (lambda: RandomZoom(zoom=(0.5, 1.5)), "zoom"),
    (lambda: RandomZoom(x=(0.6, 0.4)), "x must"),
    (lambda: ColorJitter(brightness=-0.1), "brightness"),
    (lambda: ColorJitter(hue=0.7), "hue"),
    (lambda: RandomGaussianBlur(kernel_size=4), "kernel_size"),
    (lambda: RandomGaussianBlur(sigma=0), "sigma"),
    (lambda: RandomSolarization(threshold=300), "threshold"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        RandomGrayscale()(torch.zeros(3, 8, 8, dtype=torch.uint8), ctx([0]))
    with pytest.raises(ValueError, match="RGB"):
        ColorJitter()(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), ctx([0]))
    with pytest.raises(ValueError, match="uint8"):
        RandomSolarization()(torch.zeros(1, 3, 8, 8, dtype=torch.int32), ctx([0]))
    with pytest.raises(ValueError, match="kernel_size"):
        RandomGaussianBlur(kernel_size=23)(torch.zeros(1, 3, 8, 40), ctx([0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(name, dtype):
    t = MAKERS[name](0.7)
    x = to_batch(images(INDICES), dtype)
    cpu = t(x.clone(), ctx())
    gpu = t(x.cuda(), ctx())
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    diff = (gpu.cpu().double() - cpu.double()).abs().max().item()
    assert diff <= (1 if dtype == torch.uint8 else 1e-5), diff
    moved = MAKERS[name](0.7)
    moved.device = torch.device("cuda")
    assert torch.equal(moved(x.clone(), ctx()), gpu)
