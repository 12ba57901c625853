"""The cache: a Zarr v3 group per dataset, named by a content key.

``layout`` defines the format, ``builder`` writes it, ``reader`` opens it.
"""

from .arrays import ByteHeap
from .builder import build_cache, cache_key_for
from .index import FieldIndex, write_index
from .key import content_key
from .layout import FORMAT_VERSION, Codec
from .reader import Cache, HeapColumn, ImageColumn
from .verify import VerifyReport, verify_cache

__all__ = [
    "FORMAT_VERSION",
    "ByteHeap",
    "Cache",
    "Codec",
    "FieldIndex",
    "HeapColumn",
    "ImageColumn",
    "VerifyReport",
    "build_cache",
    "cache_key_for",
    "content_key",
    "verify_cache",
    "write_index",
]
