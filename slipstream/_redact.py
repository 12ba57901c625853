"""Keeping credentials out of every message, log line and ``repr``.

Credentials reach slipstream three ways: inside a URL (``s3://KEY:SECRET@bucket``,
``https://user:pass@host``), in a URL's query string (pre-signed URLs carry
``X-Amz-Signature``, ``X-Amz-Security-Token``; others ``token=``, ``sig=``), and as
``storage_options`` values (``key``, ``secret``, ``token``, nested ``client_kwargs``).
Every place that formats a URL or an exception's text for a person goes through
:func:`redact_url` or :func:`scrub`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["redact_url", "scrub", "secret_values", "has_userinfo", "MASK"]

MASK = "***"

# scheme://userinfo@ : anything up to an @ before the first / ? or # after the scheme
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s]*@")
# a query string's values, in a URL or anywhere in a text: ?name=VALUE&name=VALUE
_QUERY_VALUE = re.compile(r"([?&][^=&#\s'\"]+=)[^&#\s'\"]*")
#: Option names whose string values are credentials.
SECRET_OPTION = re.compile(
    r"(secret|token|password|passwd|credential|key|signature|session|auth|sas)",
    re.IGNORECASE)
_NOT_SECRET = frozenset(("endpoint_url", "region_name", "key_prefix"))


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@`` before its host."""
    return bool(_USERINFO.match(url.strip()))


def redact_url(url: str) -> str:
    """``url`` (or any text holding URLs) with embedded credentials and every query
    value replaced by ``***``: ``s3://***@bucket/x``, ``https://h/p?sig=***&t=***``.
    Query values are all masked, since which ones are secret depends on the service."""
    return _QUERY_VALUE.sub(r"\1" + MASK, _USERINFO.sub(r"\1" + MASK + "@", url))


def secret_values(options: Mapping[str, Any] | None) -> list[str]:
    """The string values of ``options`` (nested mappings too) whose names say they are
    credentials, longest first (so that a secret containing another is masked whole)."""
    out: list[str] = []

    def walk(items: Iterable[tuple[Any, Any]]) -> None:
        for name, value in items:
            if isinstance(value, Mapping):
                walk(value.items())
            elif (isinstance(value, str) and len(value) >= 4 and str(name) not in _NOT_SECRET
                  and SECRET_OPTION.search(str(name))):
                out.append(value)

    walk((options or {}).items())
    return sorted(set(out), key=len, reverse=True)


def scrub(text: str, options: Mapping[str, Any] | None = None) -> str:
    """``text`` with URL credentials, query values and the credential values of
    ``options`` replaced by ``***``."""
    text = redact_url(text)
    for value in secret_values(options):
        text = text.replace(value, MASK)
    return text
