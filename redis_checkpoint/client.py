"""Opening a Redis client from a URL, with timeouts and retries a store can rely on."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from .errors import InvalidInput

# A stopped server must surface as StoreUnavailable within seconds, not hang: bounded
# connect and read timeouts, and a few fast retries that ride out a blip or a failover.
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "retry": Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), 3),
    "retry_on_error": [ConnectionError, TimeoutError],
    "health_check_interval": 30,
}


def connect(url: str, **options: Any) -> Redis:
    """A client for `redis://`, `rediss://`, `unix://` or `fakeredis://` (in-process, no server).

    Each `fakeredis://` URL opens a new, empty in-process server. `options` override
    `CLIENT_DEFAULTS` and are passed to `Redis.from_url`.
    """
    if url.startswith("fakeredis://"):
        try:
            import fakeredis
        except ImportError:
            raise InvalidInput(
                "fakeredis:// needs the fake extra: pip install 'redis-checkpoint[fake]'"
            ) from None
        client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInput(
            f"unsupported URL {url!r}: use redis://, rediss://, unix:// or fakeredis://"
        )
    return Redis.from_url(url, **{**CLIENT_DEFAULTS, **options})
