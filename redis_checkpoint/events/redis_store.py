"""`RedisEventStore`: Aion's event store on Redis; every mutation is one Lua script call
(or one command, where one command is the whole operation). The parts, one per concern:
`histories`, `timers`, `packages` and `visibility`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypedDict, Unpack

from redis.asyncio import Redis, RedisCluster

from ..connection import DEFAULT_TIMEOUT
from .errors import TREE
from .histories import Histories
from .packages import Packages
from .timers import Timers
from .visibility import Visibility


class Options(TypedDict, total=False):
    """The store keywords `from_url` passes on."""

    prefix: str
    shards: int
    completed_ttl: float | None
    timeout: float
    replicas: int
    replica_timeout: float
    fsync: bool


class RedisEventStore(Histories, Timers, Packages, Visibility):
    """An `EventStore` and `VisibilityStore` on Redis (or Valkey, or fakeredis).

    Args:
        redis: an async client; the store does not close it unless it opened it.
        prefix: the key prefix; stores sharing a prefix share workflows.
        shards: virtual shards, fixed per prefix (recorded by the first write, then checked).
        completed_ttl: seconds a workflow's keys live once its status is terminal; an
            append that reopens it removes the expiry. None keeps workflows forever.
        timeout: seconds one call may take, all retries included.
        replicas, replica_timeout, fsync: wait for replicas (and disks) to confirm each
            write, as `RedisPersistenceStore` does; NotReplicated if they fall short.
    """

    errors = TREE
    scripts = (
        *("append_events", "retire_timer", "put_package", "delete_package", "forget"),
        *("settle", "take"),  # a tiered store's cache's
    )
    index = "workflows"

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str = "rc",
        shards: int = 64,
        completed_ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        fsync: bool = False,
        owns_client: bool = False,
    ) -> None:
        self.constants = {"COMPLETED_TTL_MS": TREE.check.ttl_ms(completed_ttl, "completed_ttl")}
        super().__init__(
            redis,
            prefix=prefix,
            shards=shards,
            timeout=timeout,
            owns_client=owns_client,
            replicas=replicas,
            replica_timeout=replica_timeout,
            fsync=fsync,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client_options: Mapping[str, Any] | None = None,
        **options: Unpack[Options],
    ) -> Self:
        """Open a store on `redis://`, `rediss://`, `unix://` or `fakeredis://` (no server).

        `client_options` go to redis-py's `Redis.from_url`, over this package's defaults.
        """
        return cls.open_url(url, client_options, options)
