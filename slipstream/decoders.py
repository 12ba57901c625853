"""Decoders: the first stage of an image pipeline, run per sample in decode threads.

Fused decode + crop: the crops are planned for the whole batch first (boxes and the DCT
scale of every sample, from the stored image sizes, before any pixel is decoded), then
each decode thread hands a slice of the batch to the native kernel
(:mod:`slipstream.decode.kernel`), which decodes only each crop's region at the planned
scale and resizes it straight into the batch buffer, with the GIL released.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._rng import stream_id, stream_key
from .cache.layout import Codec
from .decode import kernel
from .decode.geometry import CropPlan, center_crop_boxes, plan_crops
from .decode.pixels import (
    ThreadState,
    crop_box,
    decode_image,
    partial_decode_on,
    resize_into,
    thread_state,
)
from .errors import MissingDependencyError
from .transforms.base import BatchContext

__all__ = [
    "ImageDecoder",
    "DecodeRandomResizedCrop",
    "DecodeMultiRandomResizedCrop",
    "DecodeCenterCrop",
    "DecodeResizeCrop",
    "DecodeOnly",
    "ReadBytes",
    "PackedBytes",
    "ImageColumnView",
    "BatchSamples",
    "CropPlan",
    "MultiCropPlan",
]


@dataclass(frozen=True)
class ImageColumnView:
    """What a decoder may know about the image column it reads (sizes, for planning)."""

    heights: np.ndarray
    widths: np.ndarray
    sizes: np.ndarray


#: The random stream random resized crops draw from.
_RRC_STREAM = stream_id("random_resized_crop")


#: The codecs the native kernel decodes, as a bit mask; the rest go through ``decode_one``.
_NATIVE_CODECS = (1 << Codec.JPEG) | (1 << Codec.YUV420)


@dataclass(frozen=True)
class BatchSamples:
    """One batch's stored samples by batch position, as the table the native kernel
    reads (``uint64 (5, n)``): rows ``addresses`` (each sample's bytes, kept alive by
    ``keepalive``), ``sizes``, ``codecs``, ``heights``, ``widths``."""

    table: np.ndarray
    #: batch positions of samples the kernel does not decode (Pillow's formats, raw RGB)
    python_path: list[int]
    keepalive: list[Any]
    column: Any
    indices: np.ndarray

    @classmethod
    def gather(cls, column: Any, indices: np.ndarray) -> BatchSamples:
        """The samples ``indices`` of an image column, in one native call."""
        indices = np.ascontiguousarray(indices, np.int64)  # kept for view(): once, here
        table, python_path, keepalive = column.heap.sample_table(
            indices, column.codecs, column.heights, column.widths, _NATIVE_CODECS)
        return cls(table, python_path, keepalive, column, indices)

    @property
    def codecs(self) -> np.ndarray:
        return self.table[2]

    @property
    def heights(self) -> np.ndarray:
        return self.table[3]

    @property
    def widths(self) -> np.ndarray:
        return self.table[4]

    def view(self, k: int) -> np.ndarray:
        """Sample ``k``'s stored bytes as a ``uint8`` array."""
        return self.column.view(int(self.indices[k]))

    def python_slice(self, lo: int, hi: int) -> list[int]:
        """The positions in ``[lo, hi)`` that go through Python."""
        return [k for k in self.python_path if lo <= k < hi] if self.python_path else []


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what}: size must be positive, got {size!r}")
    return h, w


class ImageDecoder(abc.ABC):
    """The contract between a decoder and the loader.

    The loader calls :meth:`allocate` once per prefetch slot, :meth:`plan` once per
    batch (in the consumer thread), :meth:`decode_slice` for each slice of the batch (in a
    decode thread) and :meth:`finish` when the batch is complete. The default
    :meth:`decode_slice` calls :meth:`decode_one` per sample; the crop decoders hand the
    whole slice to the native kernel instead.
    """

    @abc.abstractmethod
    def allocate(self, batch_size: int, column: ImageColumnView, pin_memory: bool) -> Any:
        """Buffers for one batch, reused batch after batch."""

    def plan(self, ctx: BatchContext, column: ImageColumnView) -> Any:
        """Per-batch parameters (crop boxes, say) for the samples ``ctx.indices``."""
        return None

    @abc.abstractmethod
    def decode_one(self, state: ThreadState, k: int, data: np.ndarray, codec: int,
                   height: int, width: int, plan: Any, slot: Any) -> None:
        """Decode sample ``k`` of the batch from its stored bytes into ``slot``."""

    def decode_slice(self, lo: int, hi: int, samples: BatchSamples, plan: Any,
                     slot: Any) -> list[tuple[int, Exception]]:
        """Decode samples ``lo .. hi - 1`` of the batch into ``slot``; the samples that
        failed, as ``(batch position, error)`` (the loader raises or skips them). Errors
        that are not about one sample (a missing library, no memory) are raised."""
        return self._decode_each(thread_state(), samples, range(lo, hi), plan, slot)

    def _decode_each(self, state: ThreadState, samples: BatchSamples, positions: Any,
                     plan: Any, slot: Any) -> list[tuple[int, Exception]]:
        failed: list[tuple[int, Exception]] = []
        for k in positions:
            k = int(k)
            try:
                self.decode_one(state, k, samples.view(k), int(samples.codecs[k]),
                                int(samples.heights[k]), int(samples.widths[k]), plan, slot)
            except _NOT_ONE_SAMPLE:
                raise
            except Exception as exc:
                failed.append((k, exc))
        return failed

    @abc.abstractmethod
    def finish(self, slot: Any, plan: Any, n: int) -> Any:
        """The batch value for the first ``n`` samples of ``slot``."""

    def params(self, plan: Any, n: int) -> Any:
        """The crop boxes of the first ``n`` samples, when asked for (``return_params``):
        an ``(n, 4)`` int64 tensor of ``(top, left, height, width)`` in the stored image's
        pixels (the region actually read), or a dict of them per view; else ``None``."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


#: Failures that are not about one sample's bytes.
_NOT_ONE_SAMPLE = (MissingDependencyError, MemoryError)


def _native_slice(decoder: ImageDecoder, lo: int, hi: int, samples: BatchSamples, plan: Any,
                  slot: Any, outs: tuple[np.ndarray, ...], sizes: tuple[tuple[int, int], ...],
                  fast: bool) -> list[tuple[int, Exception]]:
    """A crop decoder's slice: every JPEG and YUV420 sample in ``[lo, hi)`` in one kernel
    call (GIL released throughout), then the rare others through ``decode_one``."""
    raw = kernel.worker().run(samples.table, plan.boxes, plan.denoms, outs, sizes, lo, hi,
                              partial_decode_on(), fast, kernel.MAX_PIXELS)
    failed = kernel.failures(raw) if raw else []
    rest = samples.python_slice(lo, hi)
    if rest:
        failed += decoder._decode_each(thread_state(), samples, rest, plan, slot)
    return failed


class _CropDecoder(ImageDecoder):
    """Decoders writing fixed-size ``[B, H, W, 3] uint8`` batches of crops."""

    def __init__(self, size: int | Sequence[int], fast: bool = False,
                 return_params: bool = False) -> None:
        self.size = _pair(size, type(self).__name__)
        self.fast = fast
        self.return_params = return_params

    def allocate(self, batch_size: int, column: ImageColumnView, pin_memory: bool) -> Any:
        h, w = self.size
        tensor = torch.empty((batch_size, h, w, 3), dtype=torch.uint8, pin_memory=pin_memory)
        return tensor, tensor.numpy()

    @abc.abstractmethod
    def boxes(self, ctx: BatchContext, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """``(n, 4)`` crop boxes ``(top, left, height, width)``."""

    def plan(self, ctx: BatchContext, column: ImageColumnView) -> CropPlan:
        idx = ctx.indices
        heights, widths = column.heights[idx], column.widths[idx]
        return plan_crops(self.boxes(ctx, heights, widths), heights, widths, *self.size)

    def decode_slice(self, lo: int, hi: int, samples: BatchSamples, plan: CropPlan,
                     slot: Any) -> list[tuple[int, Exception]]:
        return _native_slice(self, lo, hi, samples, plan, slot, (slot[1],), (self.size,),
                             self.fast)

    def decode_one(self, state: ThreadState, k: int, data: np.ndarray, codec: int,
                   height: int, width: int, plan: Any, slot: Any) -> None:
        """A sample the kernel does not decode (Pillow's formats, raw RGB)."""
        resize_into(crop_box(decode_image(state, data, codec, height, width), plan[k]),
                    slot[1][k])

    def finish(self, slot: Any, plan: Any, n: int) -> Any:
        return slot[0] if n == slot[1].shape[0] else slot[0][:n]

    def params(self, plan: Any, n: int) -> Any:
        return torch.from_numpy(np.array(plan.boxes[:n], np.int64)) if self.return_params else None


class DecodeRandomResizedCrop(_CropDecoder):
    """A random crop of ``scale`` × the area and aspect ratio within ``ratio`` (torchvision's
    ``RandomResizedCrop`` parameters), resized to ``size``. Draws are keyed by ``seed`` if
    given, else by the loader's seed.

    ``fast=True`` decodes with libjpeg-turbo's integer IDCT and plain chroma replication:
    ~7% faster than an accurate decode of the same rows, at the cost of blockier colour
    edges (up to tens of levels at sharp colour boundaries, ~1 level on average). It
    decodes every row down to the crop's last and every column (libjpeg-turbo's row
    skipping is unsafe with plain chroma replication), so it is usually the slower
    choice: the accurate default decodes only the crop's region.

    ``return_params=True`` adds each sample's crop to the batch as ``<field>_params``
    (docs/pipelines.md)."""

    def __init__(self, size: int | Sequence[int] = 224,
                 scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), seed: int | None = None,
                 fast: bool = False, return_params: bool = False) -> None:
        super().__init__(size, fast, return_params)
        self.seed = seed
        if not (0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"DecodeRandomResizedCrop: scale must satisfy 0 < lo <= hi <= 1, "
                             f"got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"DecodeRandomResizedCrop: ratio must satisfy 0 < lo <= hi, "
                             f"got {ratio}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def _stream_key(self, ctx: BatchContext) -> int:
        seed = ctx.seed if self.seed is None else self.seed
        return stream_key(seed, ctx.epoch, ctx.view, _RRC_STREAM)

    def boxes(self, ctx: BatchContext, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        # random_resized_crop_boxes over ctx.uniforms("random_resized_crop", 4 * ATTEMPTS),
        # natively (tests/decode/test_plan.py holds the two equal)
        return kernel.random_resized_crops(self._stream_key(ctx), ctx.indices, heights,
                                           widths, self.scale, self.ratio)

    def plan(self, ctx: BatchContext, column: ImageColumnView) -> CropPlan:
        plan: CropPlan = kernel.random_resized_crops(
            self._stream_key(ctx), ctx.indices, column.heights, column.widths, self.scale,
            self.ratio, self.size, by_index=True)
        return plan


class DecodeMultiRandomResizedCrop(ImageDecoder):
    """Several random resized crops of each image from one decode (multi-crop SSL).

    View ``k`` has its own ``sizes[k]``, ``scales[k]`` and ``ratios[k]`` (a single
    ``scale``/``ratio`` applies to all views) and its own random stream, keyed by the
    view number. The output is a dict ``{name: [B, h, w, 3] uint8}``, names
    ``view_0, view_1, ...`` unless given. The image is decoded once, at the DCT scale
    the most demanding view allows; ``fast`` as in :class:`DecodeRandomResizedCrop`.
    """

    def __init__(
        self,
        sizes: Sequence[int | Sequence[int]] = (224, 224),
        scales: Sequence[float] | Sequence[Sequence[float]] = (0.08, 1.0),
        ratios: Sequence[float] | Sequence[Sequence[float]] = (3 / 4, 4 / 3),
        names: Sequence[str] | None = None,
        seed: int | None = None,
        fast: bool = False,
        return_params: bool = False,
    ) -> None:
        n = len(sizes)
        self.fast = fast
        self.return_params = return_params
        if n == 0:
            raise ValueError("DecodeMultiRandomResizedCrop needs at least one view size")
        self.views = [
            DecodeRandomResizedCrop(size, _per_view(scales, k, n, "scales"),
                                    _per_view(ratios, k, n, "ratios"), seed)
            for k, size in enumerate(sizes)
        ]
        self.names = list(names) if names is not None else [f"view_{k}" for k in range(n)]
        if len(self.names) != n or len(set(self.names)) != n:
            raise ValueError(f"DecodeMultiRandomResizedCrop: {n} views need {n} distinct names, "
                             f"got {self.names}")

    def allocate(self, batch_size: int, column: ImageColumnView, pin_memory: bool) -> Any:
        return [v.allocate(batch_size, column, pin_memory) for v in self.views]

    def plan(self, ctx: BatchContext, column: ImageColumnView) -> MultiCropPlan:
        return MultiCropPlan.of([v.plan(ctx.for_view(k), column)
                                 for k, v in enumerate(self.views)])

    def decode_slice(self, lo: int, hi: int, samples: BatchSamples, plan: MultiCropPlan,
                     slot: Any) -> list[tuple[int, Exception]]:
        return _native_slice(self, lo, hi, samples, plan, slot, tuple(s[1] for s in slot),
                             tuple(v.size for v in self.views), self.fast)

    def decode_one(self, state: ThreadState, k: int, data: np.ndarray, codec: int,
                   height: int, width: int, plan: Any, slot: Any) -> None:
        """A sample the kernel does not decode: decoded once, every view cropped from it."""
        img = decode_image(state, data, codec, height, width)
        for view_plan, view_slot in zip(plan, slot):
            resize_into(crop_box(img, view_plan[k]), view_slot[1][k])

    def finish(self, slot: Any, plan: Any, n: int) -> Any:
        return {name: s[0] if n == s[1].shape[0] else s[0][:n]
                for name, s in zip(self.names, slot)}

    def params(self, plan: Any, n: int) -> Any:
        if not self.return_params:
            return None
        return {name: torch.from_numpy(np.array(p.boxes[:n], np.int64))
                for name, p in zip(self.names, plan)}


@dataclass(frozen=True)
class MultiCropPlan:
    """Every view's :class:`CropPlan`, plus what the kernel reads: ``boxes`` (``int64
    (n, views, 4)``) and one DCT scale per sample, ``denoms``, the finest any view asks
    for (each view's box is on its own scale's grid, hence on the finest one too). The
    kernel decodes the union of a sample's view boxes once. Reads like the list of
    views' plans."""

    views: list[CropPlan]
    boxes: np.ndarray
    denoms: np.ndarray

    @classmethod
    def of(cls, views: list[CropPlan]) -> MultiCropPlan:
        boxes = np.ascontiguousarray(np.stack([v.boxes for v in views], 1))
        return cls(views, boxes, np.min(np.stack([v.denoms for v in views]), 0))

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, k: int) -> CropPlan:
        return self.views[k]

    def __iter__(self) -> Any:
        return iter(self.views)


def _per_view(value: Any, k: int, n: int, what: str) -> Sequence[float]:
    """``value`` is one (lo, hi) pair for every view, or one pair per view."""
    if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return value
    if len(value) != n:
        raise ValueError(f"DecodeMultiRandomResizedCrop: {what} needs one (lo, hi) pair or "
                         f"{n} of them, got {value!r}")
    return value[k]


class DecodeCenterCrop(_CropDecoder):
    """The centred square of side ``ratio × shorter side``, resized to ``size``.

    The default ``ratio = 224/256`` is torchvision's ``Resize(256)`` + ``CenterCrop(224)``.
    Decoding is accurate unless ``fast=True`` (see :class:`DecodeRandomResizedCrop`).
    """

    def __init__(self, size: int | Sequence[int] = 224, ratio: float = 224 / 256,
                 fast: bool = False, return_params: bool = False) -> None:
        super().__init__(size, fast, return_params)
        if not 0 < ratio <= 1:
            raise ValueError(f"DecodeCenterCrop: ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)

    def boxes(self, ctx: BatchContext, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        return center_crop_boxes(heights, widths, self.ratio)


class DecodeResizeCrop(DecodeCenterCrop):
    """Resize the shorter side to ``resize_size``, then take the centre ``crop_size`` square
    (done as one crop + one resize)."""

    def __init__(self, resize_size: int = 256, crop_size: int = 224,
                 return_params: bool = False) -> None:
        if crop_size > resize_size:
            raise ValueError(f"DecodeResizeCrop: crop_size ({crop_size}) must not exceed "
                             f"resize_size ({resize_size})")
        super().__init__(crop_size, ratio=crop_size / resize_size, return_params=return_params)
        self.resize_size = resize_size
        self.crop_size = crop_size


class DecodeOnly(ImageDecoder):
    """Full-size decode: a list of ``[H, W, 3] uint8`` tensors (sizes vary)."""

    def allocate(self, batch_size: int, column: ImageColumnView, pin_memory: bool) -> Any:
        return [None] * batch_size

    def decode_one(self, state: ThreadState, k: int, data: np.ndarray, codec: int,
                   height: int, width: int, plan: Any, slot: Any) -> None:
        img = decode_image(state, data, codec, height, width)
        slot[k] = torch.from_numpy(np.array(img))  # own copy: a JPEG's pixels are scratch

    def finish(self, slot: Any, plan: Any, n: int) -> Any:
        out = slot[:n]
        slot[:] = [None] * len(slot)
        return out


@dataclass(frozen=True)
class PackedBytes:
    """Encoded bytes of a batch, packed: sample ``k`` is ``data[offsets[k]:offsets[k+1]]``."""

    data: torch.Tensor
    offsets: torch.Tensor

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.data[self.offsets[k] : self.offsets[k + 1]]


class ReadBytes(ImageDecoder):
    """No decoding: each sample's stored bytes, gathered into one buffer per batch."""

    def allocate(self, batch_size: int, column: ImageColumnView, pin_memory: bool) -> Any:
        largest = int(column.sizes.max()) if len(column.sizes) else 0
        data = torch.empty(batch_size * largest, dtype=torch.uint8, pin_memory=pin_memory)
        return data, data.numpy()

    def plan(self, ctx: BatchContext, column: ImageColumnView) -> Any:
        offsets = np.zeros(len(ctx.indices) + 1, np.int64)
        np.cumsum(column.sizes[ctx.indices], out=offsets[1:])
        return offsets

    def decode_one(self, state: ThreadState, k: int, data: np.ndarray, codec: int,
                   height: int, width: int, plan: Any, slot: Any) -> None:
        slot[1][plan[k] : plan[k + 1]] = data

    def finish(self, slot: Any, plan: Any, n: int) -> Any:
        return PackedBytes(slot[0][: int(plan[n])], torch.from_numpy(plan[: n + 1]))
