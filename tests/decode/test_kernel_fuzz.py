"""Fuzzing the native decode kernel with damaged real JPEGs and random YUV planes.

Every example mutates a real JPEG (baseline 4:2:0, 4:4:4, grayscale, progressive, with
restart markers): truncation, flipped bytes, inserted or deleted runs, and lies in the
SOF dimensions; it is decoded with a random plan (crop boxes inside the size the cache
would store, a DCT scale, output sizes, region or whole-image mode, fast or accurate).
The only outcome allowed besides success is :class:`KernelDecodeError`; a crash, a
hang or another exception fails. Under ``nox -s sanitize`` the same tests run against
an AddressSanitizer + UBSan build, where any out-of-bounds access aborts the process.

CI runs 200 derandomized examples per test; ``SLIPSTREAM_FUZZ_EXAMPLES=N`` runs N fresh
random ones.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipstream.cache import Codec
from slipstream.decode.kernel import KernelDecodeError, decode_sample
from slipstream.decode.yuv import yuv420_size
from slipstream.sample_data import natural_image

from ..helpers import encode

_ENV_EXAMPLES = os.environ.get("SLIPSTREAM_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_ENV_EXAMPLES) if _ENV_EXAMPLES else 200,
    derandomize=not _ENV_EXAMPLES,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _corpus() -> list[tuple[bytes, int, int]]:
    rng = np.random.default_rng(11)
    out = []
    for h, w in [(61, 83), (120, 160)]:
        img = natural_image(rng, h, w)
        out.append((encode(img, "JPEG", quality=85), h, w))
        out.append((encode(img, "JPEG", quality=85, subsampling=0), h, w))
        out.append((encode(img[..., 0].copy(), "JPEG", quality=85), h, w))
        out.append((encode(img, "JPEG", quality=80, progressive=True), h, w))
        out.append((encode(img, "JPEG", quality=80, restart_marker_blocks=2), h, w))
    return out


CORPUS = _corpus()


@st.composite
def mutated_jpeg(draw) -> tuple[bytes, int, int]:
    """A corpus JPEG, damaged, with the height and width a cache would have stored."""
    raw, h, w = draw(st.sampled_from(CORPUS))
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "sof"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:  # lie in the SOF: height, width, precision or sampling factors
            sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
            if sof >= 0 and sof + 12 < len(data):
                field = draw(st.sampled_from([(5, 2), (7, 2), (4, 1), (11, 1), (1, 1)]))
                value = draw(st.integers(0, 256 ** field[1] - 1))
                data[sof + field[0] : sof + field[0] + field[1]] = value.to_bytes(field[1], "big")
    return bytes(data), h, w


@st.composite
def plan(draw, h: int, w: int) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    boxes, sizes = [], []
    for _ in range(draw(st.integers(1, 3))):
        bh, bw = draw(st.integers(1, h)), draw(st.integers(1, w))
        boxes.append((draw(st.integers(0, h - bh)), draw(st.integers(0, w - bw)), bh, bw))
        sizes.append((draw(st.integers(1, 48)), draw(st.integers(1, 48))))
    return boxes, sizes


@FUZZ
@given(st.data())
def test_damaged_jpegs_only_raise_kernel_errors(data):
    raw, h, w = data.draw(mutated_jpeg())
    boxes, sizes = data.draw(plan(h, w))
    denom = data.draw(st.sampled_from([1, 2, 4, 8]))
    outs = [np.empty((oh, ow, 3), np.uint8) for oh, ow in sizes]
    try:
        decode_sample(np.frombuffer(raw, np.uint8), Codec.JPEG, h, w, boxes, denom, outs,
                      region=data.draw(st.booleans()), fast=data.draw(st.booleans()))
    except KernelDecodeError:
        pass


@FUZZ
@given(st.data())
def test_random_yuv420_planes_only_raise_kernel_errors(data):
    h, w = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    size = yuv420_size(h, w) + data.draw(st.sampled_from([0, 0, 0, -1, 1, -7]))
    planes = np.frombuffer(data.draw(st.binary(min_size=max(0, size), max_size=max(0, size))),
                           np.uint8)
    boxes, sizes = data.draw(plan(h, w))
    outs = [np.empty((oh, ow, 3), np.uint8) for oh, ow in sizes]
    try:
        decode_sample(planes, Codec.YUV420, h, w, boxes, 1, outs)
    except KernelDecodeError as exc:
        assert size != yuv420_size(h, w), exc


@pytest.mark.parametrize("raw,h,w", CORPUS[:3])
def test_the_undamaged_corpus_decodes(raw, h, w):
    """The fuzzers start from JPEGs the kernel decodes (so damage is what they test)."""
    out = np.empty((32, 32, 3), np.uint8)
    decode_sample(np.frombuffer(raw, np.uint8), Codec.JPEG, h, w, [(0, 0, h, w)], 1, [out])
