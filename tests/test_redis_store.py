"""What only a Redis backend can show: slots, TTLs on keys, scripts lost, faults, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest import mock

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from redis_checkpoint import (
    CompletionState,
    CorruptRecord,
    Intervention,
    RedisPersistenceStore,
    StoreUnavailable,
    TraceNotFound,
)
from redis_checkpoint import redis_store as checkpoint_module
from redis_checkpoint.codec import encode_envelope
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.checkpoints import HOSTILE_IDS
from redis_checkpoint.conformance.servers import ServerProcess
from redis_checkpoint.connection import close
from redis_checkpoint.scripts import Reply

from . import conftest
from .conftest import fresh_prefix, record_script_calls


@pytest.fixture(params=["redis", "valkey", "redis-cluster", "valkey-cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    redis = conftest.client(request, request.param)
    yield redis
    await close(redis)


@pytest.fixture
def store(client: Redis) -> RedisPersistenceStore:
    return RedisPersistenceStore(client, prefix=fresh_prefix())


async def test_every_call_touches_one_cluster_slot(store: RedisPersistenceStore) -> None:
    calls = record_script_calls(store)
    for trace_id in HOSTILE_IDS:
        await store.append_many([envelope(trace_id, step=1), envelope(trace_id, step=2)])
        await store.resume(trace_id, 1)
        await store.save_intervention(trace_id, Intervention(target_node="n", timestamp_ms=1))
        await store.complete(trace_id, CompletionState.SUCCESS)
        await store.delete(trace_id)
        assert len({key_slot(k.encode()) for k in (*store.keys(trace_id).own,)}) == 1  # load
    assert {name for name, _ in calls} == {
        "append",
        "resume",
        "save_intervention",
        "complete",
        "delete",
    }
    for name, keys in calls:
        assert len(keys) == 6 and len({key_slot(k.encode()) for k in keys}) == 1, name


async def test_ttl_is_set_on_every_key_by_the_write(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), ttl=60, completed_ttl=5)
    await store.append(envelope())
    await store.save_intervention("trace-1", Intervention(target_node="n", timestamp_ms=1))
    keys = store.keys("trace-1")
    assert all(50_000 < ttl <= 60_000 for ttl in [await client.pttl(k) for k in keys.own])
    await store.complete("trace-1", CompletionState.SUCCESS)
    assert all(0 < ttl <= 5_000 for ttl in [await client.pttl(k) for k in keys.own])


async def test_expired_traces_leave_the_shard_indexes(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=1, ttl=0.1)
    for n in range(5):
        await store.append(envelope(f"old-{n}"))
    await asyncio.sleep(0.25)
    await store.append(envelope("new"))  # any write sweeps its shard's expired entries
    keys = store.keys("new")
    assert await client.zrange(keys.index, 0, -1) == [b"new"]
    assert await client.zrange(keys.expiry, 0, -1) == [b"new"]


async def test_a_copy_of_an_applied_call_is_recognised(store: RedisPersistenceStore) -> None:
    keys = store.keys("trace-1")
    blob = encode_envelope(envelope())
    argv = (b"producer", 7, keys.raw_id, b"", b"Flow", b"1.0", blob)
    assert await store._script("append", keys.script, argv) == [0, 1]
    assert await store._script("append", keys.script, argv) == [Reply.DUPLICATE, b""]
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == 1


@pytest.mark.parametrize("part", ["meta", "stream", "interventions"])
async def test_wrong_type_key_is_corrupt_record_naming_it(
    store: RedisPersistenceStore, client: Redis, part: str
) -> None:
    await store.append(envelope("victim"))
    await store.append(envelope("bystander"))
    key = getattr(store.keys("victim"), part)
    await client.delete(key)
    await client.sadd(key, "garbage")
    with pytest.raises(CorruptRecord, match=key.replace("{", r"\{").replace("}", r"\}")):
        await store.load("victim")
    if part != "interventions":
        with pytest.raises(CorruptRecord, match="victim"):
            await store.append(envelope("victim", step=2))
    assert (await store.load("bystander")) is not None
    await store.append(envelope("bystander", step=2))


async def test_undecodable_entry_is_corrupt_record(
    store: RedisPersistenceStore, client: Redis
) -> None:
    await store.append(envelope("victim"))
    keys = store.keys("victim")
    await client.xadd(keys.stream, {"e": b"\xc1 not msgpack"}, id="0-2")
    await client.hset(keys.meta, "n", 2)
    with pytest.raises(CorruptRecord, match="undecodable envelope: not msgpack"):
        await store.load("victim")
    await client.hset(keys.meta, "resumed", "not a number")
    with pytest.raises(CorruptRecord):
        await store.load("victim")


async def test_corrupt_index_fails_the_write_before_anything_is_written(
    store: RedisPersistenceStore, client: Redis
) -> None:
    keys = store.keys("trace-1")
    await client.set(keys.index, "garbage")
    with pytest.raises(CorruptRecord, match="traces"):
        await store.append(envelope())
    assert await client.exists(keys.stream, keys.meta) == 0


async def test_from_url_rejects_unknown_schemes() -> None:
    from redis_checkpoint import InvalidInput

    with pytest.raises(InvalidInput, match="unsupported URL"):
        RedisPersistenceStore.from_url("http://localhost")


async def test_check_reports_the_server(store: RedisPersistenceStore) -> None:
    await store.append(envelope())
    report = await store.check()
    assert report["server"] in ("redis", "valkey")
    assert report["traces_indexed"] == 1 and report["shards"] == 64


async def test_listing_skips_a_corrupt_trace_and_names_a_corrupt_index(
    store: RedisPersistenceStore, client: Redis
) -> None:
    await store.append(envelope("victim"))
    await store.append(envelope("bystander"))
    await client.delete(store.keys("victim").meta)
    await client.set(store.keys("victim").meta, "garbage")
    assert [s.trace_id async for s in store.iter_traces()] == ["bystander"]
    index = store.keys("bystander").index
    await client.delete(index)
    await client.set(index, "garbage")
    with pytest.raises(CorruptRecord, match="traces"):
        [s async for s in store.iter_traces()]


async def test_from_url_over_a_unix_socket(real_server: ServerProcess) -> None:
    async with RedisPersistenceStore.from_url(f"unix://{real_server.socket}", prefix="u") as store:
        await store.append(envelope())
        assert (await store.check())["traces_indexed"] == 1


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_bad_size_limit_is_refused(client: Redis, size: Any) -> None:
    from redis_checkpoint import InMemoryPersistenceStore, InvalidInput

    with pytest.raises(InvalidInput, match="max_envelope_bytes"):
        RedisPersistenceStore(client, max_envelope_bytes=size)
    with pytest.raises(InvalidInput, match="max_envelope_bytes"):
        InMemoryPersistenceStore(max_envelope_bytes=size)


async def test_server_refusals_are_not_reported_as_corruption(
    server_factory: Callable[[str], ServerProcess],
) -> None:
    from redis_checkpoint import PersistenceError

    server = server_factory("redis-server")
    async with RedisPersistenceStore.from_url(server.url, prefix="p") as store:
        await store.append(envelope(step=1))
        await store.redis.config_set("maxmemory", 1)  # every write is now refused: OOM
        with pytest.raises(PersistenceError, match="maxmemory") as refused:
            await store.append(envelope(step=2))
        assert not isinstance(refused.value, CorruptRecord)
        await store.redis.config_set("maxmemory", 0)
        await store.append(envelope(step=2))
        trace = await store.load("trace-1")
        assert trace is not None and [e.step for e in trace.events] == [1, 2]


# -- listings --------------------------------------------------------------------------


async def test_listing_skips_no_live_trace_among_expired_ones(client: Redis) -> None:
    redis, prefix = client, fresh_prefix()
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


async def test_writes_during_a_listing_neither_hide_nor_repeat_a_trace(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=4)
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


async def test_a_trace_recreated_meanwhile_stays_listed(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=1)
    await store.append(envelope("back"))
    keys = store.keys("back")
    await store._forget(keys.meta, [(keys.index, keys.raw_id)])  # it exists: nothing happens
    assert await client.zscore(keys.index, "back") is not None
    await client.delete(keys.meta)  # as if it expired
    await store._forget(keys.meta, [(keys.index, keys.raw_id)])
    assert await client.zscore(keys.index, "back") is None


async def test_index_times_are_the_servers_whatever_the_client_clock(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=1, ttl=60)
    with mock.patch("time.time", return_value=time.time() + 7200):  # a client two hours ahead
        await store.append(envelope("skewed"))
    await store.append(envelope("other"))  # its sweep must not unlist the first
    assert {s.trace_id async for s in store.iter_traces()} == {"skewed", "other"}


# -- paged reads ---------------------------------------------------------------------


async def test_load_and_iter_events_read_a_snapshot_in_pages(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "PAGE", 4)
    store = RedisPersistenceStore(client, prefix=fresh_prefix())
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
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "PAGE", 4)
    store = RedisPersistenceStore(client, prefix=fresh_prefix())
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
        for start in range(0, 60_000, 5_000):
            await store.append_many(
                envelope(step=s, payload="x" * 200) for s in range(start, start + 5_000)
            )
        # One XRANGE of all 60,000 takes 35 ms or more here; a page of 1,000 a few. The margin
        # is for a loaded machine, where a command's wall time stretches.
        await store.redis.config_set("slowlog-log-slower-than", 15_000)  # µs
        await store.redis.slowlog_reset()
        trace = await store.load("trace-1")
        assert trace is not None and len(trace.events) == 60_000
        slow = [entry["command"] for entry in await store.redis.slowlog_get(100)]
    assert [c for c in slow if b"XRANGE" in c.upper()] == []


async def test_calls_applied_out_of_number_order_are_each_applied_once(
    store: RedisPersistenceStore,
) -> None:
    """A call re-sent after NOSCRIPT leaves after later ones: the flags must still mark the
    right calls (5, 3, 4, then a copy of 3)."""
    keys = store.keys("trace-1")

    blob = encode_envelope(envelope())

    async def call(number: int) -> list[Any]:
        argv = (b"producer", number, keys.raw_id, b"", b"Flow", b"1.0", blob)
        reply: list[Any] = await store._script("append", keys.script, argv)
        return reply

    assert [(await call(n))[0] for n in (5, 3, 4, 3)] == [0, 0, 0, Reply.DUPLICATE]
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == 3


async def test_a_pipeline_of_cached_and_lost_scripts_loses_no_write(
    store: RedisPersistenceStore, client: Redis
) -> None:
    other = RedisPersistenceStore(client, prefix=store.prefix)
    await other.append(envelope(step=1))  # the trace exists; `store` has never written it
    await client.script_flush()
    item = Intervention(target_node="m", timestamp_ms=3)
    with pytest.raises(TraceNotFound):  # loads the save_intervention script, not append's
        await store.save_intervention("missing", item)
    await asyncio.gather(  # the appends get NOSCRIPT and are re-sent after the last call
        store.save_intervention("missing", item),
        store.append(envelope(step=2)),
        store.append(envelope(step=3)),
        store.save_intervention("trace-1", item),
        return_exceptions=True,
    )
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [1, 2, 3]
    assert trace.interventions == [item]


async def test_a_trace_written_all_through_a_listing_is_listed(client: Redis) -> None:
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=2)
    for n in range(20):
        await store.append(envelope(f"idle-{n}"))
    await store.append(envelope("hot"))
    writer = RedisPersistenceStore(client, prefix=store.prefix, shards=2)
    stop = asyncio.Event()

    async def keep_writing() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            await writer.append(envelope("hot", step=step))

    task = asyncio.create_task(keep_writing())
    try:
        for _ in range(20):
            listed = [s.trace_id async for s in store.iter_traces(page=3)]
            assert sorted(listed) == sorted(["hot", *(f"idle-{n}" for n in range(20))])
    finally:
        stop.set()
        await task


async def test_a_trace_without_ttl_stays_listed_beside_stores_with_one(client: Redis) -> None:
    prefix = fresh_prefix()
    short = RedisPersistenceStore(client, prefix=prefix, shards=1, ttl=0.1)
    forever = RedisPersistenceStore(client, prefix=prefix, shards=1)
    await short.append(envelope("t"))
    await asyncio.sleep(0.15)  # t expires
    await forever.append(envelope("t"))  # and comes back, kept forever
    await asyncio.sleep(0.15)
    await short.append(envelope("other"))  # a write that sweeps the shard's deadlines
    assert {s.trace_id async for s in forever.iter_traces()} == {"t", "other"}


async def test_a_write_without_ttl_keeps_a_trace_a_ttl_store_wrote(client: Redis) -> None:
    prefix = fresh_prefix()
    short = RedisPersistenceStore(client, prefix=prefix, ttl=0.2)
    forever = RedisPersistenceStore(client, prefix=prefix)
    await short.append(envelope(step=1))
    await forever.append(envelope(step=2))  # from now on the trace is kept
    await asyncio.sleep(0.3)
    trace = await forever.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [1, 2]
    assert [s.trace_id async for s in forever.iter_traces()] == ["trace-1"]


async def test_a_corrupt_trace_hides_no_other_from_a_listing(
    store: RedisPersistenceStore, client: Redis
) -> None:
    for trace_id in ("good", "bad-n", "bad-completion"):
        await store.append(envelope(trace_id))
    await client.hset(store.keys("bad-n").meta, "n", "many")
    await client.hset(store.keys("bad-completion").meta, "completion", "Maybe")
    await client.zadd(store.keys("good").index, {b"\xff\xfe not utf-8": 1})
    assert [s.trace_id async for s in store.iter_traces()] == ["good"]


async def test_a_trace_moved_twice_during_a_listing_is_listed(client: Redis) -> None:
    """X is rewritten before the first read reaches it, then again while what moved is
    read; traces already listed move too (so a read may find nothing new)."""
    store = RedisPersistenceStore(client, prefix=fresh_prefix(), shards=1)
    writer = RedisPersistenceStore(client, prefix=store.prefix, shards=1)
    for trace_id in ("X", "A", "B"):
        await writer.append(envelope(trace_id, step=0))
        await asyncio.sleep(0.002)
    real, reads = store._commands, []

    async def read(commands: Any) -> list[Any]:
        replies = await real(commands)
        if commands[0][0].startswith(("ZREVRANGEBYSCORE", "ZRANGEBYSCORE")):
            reads.append(commands[0][0])
            if len(reads) == 2:  # B listed, A in hand, X not reached yet
                await writer.append(envelope("X", step=1))
                await asyncio.sleep(0.002)
                await writer.append(envelope("A", step=1))
                await writer.append(envelope("B", step=1))
                await asyncio.sleep(0.002)
            if len(reads) == 4:
                await asyncio.sleep(0.002)
                await writer.append(envelope("X", step=2))
        return replies

    store._commands = read  # type: ignore[method-assign]
    listed = [s.trace_id async for s in store.iter_traces(page=1)]
    assert sorted(listed) == ["A", "B", "X"]
