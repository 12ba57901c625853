"""Field schemas: what a source's samples hold and how the cache stores each field."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

__all__ = ["FieldKind", "Field", "RawImage", "Sample", "SampleValue"]


class FieldKind(str, enum.Enum):
    """How a field's values are represented."""

    IMAGE = "image"  #: encoded image bytes (JPEG, PNG, ...) or a :class:`RawImage`
    INT = "int"  #: a Python int, stored as int64
    FLOAT = "float"  #: a Python float, stored as float64
    STR = "str"  #: a text string, stored UTF-8 encoded in a byte heap
    BYTES = "bytes"  #: opaque bytes, stored in a byte heap


@dataclass(frozen=True)
class Field:
    """One named field of a source's samples."""

    name: str
    kind: FieldKind

    def __post_init__(self) -> None:
        if not _FIELD_NAME.fullmatch(self.name) or self.name == "zarr.json":
            raise ValueError(
                f"field name {self.name!r} is not allowed: use letters, digits, '_', '-' and '.', "
                f"starting with a letter or digit (it names a directory in the cache)"
            )
        if not isinstance(self.kind, FieldKind):
            object.__setattr__(self, "kind", FieldKind(self.kind))

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        return cls(name=str(data["name"]), kind=FieldKind(data["kind"]))


@dataclass(frozen=True)
class RawImage:
    """Decoded pixels, for sources that store images unencoded (FFCV's raw mode, say).

    ``pixels`` is ``uint8`` with shape ``(height, width, 3)`` in RGB order.
    """

    pixels: np.ndarray

    def __post_init__(self) -> None:
        p = self.pixels
        if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3:
            raise ValueError(
                f"RawImage expects uint8 pixels shaped (height, width, 3), got {p.dtype} {p.shape}"
            )


SampleValue = Union[bytes, int, float, str, RawImage]
#: One sample: field name to value.
Sample = dict[str, SampleValue]
