"""The exceptions slipstream raises.

Every error subclasses :class:`SlipstreamError` and, where one fits, the matching
builtin (``FileNotFoundError``, ``ValueError``), so callers can catch either.
Messages name the input, what was expected, and the fix.
"""

from __future__ import annotations

__all__ = [
    "SlipstreamError",
    "PluginError",
    "ConfigurationError",
    "SourceNotFoundError",
    "SourceDetectionError",
    "UnsafeArchiveError",
    "SampleError",
    "CacheError",
    "CacheNotFoundError",
    "CacheFormatError",
    "CacheCorruptError",
    "CacheWriteError",
    "CacheRootError",
    "CachePermissionError",
    "UrlError",
    "MissingDependencyError",
    "UnknownStoreError",
    "RemoteStoreError",
    "RemoteObjectNotFoundError",
    "RemoteAccessError",
    "RemoteTimeoutError",
    "RemoteCacheWarning",
    "UnknownPipelineError",
    "InvalidArgumentError",
    "PipelineError",
    "UsageError",
    "DeadlineExceeded",
    "JpegDecodeError",
    "KernelDecodeError",
]


class SlipstreamError(Exception):
    """Base class of every error slipstream raises on purpose."""


class PluginError(SlipstreamError):
    """A plugin is broken: it failed to import, or returned something that breaks the contract."""


class ConfigurationError(SlipstreamError, ValueError):
    """A setting (an argument or an environment variable) has a value slipstream cannot
    use; the message names the setting, the value and what is expected."""


class UnknownStoreError(SlipstreamError, ValueError):
    """No registered cache store serves the URL's protocol."""


class UnknownPipelineError(SlipstreamError, ValueError):
    """The pipeline name is not one of the presets (the message lists them)."""


class SourceNotFoundError(SlipstreamError, FileNotFoundError):
    """The dataset location does not exist or cannot be listed."""


class SourceDetectionError(SlipstreamError, ValueError):
    """No registered source recognises the input (the message lists what was tried)."""


class UnsafeArchiveError(SlipstreamError, ValueError):
    """An archive member would escape its target (``..``, absolute path, link or device)."""


class SampleError(SlipstreamError, ValueError):
    """One sample could not be read or understood; the message names the sample and its source."""

    def __init__(self, message: str, *, index: int | None = None, path: str | None = None):
        super().__init__(message)
        self.index = index
        self.path = path


class CacheError(SlipstreamError):
    """Base class of cache errors."""


class CacheNotFoundError(CacheError, FileNotFoundError):
    """No complete cache exists at the location."""


class CacheFormatError(CacheError, ValueError):
    """The cache was written in a format version this slipstream cannot read."""


class CacheCorruptError(CacheError):
    """A cache file does not match its recorded size or checksum."""


class CacheWriteError(CacheError, OSError):
    """Writing a cache failed for want of room (disk full, quota, file size limit); the
    partial write was removed and nothing was published. ``errno`` is the OS's."""


class CacheRootError(CacheError, OSError):
    """The cache directory cannot hold caches: it is a file, or this user cannot write it."""


class CachePermissionError(CacheError, PermissionError):
    """This user may not read a cache file: a permissions problem, not damage."""


class UrlError(SlipstreamError, ValueError):
    """A URL slipstream cannot use: an unknown protocol, or credentials where they are
    never read (``s3://KEY:SECRET@bucket``)."""


class MissingDependencyError(SlipstreamError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""


class RemoteStoreError(CacheError, ConnectionError):
    """A remote store could not be read or written (after retrying transient failures).

    The message is one line: what failed, on which object (a URL without credentials),
    and what to do. The subclasses below say why, for callers that act on it."""


class RemoteObjectNotFoundError(RemoteStoreError, FileNotFoundError):
    """The object (or the bucket holding it: then ``bucket_missing``) does not exist."""

    def __init__(self, message: str, *, bucket_missing: bool = False) -> None:
        super().__init__(message)
        self.bucket_missing = bucket_missing


class RemoteAccessError(RemoteStoreError, PermissionError):
    """The store refused the credentials, or they do not allow the operation."""


class RemoteTimeoutError(RemoteStoreError, TimeoutError):
    """A remote operation did not finish within its deadline
    (:attr:`slipstream.stores.RetryPolicy.deadline`)."""


class RemoteCacheWarning(UserWarning):
    """A cache was built and is usable locally, but sharing it failed (it is retried)."""
class InvalidArgumentError(SlipstreamError, ValueError):
    """An argument (or a saved state) is out of range or malformed; the message names it."""


class PipelineError(SlipstreamError, TypeError):
    """A pipeline stage does not follow the stage contract (``stage(value, ctx)``)."""


class UsageError(SlipstreamError, ValueError):
    """A command-line argument that cannot be used (printed as one line, exit status 2)."""


class DeadlineExceeded(TimeoutError):
    """An operation ran out of its total time (attempts and pauses together); the store
    layer turns it into a :class:`RemoteTimeoutError` naming the object."""


class JpegDecodeError(ValueError):
    """libjpeg-turbo refused the data (corrupt, truncated or not a JPEG); the loader raises
    it as a :class:`SampleError` naming the sample."""


class KernelDecodeError(ValueError):
    """The native decode kernel refused one sample: its bytes are damaged, truncated, not
    what the cache table says, or of a kind it does not decode. ``code`` is the kernel's
    result code (``slipstream.decode.kernel.ERROR_NAMES``); the loader raises it as a
    :class:`SampleError` naming the sample."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
