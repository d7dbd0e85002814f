"""What both Redis stores promise beyond their contracts, written once and run over both
stores (and, where the server matters, over fakeredis, Redis and Valkey): arguments and
URLs fail in the calling store's tree, reads never write, a closed store stays closed, a
failed pipeline settles every call in it, listings are exact and `load` reads in pages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest import mock

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
from redis_checkpoint import redis_store as checkpoint_module
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.aion import TOKEN, T, started, wid
from redis_checkpoint.conformance.servers import ServerProcess
from redis_checkpoint.events import ConfigMismatch as EventConfigMismatch
from redis_checkpoint.events import CorruptRecord as EventCorruptRecord
from redis_checkpoint.events import (
    RedisEventStore,
    StoreError,
    WorkflowFilter,
)
from redis_checkpoint.events import StoreClosed as EventStoreClosed
from redis_checkpoint.failures import BadArgument, Closed, Corrupt, Misconfigured

from .conftest import client, fresh_prefix

STORES: dict[str, tuple[Any, type[Exception]]] = {
    "checkpoints": (RedisPersistenceStore, PersistenceError),
    "events": (RedisEventStore, StoreError),
}


@pytest.fixture(params=["fakeredis", "redis", "valkey"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    r = client(request, request.param)
    yield r
    await r.aclose()


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


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize(
    "options",
    [{"prefix": "{x"}, {"prefix": ""}, {"shards": 0}, {"shards": True}, {"timeout": 0}],
)
def test_bad_constructor_arguments_raise_in_the_stores_tree(
    kind: str, options: dict[str, Any]
) -> None:
    store_class, base = STORES[kind]
    with pytest.raises(base) as raised:
        store_class(fakeredis.FakeAsyncRedis(), **options)
    assert isinstance(raised.value, BadArgument) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0/1",
        "http://127.0.0.1/0",
        "redis://:secret@127.0.0.1:xx/0",
    ],
)
def test_bad_urls_raise_in_the_stores_tree(kind: str, url: str) -> None:
    store_class, base = STORES[kind]
    with pytest.raises(base) as raised:
        store_class.from_url(url)
    assert isinstance(raised.value, BadArgument) and "secret" not in str(raised.value)


@pytest.mark.parametrize("kind", STORES)
async def test_reads_never_write(redis: Redis, kind: str) -> None:
    store = STORES[kind][0](redis, prefix=fresh_prefix())
    async with store:
        await read_everything(store)
    assert await redis.keys(f"*{store.prefix}*") == []  # not even the shard-count record


@pytest.mark.parametrize("kind", STORES)
async def test_the_first_write_records_the_shard_count(redis: Redis, kind: str) -> None:
    prefix = fresh_prefix()
    store_class = STORES[kind][0]
    await read_everything(store_class(redis, prefix=prefix, shards=4))  # records nothing
    await write(store_class(redis, prefix=prefix, shards=8))
    with pytest.raises(Misconfigured, match="set up with 8 shards") as raised:
        await read_everything(store_class(redis, prefix=prefix, shards=4))
    assert isinstance(raised.value, (ConfigMismatch, EventConfigMismatch))
    assert isinstance(raised.value, STORES[kind][1])


@pytest.mark.parametrize("kind", STORES)
async def test_a_corrupt_shard_record_is_corrupt_data_of_the_tree(redis: Redis, kind: str) -> None:
    store_class, base = STORES[kind]
    store = store_class(redis, prefix=fresh_prefix())
    await redis.hset(f"{store.prefix}:config", "shards", "lots")
    with pytest.raises(Corrupt, match="config") as raised:
        await write(store)
    assert isinstance(raised.value, base)
    assert isinstance(raised.value, (CorruptRecord, EventCorruptRecord))


@pytest.mark.parametrize("kind", STORES)
async def test_a_closed_store_refuses_every_call_and_writes_nothing(
    redis: Redis, kind: str
) -> None:
    store_class, base = STORES[kind]
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


@pytest.mark.parametrize("kind", STORES)
async def test_from_url_passes_client_options(real_server: ServerProcess, kind: str) -> None:
    store_class = STORES[kind][0]
    options = {"client_name": f"rc-{kind}"}
    async with store_class.from_url(real_server.url, client_options=options) as store:
        await read_everything(store)
        names = [c["name"] for c in await store.redis.client_list()]
    assert f"rc-{kind}" in names


async def test_a_pipeline_that_cannot_be_built_settles_every_call() -> None:
    store = RedisPersistenceStore.from_url("fakeredis://", timeout=5)
    await store.append(envelope(step=0))  # the shard count is recorded
    real = store.redis.pipeline
    with mock.patch.object(store.redis, "pipeline", side_effect=RuntimeError("boom")):
        results = await asyncio.wait_for(  # a hang guard: queued calls must all be settled
            asyncio.gather(
                *(store.append(envelope(step=s)) for s in range(1, 6)), return_exceptions=True
            ),
            timeout=10,
        )
    assert results[0] is None  # the first call goes alone, without a pipeline
    for failed in results[1:]:
        assert isinstance(failed, StoreUnavailable) and "could not be built" in str(failed)
    store.redis.pipeline = real  # type: ignore[method-assign]
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [0, 1]  # nothing else
    await store.aclose()


async def test_a_pipeline_lost_in_flight_says_its_outcome_is_unknown() -> None:
    store = RedisPersistenceStore.from_url("fakeredis://", timeout=5)
    await store.append(envelope(step=0))

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("connection reset")

    real = store.redis.pipeline

    def pipeline(**kwargs: Any) -> Any:
        pipe = real(**kwargs)
        pipe.execute = lost  # type: ignore[method-assign]
        return pipe

    with mock.patch.object(store.redis, "pipeline", side_effect=pipeline):
        results = await asyncio.gather(
            *(store.append(envelope(step=s)) for s in range(1, 4)), return_exceptions=True
        )
    for failed in results[1:]:
        assert isinstance(failed, StoreUnavailable) and "may or may not" in str(failed)
    await store.aclose()


# -- listings --------------------------------------------------------------------------


@pytest.fixture
async def real(real_server: ServerProcess) -> AsyncIterator[Redis]:
    """A client of each real server: expiry and TIME as only a server keeps them."""
    r = Redis.from_url(real_server.url)
    yield r
    await r.aclose()


async def test_listing_skips_no_live_trace_among_expired_ones(real: Redis) -> None:
    redis, prefix = real, fresh_prefix()
    live = RedisPersistenceStore(redis, prefix=prefix, shards=1)
    dying = RedisPersistenceStore(redis, prefix=prefix, shards=1, ttl=0.05)
    await live.append_many([envelope("live-0")])
    for n in range(1, 200):
        await live.append(envelope(f"live-{n}"))
    for n in range(100):
        await dying.append(envelope(f"dead-{n}"))
    await asyncio.sleep(0.15)
    listed = [s.trace_id async for s in live.iter_traces(page=30)]
    assert sorted(listed) == sorted(f"live-{n}" for n in range(200))
    keys = live.keys("live-0")
    assert await redis.zcard(keys.index) == 200  # a full listing leaves nothing stale
    assert await redis.zcard(keys.expiry) == 0


async def test_writes_during_a_listing_neither_hide_nor_repeat_a_trace(redis: Redis) -> None:
    store = RedisPersistenceStore(redis, prefix=fresh_prefix(), shards=4)
    ids = [f"t{n:02}" for n in range(40)]
    for trace_id in ids:
        await store.append(envelope(trace_id))
    listed: list[str] = []
    async for summary in store.iter_traces(page=4):
        listed.append(summary.trace_id)
        if len(listed) % 5 == 0:  # rewrite one already listed and one not yet listed
            await store.append(envelope(listed[0], step=len(listed)))
            pending = [t for t in ids if t not in listed]
            if pending:
                await store.append(envelope(pending[-1], step=len(listed)))
    assert sorted(listed) == ids  # each exactly once


async def test_a_trace_recreated_meanwhile_stays_listed(redis: Redis) -> None:
    store = RedisPersistenceStore(redis, prefix=fresh_prefix(), shards=1)
    await store.append(envelope("back"))
    keys = store.keys("back")
    await store._forget(keys.meta, [(keys.index, keys.raw_id)])  # it exists: nothing happens
    assert await redis.zscore(keys.index, "back") is not None
    await redis.delete(keys.meta)  # as if it expired
    await store._forget(keys.meta, [(keys.index, keys.raw_id)])
    assert await redis.zscore(keys.index, "back") is None


async def test_index_times_are_the_servers_whatever_the_client_clock(real: Redis) -> None:
    store = RedisPersistenceStore(real, prefix=fresh_prefix(), shards=1, ttl=60)
    with mock.patch("time.time", return_value=time.time() + 7200):  # a client two hours ahead
        await store.append(envelope("skewed"))
    await store.append(envelope("other"))  # its sweep must not unlist the first
    assert {s.trace_id async for s in store.iter_traces()} == {"skewed", "other"}


# -- paged reads ---------------------------------------------------------------------


async def test_load_and_iter_events_read_a_snapshot_in_pages(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "PAGE", 4)
    store = RedisPersistenceStore(redis, prefix=fresh_prefix())
    await store.append_many(envelope(step=s % 3, payload=s) for s in range(23))
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == 23
    assert [e.step for e in trace.events] == sorted(s % 3 for s in range(23))
    seen = []
    async for event in store.iter_events("trace-1"):
        seen.append(event.payload)
        if len(seen) == 5:  # appended after the read started: not part of its snapshot
            await store.append(envelope(step=9, payload="late"))
    assert seen == list(range(23))


async def test_iter_events_refuses_a_trace_recreated_under_it(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "PAGE", 4)
    store = RedisPersistenceStore(redis, prefix=fresh_prefix())
    await store.append_many(envelope(step=s) for s in range(10))
    events = store.iter_events("trace-1")
    assert (await anext(events)).step == 0
    await store.delete("trace-1")
    await asyncio.sleep(0.002)  # a new creation time
    await store.append_many(envelope(step=s, circuit="Reborn") for s in range(10))
    with pytest.raises(StoreUnavailable, match="deleted"):
        [e async for e in events]


async def test_loading_a_huge_trace_never_blocks_the_server(
    server_factory: Callable[[str], ServerProcess],
) -> None:
    server = server_factory("redis-server")
    async with RedisPersistenceStore.from_url(server.url, max_batch_bytes=2**24) as store:
        for start in range(0, 30_000, 5_000):
            await store.append_many(
                envelope(step=s, payload="x" * 200) for s in range(start, start + 5_000)
            )
        await store.redis.config_set("slowlog-log-slower-than", 3000)  # µs
        await store.redis.slowlog_reset()
        trace = await store.load("trace-1")
        assert trace is not None and len(trace.events) == 30_000
        slow = [entry["command"] for entry in await store.redis.slowlog_get(100)]
    assert [c for c in slow if b"XRANGE" in c.upper()] == []
