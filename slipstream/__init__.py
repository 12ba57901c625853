"""slipstream: feed PyTorch vision training as fast as the hardware allows."""

from .cache import Cache, FieldIndex, build_cache, verify_cache, write_index
from .dataset import SlipstreamDataset
from .errors import (
    CacheCorruptError,
    CacheError,
    CacheFormatError,
    CacheNotFoundError,
    MissingDependencyError,
    PluginError,
    SampleError,
    SlipstreamError,
    SourceDetectionError,
    SourceNotFoundError,
    UnsafeArchiveError,
)
from .schema import Field, FieldKind, RawImage
from .sources import Source

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CacheCorruptError",
    "CacheError",
    "CacheFormatError",
    "CacheNotFoundError",
    "Field",
    "FieldIndex",
    "FieldKind",
    "MissingDependencyError",
    "PluginError",
    "RawImage",
    "SampleError",
    "SlipstreamDataset",
    "SlipstreamError",
    "Source",
    "SourceDetectionError",
    "SourceNotFoundError",
    "UnsafeArchiveError",
    "__version__",
    "build_cache",
    "verify_cache",
    "write_index",
]
