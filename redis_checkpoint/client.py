"""Opening a Redis client from a URL, with timeouts and retries a store can rely on, and
the plumbing both Redis stores share (`RedisBacked`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Self, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError

from .errors import InvalidInput
from .keys import check_prefix, config_key

T = TypeVar("T")

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


class RedisBacked:
    """What every Redis store shares: a client, a key prefix and its recorded shard count.

    Subclasses name their errors: `unavailable` for transport failures, `corrupt(key,
    detail)` for a key holding data the store did not write, `mismatch` for a wrong shard
    count, `refused` for any other error the server returns.
    """

    unavailable: type[Exception]
    mismatch: type[Exception]
    refused: type[Exception]

    def __init__(self, redis: Redis, prefix: str, shards: int, owns_client: bool) -> None:
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 16384:
            raise self.mismatch(f"shards must be an integer in 1..16384, got {shards!r}")
        self.redis = redis
        self.prefix = check_prefix(prefix)
        self.shards = shards
        self._owns_client = owns_client
        self._configured = False
        self._configuring = asyncio.Lock()  # many first calls at once check the config once

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Open a store on `redis://`, `rediss://`, `unix://` or `fakeredis://` (no server)."""
        return cls(connect(url), owns_client=True, **options)

    async def __aenter__(self) -> Self:
        await self._configure()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this store opened it (`from_url`)."""
        if self._owns_client:
            await self.redis.aclose()

    def corrupt(self, key: str, detail: str) -> Exception:
        raise NotImplementedError

    async def _configure(self) -> None:
        """Record the shard count at first use; refuse a prefix set up with another."""
        if self._configured:
            return
        async with self._configuring:
            if self._configured:
                return
            key = config_key(self.prefix)
            recorded = await self._io(self._record_shards(key), key)
            if recorded != self.shards:
                raise self.mismatch(
                    f"prefix {self.prefix!r} was set up with {recorded} shards, this store has "
                    f"{self.shards}: open it with shards={recorded} (the count is fixed per prefix)"
                )
            self._configured = True

    async def _record_shards(self, key: str) -> int:
        await self.redis.hsetnx(key, "shards", self.shards)
        recorded: bytes = await self.redis.hget(key, "shards")  # type: ignore[assignment]
        return int(recorded)

    async def _io(self, call: Awaitable[T], key: str | None = None) -> T:
        """Await a server call: transport failures become `unavailable`, and a
        wrong-typed `key` (when the call reads just one) becomes `corrupt`."""
        try:
            return await call
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self.unavailable(f"Redis unreachable: {exc}") from exc
        except ResponseError as exc:
            if key is not None and "WRONGTYPE" in str(exc):
                raise self.corrupt(key, "the key holds a value of the wrong type") from exc
            raise

    async def _diagnose(
        self, exc: ResponseError, keys: tuple[str, ...], types: tuple[str, ...], stream: str
    ) -> Exception:
        """What a script's error means: a key of a type the store never writes there, or
        stream entries it did not write (`corrupt`, naming the key), or a server condition."""
        message = str(exc)
        if isinstance(exc, ReadOnlyError):  # a failover demoted the node under us
            return self.unavailable(f"Redis refused the write: {message}")
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            found_types = await self._io(pipe.execute())
        for key, found, expected in zip(keys, found_types, types, strict=True):
            if found not in (b"none", expected.encode()):
                return self.corrupt(key, f"expected a {expected}, found a {found.decode()}")
        if "XADD" in message:  # stream entries with ids this store did not write
            return self.corrupt(stream, message)
        return self.refused(f"Redis refused the call: {message}")
