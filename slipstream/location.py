"""A dataset or cache location: a URL resolved to an fsspec filesystem and path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

from .errors import MissingDependencyError

__all__ = ["Location", "redact_url"]

# fsspec protocol -> the slipstream extra that installs its implementation
_EXTRA_FOR_PROTOCOL = {"s3": "s3", "s3a": "s3", "hf": "hf", "gs": "gcs", "gcs": "gcs", "az": "azure",
                       "abfs": "azure", "abfss": "azure"}

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def redact_url(url: str) -> str:
    """Drop credentials embedded in a URL (``s3://KEY:SECRET@bucket``) before it is shown."""
    return _USERINFO.sub(r"\1***@", url)


@dataclass
class Location:
    """A URL (or local path) with the filesystem that reads it.

    ``storage_options`` are passed to fsspec (credentials, ``endpoint_url``, ``profile``);
    they never appear in :meth:`describe` or in error messages.
    """

    url: str
    fs: AbstractFileSystem
    path: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> Location:
        options = dict(storage_options or {})
        try:
            fs, path = fsspec.core.url_to_fs(str(url), **options)
        except ImportError as exc:
            protocol = str(url).split("://", 1)[0]
            extra = _EXTRA_FOR_PROTOCOL.get(protocol)
            how = (f"pip install 'slipstream[{extra}]'" if extra else
                   "install the package that fsspec asks for")
            raise MissingDependencyError(
                f"reading {redact_url(str(url))!r} needs the fsspec implementation for "
                f"{protocol!r}: {how}  ({exc})"
            ) from exc
        return cls(url=str(url), fs=fs, path=path, storage_options=options)

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p[0] if isinstance(p, (tuple, list)) else p

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    @property
    def basename(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def child(self, relpath: str) -> str:
        """The filesystem path of ``relpath`` below this location."""
        return self.path.rstrip("/") + "/" + relpath.lstrip("/")

    def describe(self) -> str:
        """The location for messages and cache metadata: absolute if local, no credentials."""
        return self.path if self.is_local else redact_url(self.url)
