"""Checks shared by the source tests: a dataset through the loader, compared with Pillow.

``decoded_full`` runs every sample through ``DecodeOnly`` in file order; a JPEG must
decode exactly as Pillow decodes it, raw pixels must come back unchanged.
``center_crops`` runs ``DecodeCenterCrop(size) + ToTorchImage`` and ``center_crop_reference``
computes the same crop with Pillow: the centred square of side ``ratio * min(h, w)``
(``slipstream.decode.geometry.center_crop_boxes``, snapped to even coordinates as the
decoder plans it), resized bilinearly. The sizes used
here only enlarge, where OpenCV's and Pillow's bilinear filters differ by fixed-point
rounding alone: tolerance ``ENLARGE_MAX`` levels (``tests/decode/test_decoders.py`` documents it).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from slipstream import DecodeCenterCrop, DecodeOnly, SlipstreamLoader, ToTorchImage
from slipstream.decode.geometry import center_crop_boxes, snap_to_dct_grid

ENLARGE_MAX = 2


def pil_rgb(data: bytes) -> np.ndarray:
    """Pillow's RGB decode of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def batches(dataset: Any, pipelines: dict, batch_size: int = 4) -> list[dict]:
    loader = SlipstreamLoader(dataset, batch_size=batch_size, shuffle=False, seed=0,
                              pipelines=pipelines, num_threads=2, progress=False)
    out = []
    for batch in loader:
        out.append({k: (v.clone() if isinstance(v, torch.Tensor) else
                        [t.clone() for t in v] if isinstance(v, list) and v
                        and isinstance(v[0], torch.Tensor) else v)
                    for k, v in batch.items()})
    return out


def column(batch_list: list[dict], name: str) -> list:
    """A field's values over all batches, as Python values."""
    out: list = []
    for b in batch_list:
        v = b[name]
        out.extend(v.tolist() if isinstance(v, torch.Tensor) else list(v))
    return out


def decoded_full(dataset: Any, image_fields: Sequence[str], batch_size: int = 4
                 ) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Every sample decoded at full size, per image field."""
    got = batches(dataset, {f: [DecodeOnly()] for f in image_fields}, batch_size)
    images = {f: [t.numpy() for b in got for t in b[f]] for f in image_fields}
    return got, images


def center_crop_reference(pixels: np.ndarray, size: int, ratio: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    # the decoder's own plan: the centred square, grown to even coordinates (chroma grid)
    box = snap_to_dct_grid(center_crop_boxes(np.array([h]), np.array([w]), ratio),
                           np.array([h]), np.array([w]), size, size)[0]
    top, left, ch, cw = (int(v) for v in box)
    crop = Image.fromarray(pixels).crop((left, top, left + cw, top + ch))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def center_crops(dataset: Any, field: str, size: int) -> tuple[list[dict], np.ndarray, float]:
    """``DecodeCenterCrop(size) + ToTorchImage`` of every sample: ``[N, 3, size, size]``."""
    decoder = DecodeCenterCrop(size)
    got = batches(dataset, {field: [decoder, ToTorchImage()]})
    stacked = torch.cat([b[field] for b in got]).numpy()
    assert stacked.shape[1:] == (3, size, size)
    return got, stacked, decoder.ratio


def assert_center_crops_match(crops: np.ndarray, sources: Sequence[np.ndarray], size: int,
                              ratio: float) -> None:
    assert len(crops) == len(sources)
    for k, src in enumerate(sources):
        h, w = src.shape[:2]
        assert ratio * min(h, w) <= size, "these checks only cover enlarging crops"
        ref = center_crop_reference(src, size, ratio).astype(np.int16)
        err = np.abs(crops[k].transpose(1, 2, 0).astype(np.int16) - ref)
        assert err.max() <= ENLARGE_MAX, f"sample {k}: max error {err.max()}"
