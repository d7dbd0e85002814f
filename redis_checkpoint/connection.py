"""Opening a Redis client from a URL: bounded timeouts, retries that never retry refused
credentials, a pool that waits for a free connection, and passwords masked in messages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError

from .failures import ErrorTree

R = TypeVar("R")
DEFAULT_TIMEOUT = 10.0


def retryable(error: Exception) -> bool:
    """Whether a call may go on retrying after `error`: not once the running task has been
    cancelled (by the call's deadline, or its caller). Python 3.11's `wait_for`, which
    redis-py connects with, can swallow that cancellation; it is raised again here, so
    that the deadline still ends the call instead of the retries running out."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return True


class _Retry(Retry):
    """redis-py's retry, minus what retrying cannot fix: refused credentials (which redis-py
    files under ConnectionError) and a call its deadline has cancelled."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[R]],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> R:
        def worth_it(error: Exception) -> bool:
            denied = isinstance(error, AuthenticationError | AuthorizationError)
            return retryable(error) and not denied and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, worth_it, with_failure_count)


def client_defaults(timeout: float) -> dict[str, Any]:
    """A connect timeout inside the call's deadline, and a few fast retries that ride out a
    dropped connection or a failover within it. No socket timeout: every call's deadline
    bounds its reads and writes, and redis-py enforces a socket timeout on writes with
    `asyncio.wait_for`, which on Python 3.11 can swallow the deadline's cancellation (the
    call then ran seconds past it)."""
    return {
        "socket_connect_timeout": min(2.0, timeout),
        "socket_timeout": None,
        "retry": _Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), 3),
        "health_check_interval": 30,
    }


def connect(
    url: str, errors: ErrorTree, timeout: float, options: Mapping[str, Any] | None = None
) -> Redis:
    """A client for `redis://`, `rediss://`, `unix://` or `fakeredis://` (in-process).

    Each `fakeredis://` URL opens a new, empty in-process server. `options` (redis-py's
    keywords) override the defaults. A malformed URL raises `errors.invalid`.
    """
    if not isinstance(url, str) or not isinstance(options, Mapping | None):
        raise errors.invalid(f"expected a URL string and a mapping of options, got {url!r:.80}")
    if url.startswith("fakeredis://"):
        try:
            import fakeredis
        except ImportError:
            raise errors.invalid(
                "fakeredis:// needs the fake extra: pip install 'redis-checkpoint[fake]'"
            ) from None
        client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise errors.invalid(
            f"unsupported URL {redact(url)}: use redis://, rediss://, unix:// or fakeredis://"
        )
    try:
        parts = urlsplit(url)  # raises on a malformed IPv6 host
        _ = parts.port  # raises on a port that is not a number in 0..65535
        # redis-py quietly takes db 0 for `/abc`; unix:// paths are files.
        if parts.scheme != "unix" and not re.fullmatch(r"/?|/[0-9]+", parts.path):
            raise ValueError(f"the path must be a database number such as /0, not {parts.path!r}")
        # Calls beyond the pool's connections wait for one (within their deadline) instead
        # of failing with "Too many connections".
        settings = {**client_defaults(timeout), "timeout": None, **(options or {})}
        return Redis.from_pool(BlockingConnectionPool.from_url(url, **settings))
    except ValueError as exc:
        raise errors.invalid(f"invalid URL {redact(url)}: {exc}") from None


# The password of a URL in some text: from the `:` after the user name to the last `@` of the
# URL, so that a password holding `/`, `?` or `#` (which breaks the URL's parsing) is masked.
_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)\S*@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL in it shown as `***`."""
    return _PASSWORD.sub(r"\1***@", text)
