"""The native crop planner (``_plan.c``) against the numpy reference it replaces in the
loader: the same random streams must give the same boxes and plans, sample for sample
(the determinism promise: a sample's crop is a function of seed, epoch, index and view)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipstream._rng import stream_id, stream_key, uniforms
from slipstream.decode import kernel
from slipstream.decode.geometry import ATTEMPTS, plan_crops, random_resized_crop_boxes
from slipstream.decoders import DecodeRandomResizedCrop, ImageColumnView
from slipstream.transforms.base import BatchContext

from .test_kernel_fuzz import FUZZ

STREAM = stream_id("random_resized_crop")


def _sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Image sizes from 1 pixel to 4000, common photo shapes and extreme aspects."""
    h = rng.integers(1, 4000, n)
    w = rng.integers(1, 4000, n)
    h[: n // 8] = 375
    w[: n // 8] = 500
    h[n // 8 : n // 4] = rng.integers(1, 8, n // 4 - n // 8)  # tiny
    w[n // 4 : 3 * n // 8] = h[n // 4 : 3 * n // 8] * 9  # far wider than any ratio
    return h.astype(np.uint32), w.astype(np.uint32)


def _reference(seed, epoch, view, indices, H, W, scale, ratio):
    u = uniforms(seed, epoch, indices, view, STREAM, 4 * ATTEMPTS)
    return random_resized_crop_boxes(H, W, u, scale, ratio)


@pytest.mark.parametrize("scale,ratio", [
    ((0.08, 1.0), (3 / 4, 4 / 3)),
    ((0.25, 1.0), (3 / 4, 4 / 3)),
    ((0.05, 0.4), (3 / 4, 4 / 3)),
    ((1.0, 1.0), (2.0, 3.0)),       # nothing fits: every sample falls back
    ((0.01, 0.05), (0.2, 5.0)),
])
@pytest.mark.parametrize("seed,epoch,view", [(0, 0, 0), (1234, 7, 1), (-5, 2**40, 3)])
def test_native_boxes_equal_the_numpy_reference(scale, ratio, seed, epoch, view):
    rng = np.random.default_rng(abs(seed) + epoch % 97 + view)
    n = 4000
    H, W = _sizes(rng, n)
    indices = rng.integers(0, 2**40, n)
    want = _reference(seed, epoch, view, indices, H, W, scale, ratio)
    key = stream_key(seed, epoch, view, STREAM)
    got = kernel.random_resized_crops(key, indices, H, W, scale, ratio)
    assert got.dtype == np.int64 and got.shape == (n, 4)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert not len(bad), [(int(H[k]), int(W[k]), got[k].tolist(), want[k].tolist())
                          for k in bad[:5]]
    # the loader's way: whole columns, read at each sample's index
    order = rng.permutation(n)
    column_h, column_w = np.empty_like(H), np.empty_like(W)
    column_h[order], column_w[order] = H, W  # sample k's image is row order[k]
    by_index = kernel.random_resized_crops(key, order, column_h, column_w, scale, ratio,
                                           by_index=True)
    want_by_index = _reference(seed, epoch, view, order, H, W, scale, ratio)
    assert np.array_equal(by_index, want_by_index)


@pytest.mark.parametrize("out", [(224, 224), (96, 96), (160, 128)])
def test_native_plan_equals_plan_crops(out):
    rng = np.random.default_rng(11)
    n = 3000
    H, W = _sizes(rng, n)
    indices = np.arange(n, dtype=np.int64)
    key = stream_key(3, 1, 0, STREAM)
    boxes = kernel.random_resized_crops(key, indices, H, W, (0.08, 1.0), (3 / 4, 4 / 3))
    want = plan_crops(boxes, H, W, *out)
    got = kernel.random_resized_crops(key, indices, H, W, (0.08, 1.0), (3 / 4, 4 / 3), out)
    assert np.array_equal(got.boxes, want.boxes)
    assert np.array_equal(got.denoms, want.denoms)
    assert set(got.denoms.tolist()) >= {1, 2, 4}  # the grid of every scale was exercised


def test_decoder_plan_is_its_boxes_planned():
    """The loader's path (``plan``: one native call) and the multi-crop path (``boxes``
    then ``plan_crops``) agree."""
    rng = np.random.default_rng(2)
    H, W = _sizes(rng, 500)
    col = ImageColumnView(H, W, np.zeros(500, np.uint8))
    ctx = BatchContext(9, 4, rng.permutation(500))
    for seed in (None, 77):
        dec = DecodeRandomResizedCrop(192, seed=seed)
        plan = dec.plan(ctx, col)
        want = plan_crops(dec.boxes(ctx, H[ctx.indices], W[ctx.indices]),
                          H[ctx.indices], W[ctx.indices], 192, 192)
        assert np.array_equal(plan.boxes, want.boxes)
        assert np.array_equal(plan.denoms, want.denoms)
        ref = _reference(9 if seed is None else seed, 4, 0, ctx.indices, H[ctx.indices],
                         W[ctx.indices], (0.08, 1.0), (3 / 4, 4 / 3))
        assert np.array_equal(dec.boxes(ctx, H[ctx.indices], W[ctx.indices]), ref)


def test_stream_key_matches_uniforms():
    """``stream_key`` is the key ``uniforms`` hashes each index with (the native planner
    starts from it): SplitMix64 written out here in Python ints, from the key alone,
    gives numpy's draws bit for bit."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    idx = [0, 1, 2**33, 123456789]
    for seed, epoch, view in [(5, 6, 1), (-1, 0, 0), (2**70 + 3, 9, 2)]:
        key = stream_key(seed, epoch, view, STREAM)
        want = [[(mix(mix(key ^ ((i * golden + golden) & mask)) ^ ((d + 1) * golden & mask))
                  >> 11) / 2**53 for d in range(4)] for i in idx]
        got = uniforms(seed, epoch, np.array(idx, np.int64), view, STREAM, 4)
        assert got.tolist() == want
    assert stream_key(5, 6, 1, STREAM) != stream_key(5, 6, 1, STREAM + 1)


def test_planner_refuses_mismatched_arrays():
    key = stream_key(0, 0, 0, STREAM)
    with pytest.raises(ValueError, match="plan_rrc"):
        kernel.load().plan_rrc(key, np.zeros(3, np.int64), np.ones(2, np.uint32),
                               np.ones(3, np.uint32), False, 0.08, 0.92, -0.28, 0.57, 0.75,
                               1.33, 224, 224, np.empty((3, 4), np.int64), None)
    with pytest.raises(IndexError, match="index 5 out of range for 5 images"):
        kernel.random_resized_crops(key, np.array([0, 5]), np.ones(5, np.uint32),
                                    np.ones(5, np.uint32), (0.08, 1.0), (0.75, 1.33),
                                    by_index=True)


@FUZZ
@given(sizes=st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)),
                      min_size=1, max_size=40),
       lo=st.floats(1e-4, 1.0), span=st.floats(0.0, 1.0),
       r_lo=st.floats(1e-3, 1e3), r_factor=st.floats(1.0, 1e3),
       out=st.tuples(st.integers(1, 4096), st.integers(1, 4096)),
       seed=st.integers(-2**63, 2**64 - 1), epoch=st.integers(0, 2**40))
def test_planner_fuzz_equals_reference_and_stays_inside(sizes, lo, span, r_lo, r_factor, out,
                                                        seed, epoch):
    """Any image sizes (up to 2^32 - 1 a side, as a cache may claim), any valid scale and
    ratio: the native boxes equal numpy's, lie inside the image, and their plan stays on
    the image too (the sanitizer session runs this against the ASan/UBSan build)."""
    H = np.array([h for h, _ in sizes], np.uint32)
    W = np.array([w for _, w in sizes], np.uint32)
    scale = (lo, min(1.0, lo + span))
    ratio = (r_lo, r_lo * r_factor)
    indices = np.arange(len(sizes), dtype=np.int64) * 7919
    key = stream_key(seed, epoch, 0, STREAM)
    got = kernel.random_resized_crops(key, indices, H, W, scale, ratio)
    with np.errstate(over="ignore"):
        want = _reference(seed, epoch, 0, indices, H, W, scale, ratio)
    assert np.array_equal(got, want)
    plan = kernel.random_resized_crops(key, indices, H, W, scale, ratio, out)
    top, left, h, w = plan.boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    assert set(plan.denoms.tolist()) <= {1, 2, 4, 8}
