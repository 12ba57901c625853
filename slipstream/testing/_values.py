"""Comparing sample values as the source contract and the cache define them."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..schema import Field, FieldKind, RawImage

__all__ = [
    "canonical_json",
    "kind_mismatch",
    "same_value",
    "sample_mismatch",
    "cached_form",
]


def canonical_json(value: Any) -> str:
    """``value`` serialised as the content key does it (raises TypeError or ValueError)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def kind_mismatch(kind: FieldKind, value: Any) -> str | None:
    """Why ``value`` is not a valid value of ``kind``, or ``None`` if it is."""
    if kind is FieldKind.IMAGE:
        ok = isinstance(value, (bytes, RawImage))
        want = "bytes (encoded image) or slipstream.schema.RawImage"
    elif kind is FieldKind.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a Python int (not bool, not a numpy integer)"
    elif kind is FieldKind.FLOAT:
        ok = isinstance(value, float)
        want = "a Python float"
    elif kind is FieldKind.STR:
        ok = isinstance(value, str)
        want = "str"
    elif kind is FieldKind.BYTES:
        ok = isinstance(value, bytes)
        want = "bytes"
    else:  # a FieldKind added later that this kit does not know yet
        return f"field kind {kind!r} is unknown to slipstream.testing"
    if ok:
        return None
    return f"expected {want} for field kind {kind.value!r}, got {type(value).__name__}"


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats floats bit for bit (NaN, -0.0) and compares RawImage pixels."""
    if isinstance(a, RawImage) or isinstance(b, RawImage):
        return (
            isinstance(a, RawImage)
            and isinstance(b, RawImage)
            and a.pixels.shape == b.pixels.shape
            and bool(np.array_equal(a.pixels, b.pixels))
        )
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (
            math.isnan(a) and math.isnan(b)
        )
    return type(a) is type(b) and bool(a == b)


def sample_mismatch(got: Mapping[str, Any], want: Mapping[str, Any]) -> str | None:
    """A description of how two samples differ, or ``None`` if they are equal."""
    if set(got) != set(want):
        return f"fields {sorted(got)} != expected {sorted(want)}"
    for name in want:
        if not same_value(got[name], want[name]):
            return f"field {name!r}: got {_short(got[name])}, expected {_short(want[name])}"
    return None


def cached_form(field: Field, value: Any) -> Any:
    """What ``Cache[i][field]`` must return for a source value: the same value, byte for byte.

    Images and bytes come back as ``bytes`` (a :class:`RawImage` as its row-major
    pixels), strings as ``str``, ints as ``int`` and floats as ``float``.
    """
    if field.kind is FieldKind.IMAGE:
        return value.pixels.tobytes() if isinstance(value, RawImage) else bytes(value)
    if field.kind is FieldKind.BYTES:
        return bytes(value)
    return value


def _short(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        head = bytes(value[:12]).hex()
        return f"<{len(value)} bytes {head}…>"
    if isinstance(value, RawImage):
        return f"<RawImage {value.pixels.shape}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
