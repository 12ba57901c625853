"""Photometric and geometric augmentations for ``[B, C, H, W]`` batches on CPU or CUDA.

Every transform here decides per sample, from the batch context, whether it applies and
with which parameters (``params(ctx)`` returns them), so a sample's result does not
depend on its batch, thread or rank. Parameters are drawn on the CPU with numpy and
moved to the batch's device; the pixel work is torch only and vectorised over the batch.

Conventions shared by all of them:

- Input is ``uint8`` (0..255) or floating point on the [0, 1] scale (not normalised:
  put :class:`~slipstream.transforms.Normalize` after these). The range of a float batch
  is not checked, since that would cost a device synchronisation.
- The output dtype is the input dtype. Arithmetic runs in float32 (float64 for float64
  input) on the input's own scale (0..255 or 0..1); ``uint8`` results are rounded to
  nearest (ties to even) and clamped to 0..255.
- Samples that are not chosen are left untouched (bit for bit). Chosen samples are
  written back into ``batch`` in place, which is returned, as
  :class:`~slipstream.transforms.RandomHorizontalFlip` does; pass a copy to keep the
  original.
- ``device``: move the batch there first (when it is elsewhere). ``seed``: draw from
  this seed instead of the context's (two instances in one pipeline with different
  seeds draw independently).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .base import BatchContext, BatchTransform, resolve_device

__all__ = [
    "ColorJitter",
    "ColorJitterParams",
    "GaussianBlurParams",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomSolarization",
    "RandomZoom",
    "ZoomParams",
]

Device = str | torch.device | None

#: ITU-R 601-2 luma weights for R, G, B.
LUMA = (0.299, 0.587, 0.114)


# --- shared helpers -------------------------------------------------------------------


def _check_p(owner: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _interval(owner: str, name: str, value: float | Sequence[float], lo: float, hi: float,
              ) -> tuple[float, float]:
    """``value`` as a ``(lo, hi)`` pair inside ``[lo, hi]``; a number means a fixed value."""
    if isinstance(value, numbers.Real):
        pair = (float(value), float(value))
    elif isinstance(value, Sequence) and len(value) == 2:
        pair = (float(value[0]), float(value[1]))
    else:
        raise ValueError(f"{owner}: {name} must be a number or a (low, high) pair, got {value!r}")
    if not lo <= pair[0] <= pair[1] <= hi:
        raise ValueError(f"{owner}: {name} must satisfy {lo} <= low <= high <= {hi}, "
                         f"got {value!r}")
    return pair


def _jitter_range(owner: str, name: str, value: float | Sequence[float], centre: float,
                  lo: float, hi: float) -> tuple[float, float]:
    """torchvision's rule: a number ``v >= 0`` means ``[max(lo, centre - v), centre + v]``."""
    if isinstance(value, numbers.Real):
        if value < 0:
            raise ValueError(f"{owner}: {name} must be >= 0 (or a (low, high) pair), got {value!r}")
        v = float(value)
        return _interval(owner, name, (max(lo, centre - v), centre + v), lo, hi)
    return _interval(owner, name, value, lo, hi)


def _draw(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Uniforms in [0, 1) mapped onto ``[low, high)`` (exactly ``low`` when they are equal)."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _check_batch(owner: str, batch: torch.Tensor, rgb: bool = False) -> None:
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"{owner} expects a [B, C, H, W] tensor, got {shape}")
    if rgb and batch.shape[1] != 3:
        raise ValueError(f"{owner} needs RGB images ([B, 3, H, W]), got {tuple(batch.shape)}")
    if batch.dtype != torch.uint8 and not batch.dtype.is_floating_point:
        raise ValueError(f"{owner} expects uint8 (0..255) or float ([0, 1]) images, "
                         f"got {batch.dtype}; convert with ToTorchImage(dtype=...)")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bound(dtype: torch.dtype) -> float:
    """The top of the value scale: 255 for uint8, 1 for float."""
    return 255.0 if dtype == torch.uint8 else 1.0


def _on(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-sample numbers as a ``[n, 1, 1, 1]`` tensor on ``like``'s device and dtype."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(like.device, like.dtype).view(
        -1, 1, 1, 1)


def _apply_chosen(batch: torch.Tensor, chosen: np.ndarray,
                  fn: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> torch.Tensor:
    """Run ``fn(x, chosen)`` on the chosen samples in the working dtype and write the
    results back into ``batch`` (rounded and clamped for ``uint8``)."""
    if len(chosen) == 0:
        return batch
    idx = torch.from_numpy(chosen).to(batch.device)
    x = batch.index_select(0, idx).to(_work_dtype(batch.dtype))
    y = fn(x, chosen)
    if batch.dtype == torch.uint8:
        y = y.round().clamp_(0, 255)
    batch.index_copy_(0, idx, y.to(batch.dtype))
    return batch


def _to_device(batch: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    if device is not None and batch.device != device:
        return batch.to(device, non_blocking=True)
    return batch


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``[n, 3, H, W]`` as ``[n, 1, H, W]``."""
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


# --- zoom ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoomParams:
    """Per-sample draws of :class:`RandomZoom` (arrays of length B). ``x``, ``y`` are the
    drawn window centres before they are clamped to keep the window inside the image."""

    apply: np.ndarray
    zoom: np.ndarray
    x: np.ndarray
    y: np.ndarray


class RandomZoom(BatchTransform):
    """With probability ``p`` per sample, zoom into the image and resample it to full size.

    Per sample: ``z ~ U[zoom]``, ``x ~ U[x]``, ``y ~ U[y]`` (a number is a fixed value).
    The visible window is the fraction ``z`` of the width and of the height, centred at
    relative position ``(cx, cy)`` with ``cx = clip(x, z/2, 1 - z/2)`` (likewise ``cy``),
    so the window never leaves the image. ``z = 1`` is the identity; ``z = 0.5`` at
    ``(0.5, 0.5)`` shows the central half, magnified 2x.

    Output pixel ``j`` (of ``W``) reads the input at the continuous pixel coordinate
    ``((cx - z/2) + z * (j + 0.5) / W) * W - 0.5`` (rows likewise), i.e. pixel centres
    map with ``align_corners=False``; it is bilinearly interpolated from the four
    neighbours, with coordinates clamped to ``[0, W - 1]`` (edge replication). This is
    ``affine_grid`` + ``grid_sample(mode="bilinear", padding_mode="border",
    align_corners=False)`` with ``theta = [[z, 0, 2cx - 1], [0, z, 2cy - 1]]``.

    ``RandomZoom(p=1.0, zoom=(0.5, 0.5), x=0.5, y=0.5, device='cuda')`` is a 50% zoom.
    """

    def __init__(self, p: float = 1.0, zoom: float | Sequence[float] = (1.0, 1.0),
                 x: float | Sequence[float] = 0.5, y: float | Sequence[float] = 0.5,
                 device: Device = None, seed: int | None = None) -> None:
        self.p = _check_p("RandomZoom", p)
        self.zoom = _interval("RandomZoom", "zoom", zoom, 0.0, 1.0)
        if self.zoom[0] <= 0:
            raise ValueError(f"RandomZoom: zoom is the visible fraction of the image and must "
                             f"be in (0, 1], got {zoom!r}")
        self.x = _interval("RandomZoom", "x", x, 0.0, 1.0)
        self.y = _interval("RandomZoom", "y", y, 0.0, 1.0)
        self.device = resolve_device(device)
        self.seed = seed

    def params(self, ctx: BatchContext) -> ZoomParams:
        u = ctx.reseeded(self.seed).uniforms("zoom", 4)
        return ZoomParams(apply=u[:, 0] < self.p, zoom=_draw(u[:, 1], self.zoom),
                          x=_draw(u[:, 2], self.x), y=_draw(u[:, 3], self.y))

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        _check_batch("RandomZoom", batch)
        batch = _to_device(batch, self.device)
        prm = self.params(ctx)
        z = prm.zoom
        cx = np.clip(prm.x, z / 2, 1 - z / 2)
        cy = np.clip(prm.y, z / 2, 1 - z / 2)
        theta = np.zeros((len(z), 2, 3))
        theta[:, 0, 0] = theta[:, 1, 1] = z
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 2] = 2 * cy - 1

        def zoom(x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
            th = torch.from_numpy(theta[chosen]).to(x.device, x.dtype)
            grid = F.affine_grid(th, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False)

        # z == 1 is the whole image whatever the centre: skip it (exact identity).
        return _apply_chosen(batch, np.flatnonzero(prm.apply & (z < 1)), zoom)


# --- colour ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-sample draws of :class:`ColorJitter`. ``order[k]`` lists the operations in the
    order they are applied to sample ``k``: 0 brightness, 1 contrast, 2 saturation, 3 hue."""

    apply: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    hue: np.ndarray
    order: np.ndarray


def _adjust_brightness(x: torch.Tensor, f: torch.Tensor, bound: float) -> torch.Tensor:
    return (x * f).clamp_(0, bound)


def _adjust_contrast(x: torch.Tensor, f: torch.Tensor, bound: float) -> torch.Tensor:
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (f * x + (1 - f) * mean).clamp_(0, bound)


def _adjust_saturation(x: torch.Tensor, f: torch.Tensor, bound: float) -> torch.Tensor:
    return (f * x + (1 - f) * _gray(x)).clamp_(0, bound)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor, bound: float) -> torch.Tensor:
    """RGB → HSV (``colorsys`` conventions), ``h ← (h + shift) mod 1``, HSV → RGB."""
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    cr = maxc - x.amin(dim=1)
    sat = cr / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    crd = torch.where(cr > 0, cr, torch.ones_like(cr))
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h6 = torch.remainder(h / 6.0 + shift.view(-1, 1, 1), 1.0) * 6.0
    # HSV → RGB, branch-free: channel = v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    chans = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h6, 6.0)
        chans.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(chans, dim=1)


_JITTER_OPS = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _shift_hue)


class ColorJitter(BatchTransform):
    """With probability ``p`` per sample, jitter brightness, contrast, saturation and hue
    (torchvision's ``ColorJitter`` semantics, with each sample's own factors and order).

    Factor ranges: a number ``v`` gives ``[max(0, 1 - v), 1 + v]`` for brightness,
    contrast and saturation and ``[-v, v]`` for hue (``0 <= v <= 0.5``); a ``(low, high)``
    pair is used as is. Per sample the factors ``b, c, s, h`` are uniform in their ranges,
    and the four operations are applied in a uniformly random per-sample order (as
    torchvision draws a random permutation per call). With ``gray = 0.299 R + 0.587 G +
    0.114 B`` and ``M`` the top of the scale (255 or 1), each step clamps to ``[0, M]``:

    - brightness: ``x ← b · x``
    - contrast: ``x ← c · x + (1 - c) · mean(gray(x))`` (mean over the whole image)
    - saturation: ``x ← s · x + (1 - s) · gray(x)`` (per pixel)
    - hue: to HSV, ``H ← (H + h) mod 1``, back to RGB

    An operation whose range is the identity (``0`` given) is skipped. Unlike torchvision
    on ``uint8`` tensors, intermediate results are not truncated to integers: the chain
    runs in float and is rounded once at the end.
    """

    def __init__(self, brightness: float | Sequence[float] = 0.4,
                 contrast: float | Sequence[float] = 0.4,
                 saturation: float | Sequence[float] = 0.2,
                 hue: float | Sequence[float] = 0.1, p: float = 0.8,
                 device: Device = None, seed: int | None = None) -> None:
        inf = float("inf")
        self.brightness = _jitter_range("ColorJitter", "brightness", brightness, 1.0, 0.0, inf)
        self.contrast = _jitter_range("ColorJitter", "contrast", contrast, 1.0, 0.0, inf)
        self.saturation = _jitter_range("ColorJitter", "saturation", saturation, 1.0, 0.0, inf)
        if isinstance(hue, numbers.Real) and not 0 <= float(hue) <= 0.5:
            raise ValueError(f"ColorJitter: hue must be in [0, 0.5] (or a (low, high) pair in "
                             f"[-0.5, 0.5]), got {hue!r}")
        self.hue = _jitter_range("ColorJitter", "hue", hue, 0.0, -0.5, 0.5)
        self.p = _check_p("ColorJitter", p)
        self.device = resolve_device(device)
        self.seed = seed

    def params(self, ctx: BatchContext) -> ColorJitterParams:
        u = ctx.reseeded(self.seed).uniforms("color_jitter", 9)
        return ColorJitterParams(
            apply=u[:, 0] < self.p, brightness=_draw(u[:, 1], self.brightness),
            contrast=_draw(u[:, 2], self.contrast), saturation=_draw(u[:, 3], self.saturation),
            hue=_draw(u[:, 4], self.hue), order=np.argsort(u[:, 5:9], axis=1, kind="stable"))

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        _check_batch("ColorJitter", batch, rgb=True)
        batch = _to_device(batch, self.device)
        prm = self.params(ctx)
        factors = (prm.brightness, prm.contrast, prm.saturation, prm.hue)
        identity = (1.0, 1.0, 1.0, 0.0)
        ranges = (self.brightness, self.contrast, self.saturation, self.hue)
        active = [op for op in range(4) if ranges[op] != (identity[op], identity[op])]
        bound = _bound(batch.dtype)

        def jitter(x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
            order = prm.order[chosen]
            for step in range(4):
                for op in active:
                    rows = np.flatnonzero(order[:, step] == op)
                    if len(rows) == 0:
                        continue
                    f = _on(factors[op][chosen[rows]], x)
                    if len(rows) == len(x):
                        x = _JITTER_OPS[op](x, f, bound)
                    else:
                        idx = torch.from_numpy(rows).to(x.device)
                        x = x.index_copy(0, idx, _JITTER_OPS[op](x.index_select(0, idx), f, bound))
            return x

        return _apply_chosen(batch, np.flatnonzero(prm.apply), jitter)


class RandomGrayscale(BatchTransform):
    """With probability ``p`` per sample, replace RGB by its ITU-R 601-2 luma
    ``L = 0.299 R + 0.587 G + 0.114 B``, replicated to the three channels."""

    def __init__(self, p: float = 0.2, device: Device = None, seed: int | None = None) -> None:
        self.p = _check_p("RandomGrayscale", p)
        self.device = resolve_device(device)
        self.seed = seed

    def params(self, ctx: BatchContext) -> np.ndarray:
        """Which samples of the batch are turned gray."""
        return ctx.reseeded(self.seed).uniforms("grayscale")[:, 0] < self.p

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        _check_batch("RandomGrayscale", batch, rgb=True)
        batch = _to_device(batch, self.device)
        return _apply_chosen(batch, np.flatnonzero(self.params(ctx)),
                             lambda x, _: _gray(x).expand(-1, 3, -1, -1))


# --- blur and solarisation ---------------------------------------------------------------


@dataclass(frozen=True)
class GaussianBlurParams:
    """Per-sample draws of :class:`RandomGaussianBlur` (arrays of length B)."""

    apply: np.ndarray
    sigma: np.ndarray


def _gaussian_kernels(sigma: np.ndarray, kernel_size: int) -> np.ndarray:
    """``(len(sigma), kernel_size)`` normalised 1-D Gaussian kernels (float64):
    ``w_i ∝ exp(-t_i² / (2σ²))`` at ``t_i = i - (kernel_size - 1) / 2``."""
    t = np.arange(kernel_size) - (kernel_size - 1) / 2
    w = np.exp(-0.5 * (t[None, :] / np.asarray(sigma, np.float64)[:, None]) ** 2)
    return w / w.sum(axis=1, keepdims=True)


class RandomGaussianBlur(BatchTransform):
    """With probability ``p`` per sample, blur with a Gaussian of standard deviation
    ``σ ~ U[sigma]`` (pixels), truncated to ``kernel_size`` taps (odd) and normalised —
    the kernel of :func:`gaussian_kernels`, as torchvision's ``GaussianBlur`` builds it.

    The blur is separable (rows, then columns) with reflect padding (the edge pixel is not
    repeated: ``… 2 1 | 0 1 2 …``), so the image must be larger than ``kernel_size // 2``
    on both sides. All chosen samples are blurred at once by one grouped convolution per
    direction, each sample and channel with its own kernel.
    """

    def __init__(self, p: float = 0.5, kernel_size: int = 23,
                 sigma: float | Sequence[float] = (0.1, 2.0),
                 device: Device = None, seed: int | None = None) -> None:
        self.p = _check_p("RandomGaussianBlur", p)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"RandomGaussianBlur: kernel_size must be a positive odd int, "
                             f"got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.sigma = _interval("RandomGaussianBlur", "sigma", sigma, 0.0, float("inf"))
        if self.sigma[0] <= 0:
            raise ValueError(f"RandomGaussianBlur: sigma must be > 0, got {sigma!r}")
        self.device = resolve_device(device)
        self.seed = seed

    def params(self, ctx: BatchContext) -> GaussianBlurParams:
        u = ctx.reseeded(self.seed).uniforms("gaussian_blur", 2)
        return GaussianBlurParams(apply=u[:, 0] < self.p, sigma=_draw(u[:, 1], self.sigma))

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        _check_batch("RandomGaussianBlur", batch)
        pad = self.kernel_size // 2
        if pad >= min(batch.shape[-2:]):
            raise ValueError(f"RandomGaussianBlur: kernel_size={self.kernel_size} needs images "
                             f"larger than {pad} pixels on both sides for reflect padding, got "
                             f"{tuple(batch.shape[-2:])}; use a smaller kernel_size")
        batch = _to_device(batch, self.device)
        prm = self.params(ctx)
        k = self.kernel_size

        def blur(x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
            n, c, h, w = x.shape
            kern = torch.from_numpy(_gaussian_kernels(prm.sigma[chosen], k)).to(x.device, x.dtype)
            kern = kern.repeat_interleave(c, dim=0)  # one kernel per (sample, channel)
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect").reshape(1, n * c, h + 2 * pad,
                                                                       w + 2 * pad)
            x = F.conv2d(x, kern.view(n * c, 1, 1, k), groups=n * c)
            x = F.conv2d(x, kern.view(n * c, 1, k, 1), groups=n * c)
            return x.reshape(n, c, h, w)

        return _apply_chosen(batch, np.flatnonzero(prm.apply), blur)


class RandomSolarization(BatchTransform):
    """With probability ``p`` per sample, invert the pixels at or above ``threshold``.

    ``threshold`` is on the uint8 scale (0..255). ``uint8``: ``v ← 255 - v`` where
    ``v >= threshold`` (``PIL.ImageOps.solarize``). Float: ``x ← 1 - x`` where
    ``255 x >= threshold - 0.5``, i.e. where ``x`` would round to a uint8 value
    ``>= threshold`` — for the default 128 that is ``x >= 0.5`` — so a float batch made
    from a uint8 one is solarised at the same pixels.
    """

    def __init__(self, p: float = 0.2, threshold: float = 128, device: Device = None,
                 seed: int | None = None) -> None:
        self.p = _check_p("RandomSolarization", p)
        if not 0 <= threshold <= 256:
            raise ValueError(f"RandomSolarization: threshold is on the uint8 scale and must be "
                             f"in [0, 256], got {threshold!r}")
        self.threshold = float(threshold)
        self.device = resolve_device(device)
        self.seed = seed

    def params(self, ctx: BatchContext) -> np.ndarray:
        """Which samples of the batch are solarised."""
        return ctx.reseeded(self.seed).uniforms("solarization")[:, 0] < self.p

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        _check_batch("RandomSolarization", batch)
        batch = _to_device(batch, self.device)
        bound = _bound(batch.dtype)
        cut = self.threshold if bound == 255.0 else (self.threshold - 0.5) / 255.0

        def solarize(x: torch.Tensor, _: np.ndarray) -> torch.Tensor:
            return torch.where(x >= cut, bound - x, x)

        return _apply_chosen(batch, np.flatnonzero(self.params(ctx)), solarize)
