"""What only a Redis backend can show: slots, TTLs on keys, scripts lost, faults, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from redis_checkpoint import (
    CompletionState,
    ConfigMismatch,
    CorruptRecord,
    Intervention,
    RedisPersistenceStore,
    StoreUnavailable,
)
from redis_checkpoint.client import DEFAULT_TIMEOUT, client_defaults
from redis_checkpoint.codec import encode_envelope
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.checkpoints import HOSTILE_IDS
from redis_checkpoint.conformance.servers import ServerProcess
from redis_checkpoint.scripts import Reply

from .conftest import fresh_prefix, record_script_calls
from .proxy import CuttingProxy


@pytest.fixture
async def client(real_server: ServerProcess) -> AsyncIterator[Redis]:
    redis = Redis.from_url(real_server.url, **client_defaults(DEFAULT_TIMEOUT))
    yield redis
    await redis.aclose()


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
        assert len(keys) == 7 and len({key_slot(k.encode()) for k in keys}) == 1, name


async def test_shard_count_is_fixed_per_prefix(client: Redis) -> None:
    prefix = fresh_prefix()
    await RedisPersistenceStore(client, prefix=prefix, shards=64).append(envelope())
    with pytest.raises(ConfigMismatch, match=r"set up with 64 shards.*shards=64"):
        await RedisPersistenceStore(client, prefix=prefix, shards=32).load("trace-1")
    with pytest.raises(ConfigMismatch):
        async with RedisPersistenceStore(client, prefix=prefix, shards=8):
            pass
    assert await RedisPersistenceStore(client, prefix=prefix, shards=64).load("trace-1")


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
    argv = (b"producer", 7, keys.raw_id, 0, 0, b"", 1000, b"Flow", b"1.0", blob)
    assert await store._run("append", keys.script, argv) == [0, 1]
    assert await store._run("append", keys.script, argv) == [Reply.DUPLICATE, b""]
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == 1


@pytest.mark.parametrize("writers", [1, 8])
async def test_reply_lost_after_apply_is_not_applied_twice(
    real_server: ServerProcess, writers: int
) -> None:
    async with CuttingProxy(real_server.port) as proxy:
        store = RedisPersistenceStore.from_url(proxy.url, prefix=fresh_prefix())
        await store.append(envelope(step=0))  # connect and load the script first
        await store.save_intervention("trace-1", Intervention(target_node="n", timestamp_ms=1))
        proxy.cut_on = b"EVALSHA"
        await asyncio.gather(
            *(store.append(envelope(step=1, kind=f"w{w}")) for w in range(writers))
        )
        proxy.cut_on = b"EVALSHA"
        await store.save_intervention("trace-1", Intervention(target_node="m", timestamp_ms=2))
        trace = await store.load("trace-1")
        await store.aclose()
    assert proxy.connections >= 3  # the cuts really happened and the client reconnected
    assert trace is not None
    assert sorted(e.outcome_kind for e in trace.events) == ["Next"] + [
        f"w{w}" for w in range(writers)
    ]
    assert [i.target_node for i in trace.interventions] == ["n", "m"]


async def test_scripts_flushed_from_the_server_are_reloaded(
    store: RedisPersistenceStore, client: Redis
) -> None:
    await store.append(envelope(step=1))
    await client.script_flush()
    await store.append(envelope(step=2))  # one call on its own
    await client.script_flush()
    await asyncio.gather(*(store.append(envelope(step=s)) for s in range(3, 10)))  # a pipeline
    await client.script_flush()
    await store.complete("trace-1", CompletionState.SUCCESS)
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == list(range(1, 10))
    assert trace.completion is CompletionState.SUCCESS


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
    with pytest.raises(CorruptRecord, match="undecodable"):
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


async def test_server_down_is_store_unavailable_and_restart_recovers(
    server_factory: Callable[[str], ServerProcess],
) -> None:
    server = server_factory("redis-server")
    store = RedisPersistenceStore.from_url(server.url, prefix="p")
    await store.append(envelope(step=1))
    server.stop()
    for call in (store.append(envelope(step=2)), store.load("trace-1"), store.delete("x")):
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(call, timeout=20)  # a hang guard, not a speed check
    server.start()  # an empty server: no data, no scripts
    await store.append(envelope(step=3))
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [3]
    await store.aclose()


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
