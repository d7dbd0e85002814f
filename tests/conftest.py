"""Backends for the test matrix: in-memory, fakeredis, and real Redis and Valkey servers
that this session starts on free loopback ports. Each test gets a fresh key prefix.

Under CI=true a real server that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from redis_checkpoint import InMemoryPersistenceStore, RedisPersistenceStore
from redis_checkpoint.client import CLIENT_DEFAULTS
from redis_checkpoint.conformance import StoreFactory
from redis_checkpoint.conformance.events import EventStoreFactory
from redis_checkpoint.conformance.servers import ServerProcess, redis_binary, valkey_binary
from redis_checkpoint.events import InMemoryEventStore, RedisEventStore

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _start(name: str, binary: str | None) -> ServerProcess:
    try:
        if binary is None:
            raise RuntimeError(f"no {name} binary found")
        return ServerProcess(binary).start()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"{name} backend could not start under CI=true: {exc}", pytrace=False)
        pytest.skip(f"{name} backend unavailable: {exc}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    server = _start("redis-server", redis_binary())
    yield server
    server.close()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ServerProcess]:
    server = _start("valkey-server", valkey_binary())
    yield server
    server.close()


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def record_script_calls(store: Any) -> list[tuple[str, tuple[str, ...]]]:
    """From now on, record the name and KEYS of every script call `store` makes."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    run = store._run

    async def recording(name: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        calls.append((name, keys))
        return await run(name, keys, args)

    store._run = recording
    return calls


async def _redis_factory(
    client: Redis, kind: type[RedisPersistenceStore | RedisEventStore] = RedisPersistenceStore
) -> AsyncIterator[StoreFactory]:
    """Stores of `kind` on one fresh prefix: every store a test makes shares its data."""
    prefix = fresh_prefix()

    async def make(**options: Any) -> Any:
        return kind(client, prefix=prefix, **options)

    yield make
    await client.aclose()


def _fakeredis() -> Redis:
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


@pytest.fixture
async def memory_stores() -> AsyncIterator[StoreFactory]:
    shared: dict[str, InMemoryPersistenceStore] = {}

    async def make(**options: Any) -> InMemoryPersistenceStore:
        return shared.setdefault(repr(sorted(options.items())), InMemoryPersistenceStore(**options))

    yield make


@pytest.fixture
async def fakeredis_stores() -> AsyncIterator[StoreFactory]:
    async for make in _redis_factory(_fakeredis()):
        yield make


@pytest.fixture
async def redis_stores(redis_server: ServerProcess) -> AsyncIterator[StoreFactory]:
    async for make in _redis_factory(Redis.from_url(redis_server.url, **CLIENT_DEFAULTS)):
        yield make


@pytest.fixture
async def valkey_stores(valkey_server: ServerProcess) -> AsyncIterator[StoreFactory]:
    async for make in _redis_factory(Redis.from_url(valkey_server.url, **CLIENT_DEFAULTS)):
        yield make


@pytest.fixture
async def memory_event_stores() -> AsyncIterator[EventStoreFactory]:
    store = InMemoryEventStore()

    async def make() -> InMemoryEventStore:
        return store

    yield make


@pytest.fixture
async def fakeredis_event_stores() -> AsyncIterator[EventStoreFactory]:
    async for make in _redis_factory(_fakeredis(), RedisEventStore):
        yield make


@pytest.fixture
async def redis_event_stores(redis_server: ServerProcess) -> AsyncIterator[EventStoreFactory]:
    client = Redis.from_url(redis_server.url, **CLIENT_DEFAULTS)
    async for make in _redis_factory(client, RedisEventStore):
        yield make


@pytest.fixture
async def valkey_event_stores(valkey_server: ServerProcess) -> AsyncIterator[EventStoreFactory]:
    client = Redis.from_url(valkey_server.url, **CLIENT_DEFAULTS)
    async for make in _redis_factory(client, RedisEventStore):
        yield make


REAL_SERVERS = ["redis_server", "valkey_server"]


@pytest.fixture(params=REAL_SERVERS)
def real_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each real server in turn, for tests of server behaviour fakeredis cannot show."""
    server: ServerProcess = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def server_factory() -> Iterator[Callable[[str], ServerProcess]]:
    """Private servers a test may stop and restart; all are closed at teardown."""
    started: list[ServerProcess] = []

    def start(kind: str) -> ServerProcess:
        server = _start(kind, redis_binary() if kind == "redis-server" else valkey_binary())
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true every test must run: a skipped backend is a failure, not coverage."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if IN_CI and skipped and exitstatus == 0:
        print(f"\nCI=true: {skipped} test(s) skipped; every backend must run in CI")
        session.exitstatus = 1
