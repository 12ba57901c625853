"""The pipeline presets, as a user loads them: keys, shapes, dtypes, seeds, distinct views;
and a hand-built multi-view pipeline (NamedCopies + MultiCropPipeline) checked by pixels."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from slipstream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeResizeCrop,
    MultiCropPipeline,
    NamedCopies,
    Normalize,
    SlipstreamDataset,
    SlipstreamLoader,
    ToTorchImage,
)
from slipstream.decoders import ImageColumnView
from slipstream.pipelines import ipcl, lejepa, multicrop, simclr, supervised_train, supervised_val
from slipstream.sample_data import make_image_folder
from slipstream.transforms import BatchContext, RandomZoom

BATCH = 3


def _views(**sizes: int) -> dict[str, tuple[int, int]]:
    return {name: (s, s) for name, s in sizes.items()}


# id -> (preset factory taking seed/device/dtype/normalize, documented views {name: (h, w)})
PRESETS = {
    "supervised_train": (supervised_train, _views(image=224)),
    "supervised_val": (supervised_val, _views(image=224)),
    "simclr": (simclr, _views(view_0=224, view_1=224)),
    "ipcl": (ipcl, _views(**{f"crop_{i}": 224 for i in range(5)})),
    "lejepa": (lejepa, _views(global_0=224, global_1=224,
                              **{f"local_{i}": 98 for i in range(4)})),
    "multicrop": (multicrop, _views(global_0=224, global_1=224,
                                    **{f"local_{i}": 96 for i in range(6)})),
    "multicrop(2,6)": (functools.partial(multicrop, global_crops=2, local_crops=6),
                       _views(global_0=224, global_1=224, **{f"local_{i}": 96 for i in range(6)})),
    "multicrop(1,3,160,64)": (functools.partial(multicrop, 1, 3, size=160, local_size=64),
                              _views(global_0=160, **{f"local_{i}": 64 for i in range(3)})),
}
RANDOM = [p for p in PRESETS if p != "supervised_val"]
MULTI_VIEW = [p for p in PRESETS if len(PRESETS[p][1]) > 1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    root = make_image_folder(tmp_path_factory.mktemp("presets") / "data", num_classes=2,
                             images_per_class=3, size=(48, 64), seed=3)
    return SlipstreamDataset(root, cache_dir=root.parent / "cache").build_cache(progress=False)


@functools.cache
def _load(cache_path: Path, preset: str, loader_seed: int = 0, shuffle: bool = True,
          preset_seed: int | None = None, dtype: torch.dtype = torch.float32,
          normalize: bool = True, fresh: int = 0) -> dict:
    """The first batch (cloned: loader buffers are reused), memoised across tests
    (``fresh`` forces another loader)."""
    from slipstream import Cache

    make, _ = PRESETS[preset]
    pipes = make(seed=preset_seed, device="cpu", dtype=dtype, normalize=normalize)
    loader = SlipstreamLoader(Cache(cache_path), batch_size=BATCH, shuffle=shuffle,
                              seed=loader_seed, pipelines=pipes, num_threads=1, progress=False)
    it = iter(loader)
    try:
        batch = next(it)
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    finally:
        it.close()


def load(cache, preset: str, **kw) -> dict:
    return _load(cache.path, preset, **kw)


def view_items(batch: dict, preset: str):
    return [(name, batch[name]) for name in PRESETS[preset][1]]


def same(a: dict, b: dict, preset: str) -> bool:
    return all(torch.equal(a[n], b[n]) for n in PRESETS[preset][1])


@pytest.mark.parametrize("preset", PRESETS)
def test_keys_shapes_and_default_dtype(cache, preset):
    batch = load(cache, preset)
    views = PRESETS[preset][1]
    assert list(batch) == [*views, "label", "path"]
    for name, (h, w) in views.items():
        v = batch[name]
        assert tuple(v.shape) == (BATCH, 3, h, w), name
        assert v.dtype == torch.float32 and v.device.type == "cpu", name
        # ImageNet-normalised: values leave [0, 1] on both sides
        assert v.min() < -0.5 and v.max() > 1.2, name
    assert batch["label"].dtype == torch.int64 and len(batch["path"]) == BATCH


@pytest.mark.parametrize("preset", PRESETS)
def test_unnormalised_dtypes(cache, preset):
    u8 = load(cache, preset, dtype=torch.uint8, normalize=False)
    f16 = load(cache, preset, dtype=torch.float16, normalize=False)
    f16n = load(cache, preset, dtype=torch.float16, normalize=True)
    for name, (h, w) in PRESETS[preset][1].items():
        assert u8[name].dtype == torch.uint8 and tuple(u8[name].shape) == (BATCH, 3, h, w)
        assert u8[name].max() > 128, name  # the 0..255 scale
        assert f16[name].dtype == torch.float16 and tuple(f16[name].shape) == (BATCH, 3, h, w)
        assert f16[name].device.type == "cpu"
        assert f16[name].min() >= 0 and f16[name].max() <= 1 and f16[name].max() > 0.5, name
        assert f16n[name].dtype == torch.float16 and f16n[name].min() < -0.5, name
        # same crops whatever the dtype: the mean level agrees to a few grey levels (the
        # photometric chains round differently on uint8)
        diff = (f16[name].float() * 255 - u8[name].float()).abs().mean()
        assert diff < 3, (name, float(diff))


def test_val_output_values(cache):
    """No augmentation: float16 is uint8 / 255, float32 is ImageNet-normalised uint8."""
    u8 = load(cache, "supervised_val", dtype=torch.uint8, normalize=False)["image"]
    f16 = load(cache, "supervised_val", dtype=torch.float16, normalize=False)["image"]
    f32 = load(cache, "supervised_val")["image"]
    ref = u8.double() / 255
    torch.testing.assert_close(f16.double(), ref, atol=5e-4, rtol=0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(f32.double(), (ref - mean) / std, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", MULTI_VIEW)
def test_views_are_different_crops(cache, preset):
    batch = load(cache, preset, dtype=torch.uint8, normalize=False)
    for (na, a), (nb, b) in itertools.combinations(view_items(batch, preset), 2):
        if a.shape == b.shape:
            for k in range(BATCH):
                assert not torch.equal(a[k], b[k]), (na, nb, k)
    # the crops themselves differ, not just the augmentations: every view's planned box
    decoder = PRESETS[preset][0](seed=None)["image"][0]
    col = cache.column("image")
    ctx = BatchContext(0, 0, np.arange(len(cache)))
    boxes = decoder.plan(ctx, ImageColumnView(col.heights, col.widths, col.sizes))
    assert len(boxes) == len(PRESETS[preset][1])
    for a, b in itertools.combinations(boxes, 2):
        assert (np.asarray(a) != np.asarray(b)).any(axis=1).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_same_loader_seed_same_batch(cache, preset):
    a = load(cache, preset, loader_seed=11)
    b = load(cache, preset, loader_seed=11, fresh=1)  # another loader
    assert a is not b and same(a, b, preset)
    assert torch.equal(a["label"], b["label"]) and a["path"] == b["path"]
    if preset in RANDOM:  # same samples (no shuffle), another seed: other augmentations
        c = load(cache, preset, loader_seed=11, shuffle=False)
        d = load(cache, preset, loader_seed=12, shuffle=False)
        assert c["path"] == d["path"] and not same(c, d, preset)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_seed_overrides_loader_seed(cache, preset):
    a = load(cache, preset, loader_seed=1, shuffle=False, preset_seed=5)
    b = load(cache, preset, loader_seed=2, shuffle=False, preset_seed=5)
    assert a["path"] == b["path"] and same(a, b, preset)
    if preset in RANDOM:
        c = load(cache, preset, loader_seed=1, shuffle=False, preset_seed=6)
        assert not same(a, c, preset)


@pytest.mark.parametrize("preset", ["supervised_val", "simclr"])
def test_normalising_to_an_integer_dtype_is_refused(cache, preset):
    with pytest.raises(ValueError, match="floating type"):
        load(cache, preset, dtype=torch.uint8, normalize=True)


def test_multicrop_default_is_two_plus_six():
    assert repr(multicrop()) == repr(multicrop(global_crops=2, local_crops=6))


# --- NamedCopies + MultiCropPipeline after a single-view decoder ------------------------


def _bilinear_zoom(img: np.ndarray, z: float, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """Independent reference: ``[H, W, C]`` float64, output pixel ``j`` samples the input at
    ``((c - z/2) + z (j + 0.5) / N) N - 0.5`` (half-pixel centres), bilinear, clamped to
    the image edge. For ``z = 0.5`` this is the central half upsampled 2x."""
    h, w = img.shape[:2]

    def axis(n: int, c: float):
        src = ((c - z / 2) + z * (np.arange(n) + 0.5) / n) * n - 0.5
        src = np.clip(src, 0, n - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(h, cy)
    x0, x1, fx = axis(w, cx)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def test_named_copies_and_multicrop_after_decode_resize_crop(tmp_path):
    root = make_image_folder(tmp_path / "data", num_classes=2, images_per_class=2,
                             size=(96, 128), seed=4)
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)

    def first_batch(pipelines):
        it = iter(SlipstreamLoader(cache, batch_size=4, seed=0, pipelines=pipelines,
                                   num_threads=1, progress=False))
        try:
            return {k: v.clone() if isinstance(v, torch.Tensor) else v
                    for k, v in next(it).items()}
        finally:
            it.close()

    # the example from the docs, verbatim (CPU)
    batch = first_batch({"image": [
        DecodeResizeCrop(resize_size=256, crop_size=224),
        NamedCopies(["view1", "view2"]),
        MultiCropPipeline({
            "view1": [ToTorchImage(), RandomZoom(p=1.0, zoom=(1.0, 1.0), x=0.5, y=0.5),
                      Normalize(IMAGENET_MEAN, IMAGENET_STD)],
            "view2": [ToTorchImage(), RandomZoom(p=1.0, zoom=(0.5, 0.5), x=0.5, y=0.5),
                      Normalize(IMAGENET_MEAN, IMAGENET_STD)],
        }),
    ]})
    crops = first_batch({"image": [DecodeResizeCrop(resize_size=256, crop_size=224)]})
    assert list(batch) == ["view1", "view2", "label", "path"]
    assert batch["path"] == crops["path"]
    for name in ("view1", "view2"):
        v = batch[name]
        assert tuple(v.shape) == (4, 3, 224, 224) and v.dtype == torch.float32
        assert v.device.type == "cpu"

    mean = np.asarray(IMAGENET_MEAN).reshape(1, 1, 3)
    std = np.asarray(IMAGENET_STD).reshape(1, 1, 3)
    # uint8 level -> normalised units, per channel
    step = 1 / (255 * std.reshape(3, 1, 1))
    for k in range(4):
        crop = crops["image"][k].numpy().astype(np.float64)  # [224, 224, 3] uint8 levels
        # view1: the unzoomed crop, normalised (zoom 1 is the exact identity)
        ref1 = ((crop / 255 - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(batch["view1"][k].numpy(), ref1, atol=1e-5, rtol=0)
        # view2: the central half magnified 2x. RandomZoom rounds its uint8 output once,
        # so each value is within half a grey level of the exact bilinear value (plus
        # float32 rounding in the sampling grid: 0.01 level)
        ref2 = ((_bilinear_zoom(crop, 0.5) / 255 - mean) / std).transpose(2, 0, 1)
        err = np.abs(batch["view2"][k].numpy() - ref2)
        assert (err <= 0.51 * step + 1e-5).all(), float((err / step).max())
        assert err.mean() < 0.3 * step.mean()
        # and it is not the unzoomed crop
        assert np.abs(batch["view2"][k].numpy() - ref1).mean() > 5 * step.mean()
