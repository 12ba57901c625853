"""Counter-based random numbers keyed by (seed, epoch, sample index, view, stream).

The same sample gets the same augmentation whatever batch, thread, rank or world size
it lands in, because every draw is a pure function of its key: a SplitMix64 hash of
the key words, computed for a whole batch at once with numpy.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["uniforms", "stream_id", "stream_key"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK53 = np.uint64((1 << 53) - 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective 64-bit avalanche."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def stream_id(name: str) -> int:
    """A stable number for a named random stream ("crop", "flip", ...)."""
    return zlib.crc32(name.encode())


def _mix_int(x: int) -> int:
    """:func:`_mix` of one Python int (64-bit wrap-around)."""
    mask = 0xFFFFFFFFFFFFFFFF
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & mask
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def stream_key(seed: int, epoch: int, view: int, stream: int) -> int:
    """The 64-bit key of one random stream of one epoch; a sample's draws hash it with the
    sample's index (the native crop planner takes it as is)."""
    mask = 0xFFFFFFFFFFFFFFFF
    h = seed & mask
    for word in (epoch, view, stream):
        h = _mix_int(h ^ (((word & mask) + int(_GOLDEN)) & mask))
    return h


def uniforms(
    seed: int, epoch: int, indices: np.ndarray, view: int, stream: int, draws: int
) -> np.ndarray:
    """``float64`` uniforms in [0, 1), shape ``(len(indices), draws)``.

    Entry ``[k, d]`` depends only on ``(seed, epoch, indices[k], view, stream, d)``.
    """
    with np.errstate(over="ignore"):
        h = np.uint64(stream_key(seed, epoch, view, stream))
        keys = _mix(h ^ (np.asarray(indices, dtype=np.uint64) * _GOLDEN + _GOLDEN))
        counters = np.arange(1, draws + 1, dtype=np.uint64) * _GOLDEN
        bits = _mix(keys[:, None] ^ counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
