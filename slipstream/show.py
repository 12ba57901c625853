"""See what a pipeline preset feeds the model: one batch drawn as a grid of images.

``slipstream show CACHE --pipeline simclr --out grid.png`` runs the preset on the CPU
with ``normalize=False`` and ``dtype=torch.uint8`` (so the pixels are the ones the model
would see before normalisation) and writes one row per sample, one column per view.

Layout (all in pixels; :data:`PAD` and :data:`HEADER` are module constants):

- Every view keeps its size relative to the others. Without ``size`` the views are
  drawn at their native size; with ``size`` every view is scaled by the same factor
  ``size / (height of the tallest view)`` (Lanczos), so the tallest view is ``size``
  pixels high and a 96-pixel local crop stays less than half as tall as a 224-pixel
  global one.
- All cells have the same size: the largest (scaled) view's height and width. A smaller
  view sits centred in its cell (offset ``(cell - view) // 2`` on each axis) on a
  mid-grey cell background, so the grey margin shows how much smaller it is.
- A header band of :data:`HEADER` pixels on top holds the view names (Pillow's default
  font); cells are separated, and framed, by :data:`PAD` pixels of dark background.
  Cell ``(row r, column c)`` starts at ``x = PAD + c * (cell_w + PAD)``,
  ``y = HEADER + PAD + r * (cell_h + PAD)``; the grid is
  ``PAD + columns * (cell_w + PAD)`` wide and ``HEADER + PAD + rows * (cell_h + PAD)``
  high.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UnknownPipelineError

__all__ = ["PAD", "HEADER", "PRESET_NAMES", "UnknownPipelineError", "check_pipeline_name",
           "preset_pipelines", "render_grid", "show_pipeline"]

#: Pixels between cells and around the grid.
PAD = 4
#: Height of the band holding the view names.
HEADER = 16

_BACKGROUND = (32, 32, 32)
_CELL = (96, 96, 96)
_TEXT = (235, 235, 235)


def _presets() -> dict[str, Callable[..., dict[str, list[Any]]]]:
    from . import pipelines as P

    return {"supervised_train": P.supervised_train, "supervised_val": P.supervised_val,
            "simclr": P.simclr, "ipcl": P.ipcl, "lejepa": P.lejepa, "multicrop": P.multicrop}


#: The names ``show`` accepts, in the order ``docs/pipelines.md`` describes them.
PRESET_NAMES = ("supervised_train", "supervised_val", "simclr", "ipcl", "lejepa", "multicrop")


def check_pipeline_name(name: str) -> str:
    """``name`` if it is a preset, else :class:`UnknownPipelineError` listing them."""
    if name not in PRESET_NAMES:
        raise UnknownPipelineError(f"unknown pipeline {name!r}; choose one of "
                                   f"{', '.join(PRESET_NAMES)}")
    return name


def preset_pipelines(name: str, seed: int | None = None) -> dict[str, list[Any]]:
    """The preset ``name`` with its defaults, on the CPU, unnormalised ``uint8`` output."""
    make = _presets()[check_pipeline_name(name)]
    return make(seed=seed, device="cpu", dtype=torch.uint8, normalize=False)


def _view_names(stages: Sequence[Any], field: str) -> list[str]:
    """The batch keys an image pipeline produces: a multi-view decoder's names, or the
    field's own name."""
    names = getattr(stages[0], "names", None)
    return list(names) if names is not None else [field]


def _images(view: Any, name: str) -> np.ndarray:
    """A batch of images ``[B, 3, h, w]`` (or ``[B, h, w, 3]``), uint8 or float in [0, 1],
    as ``[B, h, w, 3] uint8``."""
    if not isinstance(view, torch.Tensor) or view.dim() != 4:
        shape = tuple(view.shape) if isinstance(view, torch.Tensor) else type(view).__name__
        raise ValueError(f"render_grid: view {name!r} must be a [B, 3, H, W] tensor, got {shape}")
    x = view.detach().cpu()
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # channels last, as decoders write
    if x.shape[1] not in (1, 3):
        raise ValueError(f"render_grid: view {name!r} needs 1 or 3 channels, got "
                         f"{tuple(view.shape)}")
    if x.dtype.is_floating_point:
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"render_grid: view {name!r} has values in [{lo:.3g}, {hi:.3g}]; "
                             "it looks normalised: pass normalize=False to the preset")
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        raise ValueError(f"render_grid: view {name!r} must be uint8 or float, got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def render_grid(batch: Mapping[str, Any], view_names: Sequence[str], rows: int | None = None,
                size: int | None = None) -> Any:
    """One batch as a ``PIL.Image``: a row per sample (the first ``rows``, default all),
    a column per name in ``view_names``, names in a header band.

    Views are ``[B, 3, h, w]`` tensors, ``uint8`` or float in [0, 1] (a normalised batch
    is refused). ``size``: height in pixels of the tallest view once drawn; every view is
    scaled by the same factor, so relative sizes stay visible (``None``: native size).
    Smaller views are centred on a grey cell of the largest view's size. The exact
    geometry is in this module's docstring.
    """
    from PIL import Image, ImageDraw, ImageFont

    names = list(view_names)
    if not names:
        raise ValueError("render_grid: no views to draw")
    missing = [n for n in names if n not in batch]
    if missing:
        raise KeyError(f"render_grid: the batch has no view {missing}; its keys are "
                       f"{list(batch)}")
    images = {n: _images(batch[n], n) for n in names}
    n_rows = min(len(v) for v in images.values())
    if rows is not None:
        if rows <= 0:
            raise ValueError(f"render_grid: rows must be positive, got {rows}")
        n_rows = min(n_rows, rows)
    if size is not None and size <= 0:
        raise ValueError(f"render_grid: size must be positive, got {size}")

    tallest = max(v.shape[1] for v in images.values())
    scale = 1.0 if size is None else size / tallest

    def drawn(h: int, w: int) -> tuple[int, int]:
        return (h, w) if size is None else (max(1, round(h * scale)), max(1, round(w * scale)))

    shapes = {n: drawn(v.shape[1], v.shape[2]) for n, v in images.items()}
    cell_h = max(h for h, _ in shapes.values())
    cell_w = max(w for _, w in shapes.values())
    width = PAD + len(names) * (cell_w + PAD)
    height = HEADER + PAD + n_rows * (cell_h + PAD)
    grid = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()

    for c, name in enumerate(names):
        x0 = PAD + c * (cell_w + PAD)
        label = name
        while len(label) > 1 and draw.textlength(label, font=font) > cell_w:
            label = label[:-1]
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.text((x0 + (cell_w - (right - left)) // 2 - left,
                   (HEADER + PAD - (bottom - top)) // 2 - top), label, fill=_TEXT, font=font)
        h, w = shapes[name]
        for r in range(n_rows):
            y0 = HEADER + PAD + r * (cell_h + PAD)
            draw.rectangle((x0, y0, x0 + cell_w - 1, y0 + cell_h - 1), fill=_CELL)
            tile = Image.fromarray(images[name][r])
            if tile.size != (w, h):
                tile = tile.resize((w, h), Image.Resampling.LANCZOS)
            grid.paste(tile, (x0 + (cell_w - w) // 2, y0 + (cell_h - h) // 2))
    return grid


def show_pipeline(cache: Any, name: str, out: str | os.PathLike[str] | None = None, *,
                  batch_size: int = 4, seed: int = 0, size: int | None = None,
                  num_threads: int | None = None) -> Any:
    """Load the first batch of epoch 0 (``shuffle=True``, loader seed ``seed``) of
    ``cache`` through the preset ``name`` (CPU, ``normalize=False``, ``uint8``), draw it
    with :func:`render_grid` and save it to ``out`` as PNG (if given). Returns the image.

    ``cache`` is a :class:`~slipstream.Cache`, a :class:`~slipstream.SlipstreamDataset`
    or a cache directory. The preset's ``image`` pipeline runs on the cache's first
    image field.
    """
    from .cache import Cache
    from .loader import SlipstreamLoader
    from .schema import FieldKind

    pipes = preset_pipelines(name)  # an unknown name fails before any loading
    if batch_size <= 0:
        raise ValueError(f"show: batch_size must be positive, got {batch_size}")
    if isinstance(cache, (str, os.PathLike)):
        cache = Cache(Path(cache))
    image_fields = [f.name for f in cache.fields if f.kind is FieldKind.IMAGE]
    if not image_fields:
        raise ValueError(f"show: {cache!r} has no image field")
    field = image_fields[0]
    stages = pipes["image"]
    loader = SlipstreamLoader(cache, batch_size=batch_size, shuffle=True, seed=seed,
                              pipelines={field: stages}, num_threads=num_threads,
                              progress=False)
    it: Any = iter(loader)  # an _EpochIterator: close() joins its threads
    try:
        batch = next(it)
        grid = render_grid(batch, _view_names(stages, field), size=size)
    finally:
        it.close()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        grid.save(out, format="PNG", optimize=True)
    return grid
