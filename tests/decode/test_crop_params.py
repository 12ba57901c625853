"""``return_params=True``: each sample's crop box and flip come with the batch, and they
are the ones that made its pixels (checked by redoing the crop with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slipstream import (
    DecodeCenterCrop,
    DecodeMultiRandomResizedCrop,
    DecodeOnly,
    DecodeRandomResizedCrop,
    MultiCropPipeline,
    NamedCopies,
    RandomHorizontalFlip,
    SlipstreamDataset,
    SlipstreamLoader,
    ToTorchImage,
)
from slipstream.cache import Cache

from ..source_checks import ENLARGE_MAX

SIZE = 200  # larger than any crop of the 120x160 images: every crop is enlarged, where
#             Pillow's bilinear filter and the decoder's agree within ENLARGE_MAX levels


@pytest.fixture(scope="module")
def cache(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return SlipstreamDataset(image_folder, cache_dir=tmp_path_factory.mktemp("params")
                             ).build_cache(progress=False)


@pytest.fixture(scope="module")
def full(cache: Cache) -> dict[str, np.ndarray]:
    """Every image decoded whole, by path."""
    loader = SlipstreamLoader(cache, batch_size=6, shuffle=False, seed=0, num_threads=2,
                              progress=False, pipelines={"image": [DecodeOnly()]})
    return {p: img.numpy().copy() for b in loader for p, img in zip(b["path"], b["image"])}


def _redo(pixels: np.ndarray, row: torch.Tensor, size: int) -> np.ndarray:
    top, left, h, w, flip = (int(v) for v in row)
    assert top >= 0 and left >= 0 and h > 0 and w > 0
    assert top + h <= pixels.shape[0] and left + w <= pixels.shape[1]
    crop = Image.fromarray(pixels).crop((left, top, left + w, top + h))
    out = np.asarray(crop.resize((size, size), Image.BILINEAR))
    return out[:, ::-1] if flip else out


def _assert_made_by(images: torch.Tensor, params: torch.Tensor, paths: list[str],
                    full: dict[str, np.ndarray], size: int) -> None:
    assert params.dtype == torch.int64 and params.shape == (len(paths), 5)
    for img, row, path in zip(images, params, paths):
        ref = _redo(full[path], row, size).astype(np.int16)
        err = np.abs(img.permute(1, 2, 0).numpy().astype(np.int16) - ref)
        assert err.max() <= ENLARGE_MAX, (path, row.tolist(), int(err.max()))


def test_random_crops_and_flips_are_reported(cache, full):
    loader = SlipstreamLoader(
        cache, batch_size=5, shuffle=True, seed=3, num_threads=2, progress=False,
        pipelines={"image": [DecodeRandomResizedCrop(SIZE, return_params=True), ToTorchImage(),
                             RandomHorizontalFlip(0.5)]})
    rows = []
    for batch in loader:
        _assert_made_by(batch["image"], batch["image_params"], batch["path"], full, SIZE)
        rows.append(batch["image_params"])
    rows = torch.cat(rows)
    assert len(rows) == len(cache)
    assert 0 < int(rows[:, 4].sum()) < len(rows)  # some flipped, some not
    assert len({tuple(r[:4].tolist()) for r in rows}) > len(rows) // 2  # crops differ


def test_params_follow_the_sample_not_the_batch(cache):
    def params_by_path(batch_size: int) -> dict[str, list[int]]:
        loader = SlipstreamLoader(
            cache, batch_size=batch_size, seed=8, num_threads=1, progress=False,
            pipelines={"image": [DecodeRandomResizedCrop(32, return_params=True),
                                 ToTorchImage(), RandomHorizontalFlip()]})
        return {p: r.tolist() for b in loader for p, r in zip(b["path"], b["image_params"])}

    assert params_by_path(4) == params_by_path(7)


def test_center_crop_params_and_none_by_default(cache, full):
    loader = SlipstreamLoader(cache, batch_size=6, shuffle=False, seed=0, num_threads=2,
                              progress=False,
                              pipelines={"image": [DecodeCenterCrop(SIZE, return_params=True),
                                                   ToTorchImage()]})
    batch = next(iter(loader))
    _assert_made_by(batch["image"], batch["image_params"], batch["path"], full, SIZE)
    assert not batch["image_params"][:, 4].any()
    plain = SlipstreamLoader(cache, batch_size=6, num_threads=1, progress=False,
                             pipelines={"image": [DecodeCenterCrop(SIZE), ToTorchImage()]})
    assert "image_params" not in next(iter(plain))


def test_params_per_view(cache, full):
    views = {"big": 180, "small": 160}
    loader = SlipstreamLoader(cache, batch_size=6, seed=1, num_threads=2, progress=False,
                              pipelines={"image": [
                                  DecodeMultiRandomResizedCrop(list(views.values()),
                                                               names=list(views),
                                                               return_params=True),
                                  MultiCropPipeline({"small": [ToTorchImage(),
                                                               RandomHorizontalFlip(1.0)],
                                                     "big": [ToTorchImage()]})]})
    batch = next(iter(loader))
    params = batch["image_params"]
    assert set(params) == set(views)
    assert params["small"][:, 4].all() and not params["big"][:, 4].any()
    for name, size in views.items():
        _assert_made_by(batch[name], params[name], batch["path"], full, size)


def test_named_copies_share_the_crop_with_their_own_flips(cache, full):
    loader = SlipstreamLoader(cache, batch_size=6, seed=2, num_threads=2, progress=False,
                              pipelines={"image": [
                                  DecodeRandomResizedCrop(SIZE, return_params=True),
                                  NamedCopies(["a", "b"]),
                                  MultiCropPipeline({"a": [ToTorchImage()],
                                                     "b": [ToTorchImage(),
                                                           RandomHorizontalFlip(1.0)]})]})
    batch = next(iter(loader))
    a, b = batch["image_params"]["a"], batch["image_params"]["b"]
    assert torch.equal(a[:, :4], b[:, :4]) and b[:, 4].all() and not a[:, 4].any()
    _assert_made_by(batch["a"], a, batch["path"], full, SIZE)
    _assert_made_by(batch["b"], b, batch["path"], full, SIZE)
