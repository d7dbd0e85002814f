"""The tiered stores: both conformance suites in both modes (write-behind on Redis in front
of PostgreSQL, write-through on Valkey in front of SQLite), and the invariants of the tier:
no read returns less than was acknowledged, across eviction too, and the contract holds for
records the cache no longer has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from redis_checkpoint import (
    CircuitMismatch,
    CompletionState,
    Intervention,
    InvalidInput,
    RedisPersistenceStore,
    SqlitePersistenceStore,
    TieredPersistenceStore,
    TraceCompleted,
    TraceNotFound,
)
from redis_checkpoint.conformance import CheckpointConformance, StoreFactory
from redis_checkpoint.conformance.aion import TOKEN, act, started, wid
from redis_checkpoint.conformance.checkpoints import envelope
from redis_checkpoint.conformance.events import EventStoreConformance, EventStoreFactory
from redis_checkpoint.conformance.visibility import VisibilityConformance
from redis_checkpoint.connection import close
from redis_checkpoint.events import (
    InvalidArgument,
    RedisEventStore,
    SequenceConflict,
    SqliteEventStore,
    TieredEventStore,
)
from redis_checkpoint.events.sql_store import SqlEventStore
from redis_checkpoint.sql_store import SqlPersistenceStore

from .conftest import TIERED_BACKENDS, tiered_parts

CACHE_ONLY = ("ttl", "completed_ttl", "idempotency_window")


@pytest.fixture(params=TIERED_BACKENDS)
async def tiered_checkpoints(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Tiered checkpoint stores of one mode; the stores one test makes share their data."""
    redis, prefix, url, mode = tiered_parts(request)
    opened: list[TieredPersistenceStore] = []

    async def make(**options: Any) -> TieredPersistenceStore:
        limits = {k: v for k, v in options.items() if k not in CACHE_ONLY}
        cache = RedisPersistenceStore(redis, prefix=prefix, **options)
        durable = SqlPersistenceStore.open(url, dict(limits))
        opened.append(TieredPersistenceStore(cache, durable, mode=mode))
        return opened[-1]

    yield make
    for store in opened:
        await store.aclose()
    await close(redis)


@pytest.fixture(params=TIERED_BACKENDS)
async def tiered_events(request: pytest.FixtureRequest) -> AsyncIterator[EventStoreFactory]:
    """Tiered event stores of one mode; the stores one test makes share their data."""
    redis, prefix, url, mode = tiered_parts(request)
    opened: list[TieredEventStore] = []

    async def make() -> TieredEventStore:
        durable = SqlEventStore.open(url, {})
        cache = RedisEventStore(redis, prefix=prefix)
        opened.append(TieredEventStore(cache, durable, mode=mode))
        return opened[-1]

    yield make
    for store in opened:
        await store.aclose()
    await close(redis)


class TestTieredCheckpoints(CheckpointConformance):
    """The checkpoint suite; its retention cases become the tier's: the cache's TTLs evict
    from Redis only, and the trace reads back whole from the durable store."""

    @pytest.fixture
    def make_store(self, tiered_checkpoints: StoreFactory) -> StoreFactory:
        return tiered_checkpoints

    async def test_ttl_expires_idle_traces(self, make_store: StoreFactory) -> None:
        store = await make_store(ttl=0.4)
        assert isinstance(store, TieredPersistenceStore)
        for step in range(3):
            await store.append(envelope("idle", step=step))
        await store.save_intervention("idle", Intervention(target_node="n", timestamp_ms=1))
        before = await store.load("idle")
        await store.flush()
        await asyncio.sleep(0.4 + self.expiry_margin)
        keys = store.cache.keys("idle")
        assert await store.cache.redis.exists(*keys.own) == 0  # evicted from Redis
        assert await store.load("idle") == before  # and read whole from the database
        assert await store.cache.redis.exists(keys.meta) == 1  # warmed again
        assert [s.trace_id async for s in store.iter_traces()] == ["idle"]

    async def test_completed_ttl_applies_on_complete(self, make_store: StoreFactory) -> None:
        store = await make_store(completed_ttl=0.2)
        assert isinstance(store, TieredPersistenceStore)
        await store.append(envelope("done", step=1))
        await store.complete("done", CompletionState.SUCCESS)
        await store.flush()
        await asyncio.sleep(0.2 + self.expiry_margin)
        assert await store.cache.redis.exists(store.cache.keys("done").meta) == 0
        trace = await store.load("done")
        assert trace is not None and trace.completion is CompletionState.SUCCESS
        await store.save_intervention("done", Intervention(target_node="n", timestamp_ms=1))
        with pytest.raises(TraceNotFound):
            await store.save_intervention("never", Intervention(target_node="n", timestamp_ms=1))


class TestTieredEvents(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, tiered_events: EventStoreFactory) -> EventStoreFactory:
        return tiered_events


# -- the tier's invariants, in every mode -------------------------------------------------


async def evict(store: TieredPersistenceStore | TieredEventStore, *keys: str) -> None:
    """What an eviction does: the cache loses keys (flushed first: write-behind holds
    records with unflushed changes, which no TTL or volatile-* policy evicts)."""
    await store.flush()
    await store.cache.redis.delete(*keys)


async def test_the_contract_holds_for_a_trace_evicted_from_the_cache(
    tiered_checkpoints: StoreFactory,
) -> None:
    store = await tiered_checkpoints()
    assert isinstance(store, TieredPersistenceStore)
    await store.append(envelope("done", step=1))
    await store.complete("done", CompletionState.SUCCESS)
    await store.append(envelope("other", step=1, circuit="A"))
    await evict(store, *store.cache.keys("done").own, *store.cache.keys("other").own)
    with pytest.raises(TraceCompleted):
        await store.append(envelope("done", step=2))
    with pytest.raises(CircuitMismatch):
        await store.append(envelope("other", step=2, circuit="B"))
    with pytest.raises(TraceCompleted):
        await store.resume("done", 1)
    trace = await store.load("done")
    assert trace is not None and [e.step for e in trace.events] == [1]


async def test_a_trace_partly_evicted_reads_back_whole(tiered_checkpoints: StoreFactory) -> None:
    """volatile-* maxmemory policies evict keys one by one: the stream alone, say."""
    store = await tiered_checkpoints()
    assert isinstance(store, TieredPersistenceStore)
    await store.append_many([envelope("t", step=s) for s in range(5)])
    await store.save_intervention("t", Intervention(target_node="n", timestamp_ms=1))
    whole = await store.load("t")
    keys = store.cache.keys("t")
    for key in (keys.stream, keys.interventions):
        await evict(store, key)
        assert await store.load("t") == whole
    await evict(store, keys.stream)
    await store.append(envelope("t", step=9))  # a write on what is left warms it first
    trace = await store.load("t")
    assert trace is not None and [e.step for e in trace.events] == [0, 1, 2, 3, 4, 9]


async def test_sequence_fencing_holds_for_a_workflow_evicted_from_the_cache(
    tiered_events: EventStoreFactory,
) -> None:
    store = await tiered_events()
    assert isinstance(store, TieredEventStore)
    wf = wid()
    await store.append(TOKEN, wf, [started(1, wf)], 0)
    keys = store.cache.keys(wf)
    await evict(store, *keys.own)
    with pytest.raises(SequenceConflict) as conflict:
        await store.append(TOKEN, wf, [started(1, wf)], 0)
    assert (conflict.value.expected, conflict.value.found) == (0, 1)
    await evict(store, keys.history)  # partly: the meta hash stays
    assert [e.seq for e in await store.read_history(wf)] == [1]


async def test_concurrent_misses_warm_once_and_read_whole(tiered_checkpoints: StoreFactory) -> None:
    store = await tiered_checkpoints()
    assert isinstance(store, TieredPersistenceStore)
    await store.append_many([envelope("t", step=s) for s in range(20)])
    await evict(store, *store.cache.keys("t").own)
    loads = await asyncio.gather(*(store.load("t") for _ in range(32)))
    assert all(t is not None and len(t.events) == 20 for t in loads)


async def test_an_idempotent_retry_after_eviction_is_applied_once(
    tiered_checkpoints: StoreFactory,
) -> None:
    """The keys are the database's too: a warm puts them back; and the keys alone
    evicted (volatile-* policies evict keys one by one) make the trace warm again."""
    store = await tiered_checkpoints()
    assert isinstance(store, TieredPersistenceStore)
    keys = store.cache.keys("t")
    await store.append(envelope("t", step=1), idempotency_key="k1")
    for evicted in ((*keys.own, keys.idempotency), (keys.idempotency,)):
        await evict(store, *evicted)
        await store.append(envelope("t", step=1), idempotency_key="k1")  # the retry
        await store.flush()
        sources: list[Any] = [store, store.durable]
        for source in sources:
            trace = await source.load("t")
            assert trace is not None and [e.step for e in trace.events] == [1]


async def test_a_new_workflow_evicted_in_part_reads_and_takes_appends(
    tiered_events: EventStoreFactory,
) -> None:
    store = await tiered_events()
    assert isinstance(store, TieredEventStore)
    wf = wid()
    await store.append(TOKEN, wf, [started(1, wf)], 0)  # warms a marker "absent", then writes
    await evict(store, store.cache.keys(wf).history)
    assert [e.seq for e in await store.read_history(wf)] == [1]
    await evict(store, store.cache.keys(wf).history)
    await store.append(TOKEN, wf, [act(2, wf, "a")], 1)
    assert [e.seq for e in await store.read_history(wf)] == [1, 2]


async def test_a_durable_store_of_the_other_contract_is_refused(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput, match="SqlPersistenceStore"):
        TieredPersistenceStore(
            RedisPersistenceStore.from_url("fakeredis://"), SqliteEventStore.from_url(sqlite_url)
        )
    with pytest.raises(InvalidArgument, match="SqlEventStore"):
        TieredEventStore(
            RedisEventStore.from_url("fakeredis://"), SqlitePersistenceStore.from_url(sqlite_url)
        )


async def test_an_outbox_that_went_back_in_time_stops_loudly(
    tiered_checkpoints: StoreFactory,
) -> None:
    """Redis restarted from an older snapshot numbers new changes as the database applied
    them already: they must not be skipped as applied. Simulated: the outbox's counter and
    its consumer group set back by two changes."""
    store = await tiered_checkpoints()
    assert isinstance(store, TieredPersistenceStore)
    for step in range(5):
        await store.append(envelope("t", step=step))
    await store.flush()
    keys, redis = store.cache.keys("t"), store.cache.redis
    if not store.behind:  # write-through records no change in any outbox
        assert await redis.exists(keys.outbox, keys.counter) == 0
        return
    epoch: Any = await redis.hget(keys.counter, "epoch")
    epoch = epoch.decode()
    await redis.hset(keys.counter, "n", 3)  # the state of Redis after change 3, as it was
    await redis.delete(keys.outbox)
    await redis.execute_command("XGROUP", "CREATE", keys.outbox, "flush", f"{epoch}-3", "MKSTREAM")
    await store.append(envelope("t", step=9))  # numbered 4: applied already, per the database
    assert await store.flusher.run_once() == 0
    report = await store.check()
    assert any("Redis lost changes" in w for w in report["warnings"]), report["warnings"]
    trace = await store.durable.load("t")  # type: ignore[attr-defined]
    assert trace is not None and [e.step for e in trace.events] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["write-behind", "write-through"])
async def test_bad_settings_and_urls_are_invalid_input(sqlite_url: str, mode: str) -> None:
    durable = SqlitePersistenceStore.from_url(sqlite_url)
    cache = RedisPersistenceStore.from_url("fakeredis://")
    for bad in ({"max_backlog": "x"}, {"max_backlog": 0}, {"batch": 0}, {"claim_idle": -1}):
        with pytest.raises(InvalidInput):
            TieredPersistenceStore(cache, durable, mode=mode, **bad)
    for url in ("postgresql://u:secret@h:port/x", "sqlite:relative.db", "mysql://h/x"):
        with pytest.raises(InvalidInput) as refused:
            SqlitePersistenceStore.open(url, {})
        assert "secret" not in str(refused.value)
