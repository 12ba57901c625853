"""The cache: a Zarr v3 group per dataset, named by a content key.

``layout`` defines the format, ``builder`` writes it, ``reader`` opens it.
"""

from .arrays import ByteHeap
from .builder import cache_key_for, write_cache
from .index import FieldIndex, write_index
from .key import content_key
from .layout import FORMAT_VERSION, Codec
from .reader import Cache, HeapColumn, ImageColumn
from .verify import VerifyReport, verify_cache
from .workspace import CacheWorkspace

__all__ = [
    "FORMAT_VERSION",
    "ByteHeap",
    "Cache",
    "CacheWorkspace",
    "Codec",
    "FieldIndex",
    "HeapColumn",
    "ImageColumn",
    "VerifyReport",
    "cache_key_for",
    "content_key",
    "verify_cache",
    "write_cache",
    "write_index",
]
