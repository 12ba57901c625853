"""Retrying transient remote-store failures with exponential backoff.

s3fs and botocore retry single requests themselves (``S3Store`` configures botocore's
"standard" mode: HTTP 500/502/503/504, throttling, connection errors and timeouts, with
jittered exponential backoff). This helper is the outer layer: it repeats a whole file
transfer when a transient failure got through those, so one flaky object does not fail a
pull of thousands.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["RetryPolicy", "call_with_retries", "is_transient"]

log = logging.getLogger("slipstream.stores")

T = TypeVar("T")

#: errno values that mean "try again" (s3fs maps HTTP 503/SlowDown to EBUSY, 500 to EREMOTEIO).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EBUSY", "EREMOTEIO", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED",
                 "ECONNABORTED", "EPIPE", "EAGAIN", "EHOSTUNREACH", "ENETUNREACH")
    if hasattr(errno, name)
)
_TRANSIENT_HTTP = frozenset({500, 502, 503, 504})
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                              "Throttling", "ThrottlingException", "RequestLimitExceeded"})
#: Exception classes of the HTTP stacks under s3fs that mean a dropped or timed-out
#: connection, by (module prefix, class name), so this module imports none of them.
_TRANSIENT_CLASSES = frozenset({
    ("botocore", "HTTPClientError"), ("botocore", "ConnectionError"),
    ("botocore", "IncompleteReadError"), ("botocore", "ResponseStreamingError"),
    ("aiohttp", "ClientConnectionError"), ("aiohttp", "ClientPayloadError"),
    ("aiohttp", "ServerDisconnectedError"), ("aiohttp", "ServerTimeoutError"),
    ("urllib3", "ProtocolError"), ("http", "IncompleteRead"),
})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to repeat a failed transfer.

    Attempt ``n`` (from 1) that fails transiently is followed by a pause drawn uniformly
    from ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**(n-1))``.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1-based)."""
        d = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(d / 2, d)


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    response = getattr(exc, "response", None)  # botocore.exceptions.ClientError
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        if status in _TRANSIENT_HTTP or code in _TRANSIENT_CODES:
            return True
    for cls in type(exc).__mro__:
        top = cls.__module__.split(".", 1)[0]
        if (top, cls.__name__) in _TRANSIENT_CLASSES:
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is worth retrying: a dropped
    connection, a timeout, HTTP 500/502/503/504 or throttling. Missing objects, denied
    access and checksum mismatches are not."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            return False
        if _one_is_transient(e):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, repeated after a backoff pause while it fails transiently, at most
    ``policy.attempts`` times in all. The last failure (or the first permanent one) is
    raised as it is; ``what`` names the operation in the debug log."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.attempts or not transient(exc):
                raise
            pause = policy.delay(attempt)
            log.debug("%s failed (%s); retrying in %.2f s (attempt %d of %d)", what,
                      type(exc).__name__, pause, attempt + 1, policy.attempts)
            sleep(pause)
            attempt += 1
