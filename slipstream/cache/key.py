"""Content keys: the name a cache is stored and shared under."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..schema import Field
from . import layout

__all__ = ["content_key"]

KEY_HEX_DIGITS = 40


def content_key(
    source_name: str,
    fingerprint: Any,
    fields: Sequence[Field],
    image_format: str,
    format_version: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Hash everything that identifies a cache's contents.

    Two caches share a key exactly when they come from the same source data (by its
    fingerprint), with the same fields, in the same image format and cache format
    version (the current one unless given); field order does not matter. Nothing else
    (paths, hosts, credentials, time) goes in. ``settings`` that change the stored
    bytes (``exif_orientation="apply"``) go in when given; defaults are left out, so
    that keys made before a setting existed stay valid.
    """
    identity = {
        "format_version": layout.FORMAT_VERSION if format_version is None else format_version,
        "source": source_name,
        "fingerprint": fingerprint,
        "fields": sorted((f.to_json() for f in fields), key=lambda f: f["name"]),
        "image_format": image_format,
    }
    if settings:
        identity["settings"] = dict(settings)
    try:
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"source {source_name!r} returned a fingerprint that is not plain JSON "
            f"(dicts, lists, strings, finite numbers): {exc}"
        ) from exc
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_HEX_DIGITS]
