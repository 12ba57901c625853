"""Retrying transient remote-store failures with exponential backoff, within a deadline.

s3fs and botocore retry single requests themselves (``S3Store`` configures botocore's
"standard" mode: HTTP 500/502/503/504, throttling, connection errors and timeouts, with
jittered exponential backoff). This helper is the outer layer: it repeats a whole file
transfer when a transient failure got through those, so one flaky object does not fail a
pull of thousands. Every operation, retries included, ends by its deadline
(:attr:`RetryPolicy.deadline`): the layers below multiply their own timeouts, so only a
total bound keeps a server that accepts connections and never answers from hanging us.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import ConfigurationError, DeadlineExceeded

__all__ = ["RetryPolicy", "call_with_retries", "is_transient", "DEADLINE_ENV", "DeadlineExceeded"]

#: Environment variable with the default deadline of one remote operation, in seconds.
DEADLINE_ENV = "SLIPSTREAM_REMOTE_TIMEOUT"
_DEFAULT_DEADLINE = 300.0

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


def _default_deadline() -> float:
    text = os.environ.get(DEADLINE_ENV)
    if not text:
        return _DEFAULT_DEADLINE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigurationError(f"${DEADLINE_ENV}={text!r}: expected a positive number of "
                                 f"seconds (the deadline of one remote operation, e.g. 300)")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to repeat a failed transfer.

    Attempt ``n`` (from 1) that fails transiently is followed by a pause drawn uniformly
    from ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**(n-1))``. ``deadline`` bounds
    one whole operation (every attempt and pause, and the retries of the layers below) in
    seconds; it defaults to ``$SLIPSTREAM_REMOTE_TIMEOUT``, else 300.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0
    deadline: float = field(default_factory=_default_deadline)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError(f"RetryPolicy delays must not be negative, got "
                                     f"base_delay={self.base_delay}, max_delay={self.max_delay}")
        if not self.deadline > 0:
            raise ConfigurationError(f"RetryPolicy.deadline must be a positive number of "
                                     f"seconds, got {self.deadline}")

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
    end: float | None = None,
) -> T:
    """``fn()``, repeated after a backoff pause while it fails transiently, at most
    ``policy.attempts`` times in all. With ``end`` (a :func:`time.monotonic` time) no
    pause runs past it, and a ``TimeoutError`` at or after it is final: ``fn`` itself must
    give up by then. The last failure (or the first permanent one) is raised as it is;
    :class:`DeadlineExceeded` when the time ran out. ``what`` names the operation in the
    debug log."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            left = float("inf") if end is None else end - time.monotonic()
            if isinstance(exc, TimeoutError) and left <= 0:
                raise DeadlineExceeded(f"{what}: no answer within {policy.deadline:g} s") from exc
            if attempt >= policy.attempts or not transient(exc):
                raise
            pause = policy.delay(attempt)
            if pause >= left:
                raise DeadlineExceeded(f"{what}: no answer within {policy.deadline:g} s") from exc
            log.debug("%s failed (%s); retrying in %.2f s (attempt %d of %d)", what,
                      type(exc).__name__, pause, attempt + 1, policy.attempts)
            sleep(pause)
            attempt += 1
