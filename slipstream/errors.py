"""The exceptions slipstream raises.

Every error subclasses :class:`SlipstreamError` and, where one fits, the matching
builtin (``FileNotFoundError``, ``ValueError``), so callers can catch either.
Messages name the input, what was expected, and the fix.
"""

from __future__ import annotations

__all__ = [
    "SlipstreamError",
    "PluginError",
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
]


class SlipstreamError(Exception):
    """Base class of every error slipstream raises on purpose."""


class PluginError(SlipstreamError):
    """A plugin is broken: it failed to import, or returned something that breaks the contract."""


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
