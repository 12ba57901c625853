"""The native decode kernel from Python: loading it, one worker per thread, error codes.

``slipstream.decode._kernel`` (``_kernel.c``) decodes a whole slice of a batch per call
with the GIL released: JPEG region decoding through the libjpeg API at the planned DCT
scale, Pillow's anti-aliased (triangle) resize straight into the batch slot, and YUV 4:2:0
crop + resize + colour conversion. Python plans the batch
(:class:`~slipstream.decode.geometry.CropPlan`); the kernel obeys the plan. See
docs/architecture.md for the contract.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
import weakref
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import KernelDecodeError, MissingDependencyError
from .geometry import CropPlan

__all__ = [
    "KERNEL_ENV",
    "KernelDecodeError",
    "load",
    "worker",
    "resize",
    "failures",
    "decode_sample",
    "random_resized_crops",
    "native_seconds",
    "ERROR_NAMES",
    "MAX_PIXELS",
]

#: Path of another build of the kernel to load instead of the installed one (the
#: sanitizer build of ``nox -s sanitize``).
KERNEL_ENV = "SLIPSTREAM_KERNEL"

#: The most pixels one sample may have (the same bound as a cache build's): decode
#: scratch memory is bounded by it.
MAX_PIXELS = 178_956_970

#: The kernel's per-sample result codes (``_kernel.c``), by name.
ERROR_NAMES = {
    1: "corrupt",
    2: "truncated",
    3: "header mismatch",
    4: "unsupported",
    5: "too large",
    6: "bad crop box",
    7: "bad size",
    8: "unexpected output geometry",
    9: "out of memory",
}
_NO_MEMORY = 9

_INSTALL_HINT = (
    "slipstream's native decode kernel (slipstream.decode._kernel) is not built. It is "
    "compiled when slipstream is installed, which needs gcc and libjpeg-turbo's headers: "
    "run scripts/setup.sh, or install them (Debian 12 `sudo apt-get install gcc "
    "libjpeg62-turbo-dev`, Ubuntu `libjpeg-turbo8-dev`, conda `libjpeg-turbo`) and "
    "reinstall slipstream (`pip install -e .`)"
)


_module: ModuleType | None = None
_lock = threading.Lock()


def load() -> ModuleType:
    """The kernel module (from :data:`KERNEL_ENV` if set); a clear error if not built."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            path = os.environ.get(KERNEL_ENV)
            if path:
                spec = importlib.util.spec_from_file_location("slipstream.decode._kernel", path)
                try:
                    if spec is None or spec.loader is None:
                        raise ImportError("not an extension module")
                    mod = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(mod)
                except ImportError as exc:
                    raise MissingDependencyError(
                        f"{KERNEL_ENV}={path}: cannot load it ({exc}); unset {KERNEL_ENV} to "
                        "use the installed kernel") from exc
                sys.modules["slipstream.decode._kernel"] = mod
            else:
                try:
                    from . import _kernel as mod  # type: ignore[attr-defined, no-redef]
                except ImportError as exc:
                    raise MissingDependencyError(f"{_INSTALL_HINT} ({exc})") from exc
            _module = mod
    return _module


_local = threading.local()
#: every live worker, for :func:`native_seconds`
_workers: weakref.WeakSet[Any] = weakref.WeakSet()


def worker() -> Any:
    """This thread's kernel worker (its libjpeg decompressor and scratch memory)."""
    w = getattr(_local, "worker", None)
    if w is None:
        w = _local.worker = load().Worker()
        _workers.add(w)
    return w


def native_seconds() -> float:
    """CPU seconds the live workers' threads spent inside the kernel with the GIL released
    (benchmarks: a thread's CPU time less this is its time running Python)."""
    return sum(w.native_ns for w in list(_workers)) / 1e9


def resize(src: np.ndarray, out: np.ndarray) -> None:
    """Pillow's anti-aliased bilinear resize of ``src`` (``uint8 [h, w, c]``, c = 1 or 3,
    any strides) into ``out`` (C-contiguous ``uint8 [oh, ow, c]``), GIL released."""
    src = np.ascontiguousarray(src)
    h, w = src.shape[:2]
    c = src.shape[2] if src.ndim == 3 else 1
    worker().resize(src, h, w, c, out, out.shape[0], out.shape[1])


def failures(raw: Sequence[tuple[int, int, str]]) -> list[tuple[int, Exception]]:
    """The kernel's ``(k, code, message)`` failures as exceptions; running out of memory is
    not one sample's fault and is raised."""
    out: list[tuple[int, Exception]] = []
    for k, code, message in raw:
        if code == _NO_MEMORY:
            raise MemoryError(f"decode kernel: {message}")
        out.append((k, KernelDecodeError(f"{ERROR_NAMES.get(code, f'error {code}')}: {message}", code)))
    return out


def decode_sample(data: np.ndarray, codec: int, height: int, width: int,
                  boxes: Sequence[Sequence[int]], denom: int, outs: Sequence[np.ndarray],
                  region: bool = True, fast: bool = False) -> None:
    """One sample through the kernel (outside the loader: tests, tools): crop every box of
    ``boxes`` (full-resolution ``(top, left, height, width)``) from the stored bytes
    ``data``, decoded at 1/``denom`` if a JPEG, resized into the matching ``outs``
    (C-contiguous ``uint8 [h, w, 3]``). Raises :class:`KernelDecodeError`."""
    data = np.ascontiguousarray(data, np.uint8)
    # the per-sample table (rows address, size, codec, height, width), for one sample;
    # codec, height and width wrap as the uint8/uint32 columns of a cache would
    table = np.array([[data.ctypes.data], [data.nbytes], [np.uint8(codec)],
                      [np.uint32(height)], [np.uint32(width)]], np.uint64)
    raw = worker().run(
        table, np.ascontiguousarray(boxes, np.int64).reshape(1, -1, 4),
        np.array([denom], np.int64), tuple(outs), tuple(o.shape[:2] for o in outs), 0, 1,
        region, fast, MAX_PIXELS)
    for _, exc in failures(raw):
        raise exc


def random_resized_crops(key: int, indices: np.ndarray, heights: np.ndarray,
                         widths: np.ndarray, scale: Sequence[float], ratio: Sequence[float],
                         out_size: tuple[int, int] | None = None,
                         by_index: bool = False) -> Any:
    """The random resized crop boxes of samples ``indices`` (images ``heights`` x
    ``widths`` by batch position, or whole columns read at ``indices`` if ``by_index``),
    drawn from the random stream ``key`` (:func:`slipstream._rng.stream_key`), in one
    native call: the boxes of :func:`~slipstream.decode.geometry.random_resized_crop_boxes`
    fed with that stream's uniforms, without drawing the attempts a sample does not need.
    With ``out_size`` ``(h, w)``, the :class:`~slipstream.decode.geometry.CropPlan` of
    those boxes for that output (:func:`~slipstream.decode.geometry.plan_crops`); else the
    ``int64 (n, 4)`` boxes."""
    n = len(indices)
    boxes = np.empty((n, 4), np.int64)
    denoms = np.empty(n, np.int64) if out_size is not None else None
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    out_h, out_w = out_size if out_size is not None else (1, 1)
    load().plan_rrc(key, np.ascontiguousarray(indices, np.int64),
                    np.ascontiguousarray(heights, np.uint32),
                    np.ascontiguousarray(widths, np.uint32), by_index, scale[0],
                    scale[1] - scale[0],
                    log_lo, log_hi - log_lo, min(ratio), max(ratio), out_h, out_w, boxes,
                    denoms)
    return boxes if denoms is None else CropPlan(boxes, denoms)
