"""What both Redis stores promise beyond their contracts, written once and run over both
stores (and, where the server matters, over fakeredis, Redis and Valkey): arguments and
URLs fail in the calling store's tree, reads never write, a closed store stays closed, a
failed pipeline settles every call in it, listings are exact and `load` reads in pages."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest import mock
from uuid import UUID

import fakeredis
import pytest
from redis.asyncio import Redis

from redis_checkpoint import (
    ConfigMismatch,
    CorruptRecord,
    PersistenceError,
    RedisPersistenceStore,
    StoreClosed,
    StoreUnavailable,
)
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.aion import TOKEN, T, act, started, wid
from redis_checkpoint.conformance.servers import ClusterProcess, ServerProcess
from redis_checkpoint.connection import close
from redis_checkpoint.events import ConfigMismatch as EventConfigMismatch
from redis_checkpoint.events import CorruptRecord as EventCorruptRecord
from redis_checkpoint.events import (
    RedisEventStore,
    StoreError,
    WorkflowFilter,
)
from redis_checkpoint.events import StoreClosed as EventStoreClosed
from redis_checkpoint.failures import BadArgument, Closed, Corrupt, Misconfigured, Unavailable
from redis_checkpoint.runner import _Lane

from .conftest import client, fresh_prefix
from .proxy import CuttingProxy


class Kind:
    """One store, as the shared scenarios drive it: numbered writes to numbered records."""

    def __init__(self, store_class: Any, base: type[Exception]) -> None:
        self.store_class, self.base = store_class, base

    async def write(self, store: Any, record: int, n: int) -> None:
        """The `n`-th write (from 1) to record `record`: a trace's step, a workflow's seq."""
        if self.store_class is RedisPersistenceStore:
            await store.append(envelope(f"trace-{record}", step=n))
            return
        wf = UUID(int=record + 1)
        event = started(1, wf) if n == 1 else act(n, wf, "a")
        await store.append(TOKEN, wf, [event], n - 1)

    def record_ids(self, record: int) -> tuple[Any]:
        """The id of record `record`, as the store's `keys` takes it."""
        return (
            (f"trace-{record}",)
            if self.store_class is RedisPersistenceStore
            else (UUID(int=record + 1),)
        )

    async def written(self, store: Any, record: int) -> list[int]:
        if self.store_class is RedisPersistenceStore:
            trace = await store.load(f"trace-{record}")
            return [] if trace is None else [e.step for e in trace.events]
        return [e.seq for e in await store.read_history(UUID(int=record + 1))]


KINDS = {
    "checkpoints": Kind(RedisPersistenceStore, PersistenceError),
    "events": Kind(RedisEventStore, StoreError),
}


@pytest.fixture(params=["fakeredis", "redis", "valkey", "redis-cluster", "valkey-cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    r = client(request, request.param)
    yield r
    await close(r)


async def write(store: Any) -> None:
    if isinstance(store, RedisPersistenceStore):
        await store.append(envelope())
    else:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)


async def read_everything(store: Any) -> None:
    if isinstance(store, RedisPersistenceStore):
        await store.load("trace-1")
        [s async for s in store.iter_traces()]
        [e async for e in store.iter_events("trace-1")]
        await store.check()
    else:
        await store.read_history(wid())
        await store.list_workflow_ids()
        await store.query(WorkflowFilter())
        await store.expired_timers(T(1))
        await store.list_packages()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "options",
    [{"prefix": "{x"}, {"prefix": ""}, {"shards": 0}, {"shards": True}, {"timeout": 0}],
)
def test_bad_constructor_arguments_raise_in_the_stores_tree(
    kind: str, options: dict[str, Any]
) -> None:
    store_class, base = KINDS[kind].store_class, KINDS[kind].base
    with pytest.raises(base) as raised:
        store_class(fakeredis.FakeAsyncRedis(), **options)
    assert isinstance(raised.value, BadArgument) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0/1",
        "http://127.0.0.1/0",
        "redis://:secret@127.0.0.1:xx/0",
        "redis://:secret@[::1:6380/0",
        "redis://:se/cret@127.0.0.1:xx/0",
        "redis://user:se?cr#et@127.0.0.1:xx/0",
        "redis+cluster://",
        "redis+cluster://:secret@127.0.0.1:xx",
        "redis+cluster://u:se/cret@127.0.0.1:xx",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:99999",
        "redis+cluster://127.0.0.1:7000/1",
        "rediss+cluster://127.0.0.1:7000?ssl_cert_reqs=none",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/mymaster/x",
        "redis+sentinel://:secret@127.0.0.1:26379/mymaster/0/1",
    ],
)
def test_bad_urls_raise_in_the_stores_tree(kind: str, url: str) -> None:
    store_class, base = KINDS[kind].store_class, KINDS[kind].base
    with pytest.raises(base) as raised:
        store_class.from_url(url)
    assert isinstance(raised.value, BadArgument)
    assert not any(part in str(raised.value) for part in ("secret", "se/", "cret", "cr#"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_decodes_replies_and_non_url_arguments_are_refused(kind: str) -> None:
    store_class, base = KINDS[kind].store_class, KINDS[kind].base
    with pytest.raises(base, match="decode_responses"):
        store_class(Redis(decode_responses=True))
    for url, options in ((123, None), (None, None), ("redis://h/0", ["not", "a", "mapping"])):
        with pytest.raises(base) as raised:
            store_class.from_url(url, client_options=options)
        assert isinstance(raised.value, BadArgument)


@pytest.mark.parametrize("kind", KINDS)
async def test_reads_never_write(redis: Redis, kind: str) -> None:
    store = KINDS[kind].store_class(redis, prefix=fresh_prefix())
    async with store:
        await read_everything(store)
    assert await redis.keys(f"*{store.prefix}*") == []  # not even the shard-count record


@pytest.mark.parametrize("kind", KINDS)
async def test_the_first_write_records_the_shard_count(redis: Redis, kind: str) -> None:
    prefix = fresh_prefix()
    store_class = KINDS[kind].store_class
    await read_everything(store_class(redis, prefix=prefix, shards=4))  # records nothing
    await write(store_class(redis, prefix=prefix, shards=8))
    with pytest.raises(Misconfigured, match="set up with 8 shards") as raised:
        await read_everything(store_class(redis, prefix=prefix, shards=4))
    assert isinstance(raised.value, (ConfigMismatch, EventConfigMismatch))
    assert isinstance(raised.value, KINDS[kind].base)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_corrupt_shard_record_is_corrupt_data_of_the_tree(redis: Redis, kind: str) -> None:
    store_class, base = KINDS[kind].store_class, KINDS[kind].base
    store = store_class(redis, prefix=fresh_prefix())
    await redis.hset(f"{store.prefix}:config", "shards", "lots")
    with pytest.raises(Corrupt, match="config") as raised:
        await write(store)
    assert isinstance(raised.value, base)
    assert isinstance(raised.value, (CorruptRecord, EventCorruptRecord))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_closed_store_refuses_every_call_and_writes_nothing(
    redis: Redis, kind: str
) -> None:
    store_class, base = KINDS[kind].store_class, KINDS[kind].base
    store = store_class(redis, prefix=fresh_prefix())
    await write(store)
    before = sorted(await redis.keys(f"*{store.prefix}*"))
    await store.aclose()
    await store.aclose()  # closing twice is fine
    for call in (write(store), read_everything(store)):
        with pytest.raises(Closed) as raised:
            await call
        assert isinstance(raised.value, (StoreClosed, EventStoreClosed, base))
    assert sorted(await redis.keys(f"*{store.prefix}*")) == before
    assert await redis.ping()  # a store that did not open the client leaves it open


@pytest.mark.parametrize("kind", KINDS)
async def test_from_url_passes_client_options(real_server: ServerProcess, kind: str) -> None:
    store_class = KINDS[kind].store_class
    options = {"client_name": f"rc-{kind}"}
    async with store_class.from_url(real_server.url, client_options=options) as store:
        await read_everything(store)
        names = [c["name"] for c in await store.redis.client_list()]
    assert f"rc-{kind}" in names


async def test_calls_that_get_no_connection_fail_as_not_sent() -> None:
    store = RedisPersistenceStore.from_url("fakeredis://", timeout=5)
    await store.append(envelope(step=0))  # the shard count is recorded
    await asyncio.sleep(0)  # the idle runner gives its connection back
    refused = ConnectionError("connection refused")
    pool = store.redis.connection_pool  # type: ignore[union-attr]
    with mock.patch.object(pool, "get_connection", side_effect=refused):
        results = await asyncio.wait_for(  # a hang guard: queued calls must all be settled
            asyncio.gather(
                *(store.append(envelope(step=s)) for s in range(1, 6)), return_exceptions=True
            ),
            timeout=10,
        )
    for failed in results:
        assert isinstance(failed, StoreUnavailable) and "not sent" in str(failed)
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [0]  # nothing else
    await store.aclose()


async def test_a_pipeline_lost_in_flight_says_its_outcome_is_unknown() -> None:
    store = RedisPersistenceStore.from_url("fakeredis://", timeout=5)
    await store.append(envelope(step=0))

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("connection reset")

    with mock.patch("redis_checkpoint.runner._exchange", side_effect=lost):
        results = await asyncio.gather(
            *(store.append(envelope(step=s)) for s in range(1, 4)), return_exceptions=True
        )
    for failed in results:
        assert isinstance(failed, StoreUnavailable) and "may or may not" in str(failed)
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_scripts_flushed_from_the_server_are_reloaded(redis: Redis, kind: str) -> None:
    k = KINDS[kind]
    store = k.store_class(redis, prefix=fresh_prefix())
    await k.write(store, 0, 1)
    await redis.script_flush()
    await k.write(store, 0, 2)  # one call on its own
    await redis.script_flush()
    await asyncio.gather(*(k.write(store, r, 1) for r in range(1, 8)))  # a pipeline
    await redis.script_flush()
    await k.write(store, 0, 3)
    assert await k.written(store, 0) == [1, 2, 3]
    assert [await k.written(store, r) for r in range(1, 8)] == [[1]] * 7


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("writers", [1, 8])
async def test_a_reply_lost_after_apply_is_not_applied_twice(
    real_server: ServerProcess, kind: str, writers: int
) -> None:
    k = KINDS[kind]
    async with CuttingProxy(real_server.port) as proxy:
        store = k.store_class.from_url(proxy.url, prefix=fresh_prefix())
        await k.write(store, 0, 1)  # connect and load the script first
        proxy.cut_on = b"EVALSHA"
        await asyncio.gather(
            k.write(store, 0, 2), *(k.write(store, r, 1) for r in range(1, writers))
        )
        written = [await k.written(store, r) for r in range(writers)]
        await store.aclose()
    assert proxy.connections >= 2  # the cut really happened and the client reconnected
    assert written == [[1, 2]] + [[1]] * (writers - 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stopped_server_is_unavailable_and_a_restart_recovers(
    server_factory: Callable[[str], ServerProcess], kind: str
) -> None:
    k = KINDS[kind]
    server = server_factory("redis-server")
    store = k.store_class.from_url(server.url, prefix="p", timeout=5)
    await k.write(store, 0, 1)
    server.stop()
    for call in (k.write(store, 0, 2), k.written(store, 0)):
        with pytest.raises(Unavailable) as raised:
            await call
        assert isinstance(raised.value, k.base)
    server.start()  # an empty server: no data, no scripts
    await k.write(store, 0, 1)
    assert await k.written(store, 0) == [1]
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_made_before_a_fork_keeps_the_childrens_writes_apart(
    real_server: ServerProcess, kind: str
) -> None:
    """gunicorn --preload, multiprocessing, Celery prefork: a store made at import time, then
    used by each worker process (here one after the other, on one trace or workflow)."""
    k = KINDS[kind]
    prefix = fresh_prefix()
    store = k.store_class(Redis.from_url(real_server.url), prefix=prefix)
    for n in (1, 2):
        pid = os.fork()
        if pid == 0:  # the worker: one write on its own event loop, then out at once
            code = 1
            try:
                asyncio.run(k.write(store, 0, n))
                code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0

    async def written() -> list[int]:
        async with k.store_class.from_url(real_server.url, prefix=prefix) as reader:
            return await k.written(reader, 0)

    assert asyncio.run(written()) == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unexpected_error_still_comes_out_in_the_stores_tree(
    redis: Redis, kind: str
) -> None:
    k = KINDS[kind]
    store = k.store_class(redis, prefix=fresh_prefix())
    with (
        mock.patch.object(store, "_configure", side_effect=RuntimeError("a bug")),
        pytest.raises(k.base, match="unexpected RuntimeError: a bug") as raised,
    ):
        await k.written(store, 0)
    assert isinstance(raised.value.__cause__, RuntimeError)


@pytest.mark.parametrize("kind", KINDS)
def test_a_child_forked_while_a_call_was_in_flight_writes(
    real_server: ServerProcess, kind: str
) -> None:
    """The parent's runner is busy at the fork (a call in flight); the child's first write
    must not queue behind a call that will never finish there."""
    k = KINDS[kind]
    prefix = fresh_prefix()
    store = k.store_class(Redis.from_url(real_server.url), prefix=prefix, timeout=2)
    store._run._lanes[""] = busy = _Lane()
    busy.busy = True  # as if a call were under way when the process forked
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            asyncio.run(k.write(store, 0, 1))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:  # still waiting: it hung
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid and done[1] == 0

    async def written() -> list[int]:
        async with k.store_class.from_url(real_server.url, prefix=prefix) as reader:
            return await k.written(reader, 0)

    assert asyncio.run(written()) == [1]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_only_replica_is_unavailable_and_nothing_is_written(
    server_factory: Callable[[str], ServerProcess], kind: str
) -> None:
    """What a write meets right after a failover demoted its server: READONLY."""
    k = KINDS[kind]
    primary, replica = server_factory("redis-server"), server_factory("redis-server")
    admin = Redis.from_url(replica.url)
    await admin.replicaof("127.0.0.1", primary.port)
    store = k.store_class.from_url(replica.url, prefix=fresh_prefix(), timeout=2)
    with pytest.raises(Unavailable) as raised:
        await k.write(store, 0, 1)
    assert isinstance(raised.value, k.base) and "read only replica" in str(raised.value)
    assert await admin.dbsize() == 0
    await store.aclose()
    await admin.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_more_concurrent_calls_than_connections_wait_for_one(
    real_server: ServerProcess, kind: str
) -> None:
    k = KINDS[kind]
    options = {"max_connections": 2}
    async with k.store_class.from_url(
        real_server.url, prefix=fresh_prefix(), client_options=options
    ) as store:
        await k.write(store, 0, 1)
        results = await asyncio.gather(*(k.written(store, 0) for _ in range(50)))
    assert results == [[1]] * 50


# -- the script runner borrows a pool connection per send --


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pool_of_one_serves_a_writer_and_readers_in_turn(
    real_server: ServerProcess, kind: str
) -> None:
    """A user's client with redis-py's plain pool of one connection (which fails, rather
    than waits, when none is free): one task's write, then reads, of two stores."""
    k = KINDS[kind]
    client = Redis.from_url(real_server.url, max_connections=1)
    prefix = fresh_prefix()
    store, other = (k.store_class(client, prefix=prefix, timeout=2) for _ in range(2))
    for n in range(1, 21):
        await k.write(store, 0, n)
        assert await k.written(store, 0) == list(range(1, n + 1))
        await asyncio.sleep(0)
        await read_everything(other)
    await client.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_busy_writers_leave_connections_for_readers(
    real_server: ServerProcess, kind: str
) -> None:
    """64 tasks writing without a pause through a pool of one: reads, and the writes of a
    second store on the same client, each get their turn within the deadline."""
    k = KINDS[kind]
    store = k.store_class.from_url(
        real_server.url, prefix=fresh_prefix(), timeout=2, client_options={"max_connections": 1}
    )
    other = k.store_class(store.redis, prefix=store.prefix, timeout=2)
    stop = time.monotonic() + 1.5

    async def writer(record: int) -> int:
        n = 0
        while time.monotonic() < stop:
            n += 1
            await k.write(store, record, n)
        return n

    async def turns() -> int:
        reads = 0
        while time.monotonic() < stop:
            await k.write(other, 100 + reads, 1)
            assert await k.written(other, 100 + reads) == [1]
            reads += 1
        return reads

    *written, reads = await asyncio.gather(*(writer(r) for r in range(64)), turns())
    assert reads >= 3 and min(written) >= 1
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_lost_while_scripts_reload_is_retried(
    real_server: ServerProcess, kind: str
) -> None:
    """SCRIPT FLUSH, then the connection drops as the lost scripts are loaded again: the
    client's retry sends that round again, and the write is applied once."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    import redis_checkpoint.runner as runner

    k = KINDS[kind]
    store = k.store_class.from_url(real_server.url, prefix=fresh_prefix(), timeout=5)
    await k.write(store, 0, 1)
    real, dropped = runner._exchange, list[list[bytes]]()

    async def exchange(connection: Any, commands: list[bytes], count: int) -> list[Any]:
        if not dropped and any(b"SCRIPT" in command[:32] for command in commands):
            dropped.append(commands)
            await connection.disconnect()
            raise RedisConnectionError("connection reset while loading scripts")
        return await real(connection, commands, count)

    await store.redis.script_flush()
    with mock.patch.object(runner, "_exchange", exchange):
        await k.write(store, 0, 2)
    assert dropped and await k.written(store, 0) == [1, 2]
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_check_reports_the_server_and_warns_of_what_it_cannot_keep(
    real_server: ServerProcess, kind: str
) -> None:
    k = KINDS[kind]
    store = k.store_class.from_url(real_server.url, prefix=fresh_prefix(), replicas=2)
    report = await store.check()
    assert report["server"] in ("redis", "valkey") and report["role"] == "master"
    assert report["replicas"] == 2 and report["replicas_connected"] == 0
    assert report[f"{k.store_class.index}_indexed"] == 0 and report["shards"] == 64
    assert report["appendonly"] is False
    warned = " | ".join(report["warnings"])
    assert "replicas=2, but 0 replicas are connected" in warned and "appendonly is off" in warned
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_check_reports_every_primary_of_a_cluster(
    redis_cluster: ClusterProcess, kind: str
) -> None:
    k = KINDS[kind]
    store = k.store_class.from_url(redis_cluster.url, prefix=fresh_prefix(), replicas=2)
    report = await store.check()
    await store.aclose()
    primaries = report["primaries"]
    assert sorted(p["node"] for p in primaries) == sorted(
        f"127.0.0.1:{server.port}" for server in redis_cluster.primaries()
    )
    assert all(p["role"] == "master" and p["replicas_connected"] == 1 for p in primaries)
    assert report["cluster_state"] == "ok" and report["replicas_connected"] == 1
    warned = [w for w in report["warnings"] if "replicas=2, but 1 replicas" in w]
    assert len(warned) == 3  # one per primary, naming it
