"""slipstream: feed PyTorch vision training as fast as the hardware allows."""

from .cache import Cache, FieldIndex, verify_cache
from .caching import build_cache, open_cache, write_index
from .dataset import SlipstreamDataset
from .decoders import (
    DecodeCenterCrop,
    DecodeMultiRandomResizedCrop,
    DecodeOnly,
    DecodeRandomResizedCrop,
    DecodeResizeCrop,
    ReadBytes,
)
from .errors import (
    CacheCorruptError,
    CacheError,
    CacheFormatError,
    CacheNotFoundError,
    CacheWriteError,
    InvalidArgumentError,
    MissingDependencyError,
    PipelineError,
    PluginError,
    RemoteStoreError,
    SampleError,
    SlipstreamError,
    SourceDetectionError,
    SourceNotFoundError,
    UnsafeArchiveError,
)
from .loader import SlipstreamLoader
from .schema import Field, FieldKind, RawImage
from .sources import Source
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lambda,
    Normalize,
    RandomHorizontalFlip,
    ToTorchImage,
)
from .transforms.multiview import MultiCropPipeline, NamedCopies

__version__ = "0.1.0"

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DecodeCenterCrop",
    "DecodeMultiRandomResizedCrop",
    "DecodeOnly",
    "DecodeRandomResizedCrop",
    "DecodeResizeCrop",
    "MultiCropPipeline",
    "NamedCopies",
    "Normalize",
    "RandomHorizontalFlip",
    "ReadBytes",
    "SlipstreamLoader",
    "ToTorchImage",
    "Cache",
    "CacheCorruptError",
    "CacheError",
    "CacheFormatError",
    "CacheNotFoundError",
    "CacheWriteError",
    "Field",
    "FieldIndex",
    "FieldKind",
    "InvalidArgumentError",
    "Lambda",
    "MissingDependencyError",
    "PipelineError",
    "PluginError",
    "RawImage",
    "RemoteStoreError",
    "SampleError",
    "SlipstreamDataset",
    "SlipstreamError",
    "Source",
    "SourceDetectionError",
    "SourceNotFoundError",
    "UnsafeArchiveError",
    "__version__",
    "build_cache",
    "open_cache",
    "verify_cache",
    "write_index",
]
