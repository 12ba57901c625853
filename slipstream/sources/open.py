"""Choosing the source for a URL: forced by name, or detected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SourceDetectionError, SourceNotFoundError
from ..location import Location
from ..plugins import get_plugin_host
from ._remote import access_error
from .base import Detection, Source

__all__ = ["open_source", "detect_source"]


def detect_source(location: Location) -> tuple[type[Source], list[tuple[str, Detection]]]:
    """Ask each registered source in priority order; return the first that matches.

    Also returns every answer collected on the way, for error messages.
    """
    tried: list[tuple[str, Detection]] = []
    for name, cls in get_plugin_host().sources().items():
        try:
            answer = cls.detect(location)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a plugin's detect() failing must not hide the others
            answer = Detection.no(f"detect() raised {type(exc).__name__}: {exc}")
        tried.append((name, answer))
        if answer.matches:
            return cls, tried
    names = ", ".join(get_plugin_host().sources())
    lines = "\n".join(f"  - {n}: {d.reason}" for n, d in tried)
    raise SourceDetectionError(
        f"no source recognises {location.describe()!r}. Tried:\n{lines}\n"
        f"Force one with SlipstreamDataset(url, source=NAME) (NAME one of: {names}), or "
        f"install a plugin for this format (`slipstream plugins` lists what is loaded)."
    )


def open_source(
    url: str,
    *,
    source: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Source:
    """Open ``url`` with the named ``source``, or with the first source that detects it."""
    location = Location.parse(url, storage_options)
    registry = get_plugin_host().sources()
    if source is not None:
        cls = registry.get(source)
        if cls is None:
            raise SourceDetectionError(
                f"source={source!r} is not registered; registered sources: "
                f"{', '.join(registry) or '(none)'}. `slipstream plugins` lists what is loaded"
            )
        return cls(location, **options)
    try:
        exists = location.fs.exists(location.path)
    except Exception as exc:  # missing credentials, access denied: say so, naming the URL
        mapped = access_error(exc, location.describe(), "the dataset")
        if mapped is None:
            raise
        raise mapped from exc
    if not exists:
        raise SourceNotFoundError(
            f"{location.describe()}: no such file or directory. Check the path (and, for "
            f"remote URLs, the bucket name and credentials in storage_options)"
        )
    cls, _ = detect_source(location)
    return cls(location, **options)
