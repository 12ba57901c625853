"""A dataset or cache location: a URL resolved to an fsspec filesystem and path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

from ._redact import has_userinfo, redact_url
from .errors import MissingDependencyError, UrlError

__all__ = ["Location", "redact_url"]

# fsspec protocol -> the slipstream extra that installs its implementation
_EXTRA_FOR_PROTOCOL = {"s3": "s3", "s3a": "s3", "hf": "hf", "gs": "gcs", "gcs": "gcs", "az": "azure",
                       "abfs": "azure", "abfss": "azure"}

#: Protocols whose filesystems never read credentials from the URL: ``user:pass@`` there
#: would be taken as part of the bucket name (and printed back in the error).
_NO_URL_CREDENTIALS = frozenset(("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf"))


def _check_url_part(part: str, url: str) -> None:
    """Refuse one ``protocol://...`` part of ``url`` that fsspec cannot open or that carries
    credentials its filesystem never reads."""
    if "://" not in part:
        return
    protocol = part.split("://", 1)[0].lower()
    if protocol not in fsspec.available_protocols() and protocol not in fsspec.registry:
        raise UrlError(
            f"{redact_url(url)!r}: unknown protocol {protocol!r}; slipstream reads local "
            f"paths and the URLs fsspec knows (s3://, gs://, hf://, https://, ...; "
            f"`python -c 'import fsspec; print(fsspec.available_protocols())'` lists them)")
    if protocol in _NO_URL_CREDENTIALS and has_userinfo(part):
        raise UrlError(
            f"{redact_url(url)!r}: credentials inside a {protocol}:// URL are not used (they "
            f"would be read as part of the bucket name). Remove them from the URL and pass "
            f"them as storage options (key=..., secret=...; --storage-option on the command "
            f"line), or through the environment or a profile")


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
        for part in str(url).split("::"):  # chained URLs: simplecache::s3://...
            _check_url_part(part, str(url))
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

    def __repr__(self) -> str:
        return f"Location({self.describe()!r})"
