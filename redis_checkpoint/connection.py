"""Opening a Redis client from a URL: bounded timeouts, retries that never retry refused
credentials, a pool that waits for a free connection, and passwords masked in messages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
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


RESEND_ONCE = _Retry(NoBackoff(), 1)  # a dropped connection: once more, at once


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
) -> Redis | RedisCluster:
    """A client for `redis://`, `rediss://`, `unix://`, `redis+cluster://` (a Redis
    Cluster), `redis+sentinel://` (the primary a Sentinel names), their `rediss+` forms, or
    `fakeredis://` (in-process).

    Each `fakeredis://` URL opens a new, empty in-process server. `options` (redis-py's
    keywords) override the defaults. A malformed URL raises `errors.invalid`.
    """
    if not isinstance(url, str) or not isinstance(options, Mapping | None):
        raise errors.invalid(f"expected a URL string and a mapping of options, got {url!r:.80}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "fakeredis":
        try:
            import fakeredis
        except ImportError:
            raise errors.invalid(
                "fakeredis:// needs the fake extra: pip install 'redis-checkpoint[fake]'"
            ) from None
        client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client
    if scheme not in _SCHEMES:
        raise errors.invalid(
            f"unsupported URL {redact(url)}: use {', '.join(_SCHEMES)}:// or fakeredis://"
        )
    settings = {**client_defaults(timeout), **(options or {})}
    try:
        if scheme.endswith("+cluster"):
            return _cluster(url, settings)
        if scheme.endswith("+sentinel"):
            return _sentinel(url, settings)
        parts = urlsplit(url)  # raises on a malformed IPv6 host
        _ = parts.port  # raises on a port that is not a number in 0..65535
        # redis-py quietly takes db 0 for `/abc`; unix:// paths are files.
        if parts.scheme != "unix" and not re.fullmatch(r"/?|/[0-9]+", parts.path):
            raise ValueError(f"the path must be a database number such as /0, not {parts.path!r}")
        # Calls beyond the pool's connections wait for one (within their deadline) instead
        # of failing with "Too many connections".
        return Redis.from_pool(
            BlockingConnectionPool.from_url(url, **{"timeout": None, **settings})
        )
    except ValueError as exc:
        raise errors.invalid(f"invalid URL {redact(url)}: {exc}") from None


_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


class _Servers(NamedTuple):
    """What a URL of several servers holds: `scheme://[user:password@]host:port,.../path`."""

    addresses: list[tuple[str, int]]
    credentials: dict[str, Any]  # username, password, ssl
    path: list[str]  # the path's parts

    @classmethod
    def parse(cls, url: str) -> _Servers:
        scheme, _, rest = url.partition("://")
        # The credentials end at the last `@`: a password may hold `/`, `?` or `#`.
        user_info, _, located = rest.rpartition("@")
        hosts, _, path = located.partition("/")
        if "?" in located or "#" in located:
            raise ValueError("options go in client_options, not in the URL")
        addresses = []
        for host in hosts.split(","):
            try:
                node = urlsplit(f"//{host}")
                addresses.append((node.hostname or "", node.port or 6379))
            except ValueError:
                addresses.append(("", 0))
            if not addresses[-1][0]:
                raise ValueError(f"expected host:port with a port in 0..65535, not {host!r}")
        credentials: dict[str, Any] = {"ssl": scheme.lower().startswith("rediss")}
        if user_info:
            user, _, password = user_info.partition(":")
            credentials["username"] = unquote(user) or None
            credentials["password"] = unquote(password) or None
        return cls(addresses, credentials, [p for p in path.split("/") if p])


def _cluster(url: str, settings: dict[str, Any]) -> RedisCluster:
    """A Redis Cluster client; the first node that answers tells it the rest. Its own
    commands (asking the cluster for its slots) get a socket timeout: a stalled node must
    not hold up the refresh every call waits on. (The store's calls are bounded by their
    deadlines instead.)"""
    servers = _Servers.parse(url)
    if servers.path not in ([], ["0"]):
        raise ValueError("a cluster has database 0 only")
    nodes = [ClusterNode(host, port) for host, port in servers.addresses]
    if settings.get("socket_timeout") is None:  # slots come back in well under a second
        settings = {**settings, "socket_timeout": min(1.0, settings["socket_connect_timeout"])}
    return RedisCluster(startup_nodes=nodes, **{**servers.credentials, **settings})


def _sentinel(url: str, settings: dict[str, Any]) -> Redis:
    """A client of the primary that the Sentinels at the URL name for its service, asked
    again on each new connection (so after a failover). The URL's credentials are the
    primary's; the Sentinels get `sentinel_kwargs` from the options, if any."""
    servers = _Servers.parse(url)
    if len(servers.path) not in (1, 2) or not re.fullmatch(r"[0-9]*", "".join(servers.path[1:])):
        raise ValueError("the path must be /service_name or /service_name/db")
    service, db = servers.path[0], int(servers.path[1]) if len(servers.path) == 2 else 0
    asked = settings.pop("sentinel_kwargs", None) or {}
    bound = {"socket_connect_timeout": settings["socket_connect_timeout"]}
    sentinel_kwargs = {
        **bound,
        "socket_timeout": bound["socket_connect_timeout"],
        "ssl": servers.credentials["ssl"],
        "retry": Retry(NoBackoff(), 0),  # a Sentinel down: ask the next one, at once
        **asked,
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        servers.addresses,
        sentinel_kwargs=sentinel_kwargs,
        **{**servers.credentials, "db": db, **settings},
    )
    client: Redis = sentinel.master_for(service)
    return client


async def close(client: Redis | RedisCluster) -> None:
    """Close `client`, and the Sentinel clients behind it, if any."""
    await client.aclose()
    if isinstance(client, RedisCluster):  # its aclose() skips nodes once a failure reset it
        await client.nodes_manager.aclose()
        await client.nodes_manager.aclose("startup_nodes")
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


# The password of a URL in some text: from the `:` after the user name to the last `@` of the
# URL, so that a password holding `/`, `?` or `#` (which breaks the URL's parsing) is masked.
_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)\S*@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL in it shown as `***`."""
    return _PASSWORD.sub(r"\1***@", text)
