"""Replicated durability, opt-in: `replicas=N` waits (WAIT, in the write's own round trip)
for N replicas to confirm each write, and `fsync=True` for the disks (WAITAOF). A write they
do not confirm in time raises NotReplicated: it is applied on the primary, and says so.
Each test runs on a primary and a replica of each real server, started here."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from redis_checkpoint import (
    CompletionState,
    InvalidInput,
    RedisPersistenceStore,
    TraceCompleted,
)
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.aion import TOKEN, act, started
from redis_checkpoint.conformance.servers import ServerProcess
from redis_checkpoint.events import RedisEventStore, SequenceConflict
from redis_checkpoint.failures import Unreplicated

from .conftest import fresh_prefix, start_server

SERVERS = ["redis-server", "valkey-server"]


class Pair:
    """A primary and one replica of it."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.primary = start_server(name, "--repl-diskless-sync-delay", "0", *args)
        self.replica = start_server(name, "--replicaof", "127.0.0.1", str(self.primary.port))

    async def linked(self) -> None:
        """Wait until the replica has synced and acknowledges writes."""
        client = Redis.from_url(self.primary.url)
        try:
            for _ in range(500):
                replica = (await client.info("replication")).get("slave0") or {}
                if replica.get("state") == "online":
                    await client.set("linked", 1)
                    if await client.wait(1, 200) == 1:
                        return
                await asyncio.sleep(0.02)
            raise AssertionError("the replica did not connect")
        finally:
            await client.aclose()

    def close(self) -> None:
        self.replica.resume()
        self.replica.close()
        self.primary.close()


@pytest.fixture(scope="module", params=SERVERS)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    pair = Pair(request.param)
    yield pair
    pair.close()


def trace_store(server: ServerProcess, prefix: str, **options: Any) -> RedisPersistenceStore:
    return RedisPersistenceStore.from_url(server.url, prefix=prefix, **options)


def event_store(server: ServerProcess, prefix: str, **options: Any) -> RedisEventStore:
    return RedisEventStore.from_url(server.url, prefix=prefix, **options)


async def test_each_write_is_on_the_replica_when_it_returns(pair: Pair) -> None:
    await pair.linked()
    prefix = fresh_prefix()
    store = trace_store(pair.primary, prefix, replicas=1)
    events = event_store(pair.primary, prefix, replicas=1)
    replica, replica_events = trace_store(pair.replica, prefix), event_store(pair.replica, prefix)
    wf = UUID(int=7)
    for step in range(5):  # each read on the replica right after the write's reply
        await store.append(envelope(step=step))
        trace = await replica.load("trace-1")
        assert trace is not None and [e.step for e in trace.events] == list(range(step + 1))
        await events.append(
            TOKEN, wf, [started(1, wf) if step == 0 else act(step + 1, wf, "a")], step
        )
        assert len(await replica_events.read_history(wf)) == step + 1
    await asyncio.gather(*(store.append(envelope(step=s)) for s in range(5, 69)))  # pipelined
    trace = await replica.load("trace-1")
    assert trace is not None and len(trace.events) == 69
    for s in (store, events, replica, replica_events):
        await s.aclose()


async def test_a_stalled_replica_makes_writes_not_replicated_but_applied(pair: Pair) -> None:
    await pair.linked()
    prefix = fresh_prefix()
    store = trace_store(pair.primary, prefix, replicas=1, replica_timeout=0.2, timeout=2)
    events = event_store(pair.primary, prefix, replicas=1, replica_timeout=0.2, timeout=2)
    await store.append(envelope(step=0))
    pair.replica.pause()
    try:
        start = time.monotonic()
        with pytest.raises(Unreplicated, match="applied on the primary"):
            await store.append(envelope(step=1))
        assert time.monotonic() - start < 2
        trace = await store.load("trace-1")  # reads do not wait for replicas
        assert trace is not None and [e.step for e in trace.events] == [0, 1]
        wf = UUID(int=8)
        with pytest.raises(Unreplicated):
            await events.append(TOKEN, wf, [started(1, wf)], 0)
        assert await events.read_history(wf) == [started(1, wf)]
        # A rejected write wrote nothing to confirm: it raises its own error.
        with pytest.raises(SequenceConflict):
            await events.append(TOKEN, wf, [started(1, wf)], 0)
        with pytest.raises(Unreplicated):
            await store.complete("trace-1", CompletionState.SUCCESS)
        with pytest.raises(TraceCompleted):
            await store.append(envelope(step=2))
    finally:
        pair.replica.resume()
    await pair.linked()
    await store.append(envelope("trace-2", step=0))  # confirmed again once it catches up
    await store.aclose()
    await events.aclose()


async def test_more_replicas_than_there_are_is_never_confirmed(pair: Pair) -> None:
    await pair.linked()
    store = trace_store(pair.primary, fresh_prefix(), replicas=2, replica_timeout=0.1)
    with pytest.raises(Unreplicated, match="of the 2 replicas asked for"):
        await store.append(envelope(step=0))
    await store.aclose()


async def test_fsync_waits_for_the_disk_where_the_server_can(pair: Pair) -> None:
    await pair.linked()
    store = trace_store(pair.primary, fresh_prefix(), fsync=True, replica_timeout=0.5)
    # Both servers here run without appendonly, so the disk cannot confirm: Redis 7.0 has no
    # WAITAOF, Valkey refuses it without AOF. Either way the first write says so.
    with pytest.raises(Unreplicated, match="WAITAOF"):
        await store.append(envelope(step=0))
    warned = " | ".join((await store.check())["warnings"])  # and check() says why
    assert ("has no WAITAOF" if pair.name == "redis-server" else "appendonly is off") in warned
    await store.aclose()
    if pair.name == "valkey-server":
        aof = start_server("valkey-server", "--appendonly", "yes", "--appendfsync", "always")
        try:
            store = trace_store(aof, fresh_prefix(), fsync=True, replica_timeout=0.5)
            await store.append(envelope(step=0))
            trace = await store.load("trace-1")
            assert trace is not None and len(trace.events) == 1
            await store.aclose()
        finally:
            aof.close()


@pytest.mark.parametrize(
    "options",
    [
        {"replicas": -1},
        {"replicas": True},
        {"replicas": 1, "replica_timeout": 10, "timeout": 5},
        {"replica_timeout": 0},
        {"fsync": "yes"},
    ],
)
def test_bad_durability_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        RedisPersistenceStore(Redis(), **options)


@pytest.mark.parametrize("replicas", [1, 0])
async def test_no_acknowledged_write_is_lost_when_the_primary_dies(
    pair: Pair, replicas: int
) -> None:
    """64 writers; the replica stalls (SIGSTOP), the primary is killed (kill -9) meanwhile,
    then the replica resumes and is promoted. With replicas=1 every write acknowledged
    without an error is on it (those it did not get raised NotReplicated), and no trace is
    torn. Without, the writes acknowledged during the stall are lost: the hazard is real."""
    await pair.linked()
    prefix = fresh_prefix()
    options = {"replicas": replicas, "replica_timeout": 0.2, "timeout": 2}
    store = trace_store(pair.primary, prefix, **options)
    acked: dict[str, list[int]] = {}
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def writer(trace: str) -> None:
        acked[trace] = []
        for step in range(10_000):
            if stop.is_set():
                return
            try:
                await store.append(envelope(trace, step=step))
                acked[trace].append(step)
                outcomes["acknowledged"] += 1
            except Exception as exc:  # NotReplicated, or unavailable once the primary is gone
                outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

    writers = [asyncio.create_task(writer(f"t{w}")) for w in range(64)]
    await asyncio.sleep(0.4)
    pair.replica.pause()
    await asyncio.sleep(0.4)
    pair.primary.kill()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*writers)
    pair.replica.resume()
    promoted = Redis.from_url(pair.replica.url)
    await promoted.replicaof("NO", "ONE")
    survivor = trace_store(pair.replica, prefix)
    lost = 0
    for trace, steps in acked.items():
        found = await survivor.load(trace)
        lost += len(set(steps) - ({e.step for e in found.events} if found else set()))
        if found is not None:  # not torn: the meta count is the stream's length
            keys = survivor.keys(trace)
            assert int(await promoted.hget(keys.meta, "n") or 0) == await promoted.xlen(keys.stream)
    print(f"replicas={replicas}: {dict(outcomes)}, lost {lost}")
    assert outcomes["acknowledged"] > 64, outcomes
    if replicas:
        assert lost == 0 and outcomes["NotReplicated"] > 0, (lost, outcomes)
    else:
        assert lost > 0, outcomes
    for closing in (survivor, promoted, store):
        await closing.aclose()
    pair.primary.start()  # the module's pair again: the restarted primary leads once more
    await promoted_back(pair)


async def promoted_back(pair: Pair) -> None:
    """Make the restarted primary the primary again, and the survivor its replica."""
    survivor = Redis.from_url(pair.replica.url)
    await survivor.replicaof("127.0.0.1", pair.primary.port)
    await survivor.aclose()
    await pair.linked()


async def test_a_user_who_may_not_wait_gets_not_replicated_naming_the_command(pair: Pair) -> None:
    await pair.linked()
    prefix = fresh_prefix()
    admin = Redis.from_url(pair.primary.url)
    rules = [f"~{{{prefix}:*", f"~{prefix}:config", "+@all", "-wait"]
    await admin.acl_setuser("nowait", enabled=True, passwords=["+pw"], reset=True)
    await admin.execute_command("ACL", "SETUSER", "nowait", *rules)  # type: ignore[no-untyped-call]
    options = {"username": "nowait", "password": "pw"}
    store = RedisPersistenceStore.from_url(
        pair.primary.url, prefix=prefix, replicas=1, client_options=options
    )
    with pytest.raises(Unreplicated, match="wait"):
        await store.append(envelope(step=0))
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == 1  # applied, as the error says
    await store.aclose()
    await admin.aclose()


async def test_check_reports_the_replicas_and_a_replica_taking_writes(pair: Pair) -> None:
    await pair.linked()
    prefix = fresh_prefix()
    for store in (trace_store(pair.primary, prefix, replicas=1), event_store(pair.replica, prefix)):
        report = await store.check()
        await store.aclose()
        warned = " | ".join(report["warnings"])
        if report["role"] == "master":
            assert report["replicas_connected"] == 1 and "replicas=" not in warned
        else:
            assert report["role"] == "slave" and "writes fail" in warned


async def test_a_wait_cut_short_by_a_lost_connection_confirms_nothing(pair: Pair) -> None:
    """The replica stalls; a write is applied and its wait is under way when the store's
    connection is killed. redis-py sends it again on a new connection, where it is a
    copy (DUPLICATE) that writes nothing: a wait there alone would confirm at once what the
    replica never got (it did on Valkey). The store writes before each wait, so it is
    NotReplicated; so is a retry of the caller's with the same idempotency key."""
    await pair.linked()
    prefix = fresh_prefix()
    store = trace_store(pair.primary, prefix, replicas=1, replica_timeout=1.0, timeout=5)
    admin = Redis.from_url(pair.primary.url)
    await store.append(envelope(step=0))
    pair.replica.pause()
    try:
        for i in range(12):  # a backlog beyond the socket buffers: it waits in the primary
            await admin.set(f"{prefix}:backlog:{i}", b"x" * 2_000_000)
        write = asyncio.create_task(store.append(envelope(step=1), idempotency_key="k1"))
        await asyncio.sleep(0.3)  # applied; its wait is under way
        await admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(Unreplicated):
            await write
        with pytest.raises(Unreplicated):  # the caller's own retry, a copy too
            await store.append(envelope(step=1), idempotency_key="k1")
    finally:
        pair.replica.resume()
    trace = await store.load("trace-1")
    assert trace is not None and [e.step for e in trace.events] == [0, 1]  # applied once
    await admin.delete(*(f"{prefix}:backlog:{i}" for i in range(12)))
    await admin.aclose()
    await store.aclose()


async def test_a_listing_does_not_wait_for_replicas(pair: Pair) -> None:
    """Expired records a listing drops from the indexes are its own cleanup: it does not
    wait for replicas, even with the replica stalled."""
    await pair.linked()
    prefix = fresh_prefix()
    store = trace_store(pair.primary, prefix, replicas=1, replica_timeout=0.5, timeout=2)
    admin = Redis.from_url(pair.primary.url)
    for n in range(8):
        await store.append(envelope(f"gone-{n}", step=0))
        await admin.delete(*store.keys(f"gone-{n}").own)  # as if their TTL ran out
    pair.replica.pause()
    try:
        start = time.monotonic()
        assert [s async for s in store.iter_traces()] == []
        assert time.monotonic() - start < 0.5  # not a wait of 0.5 s per dropped entry
    finally:
        pair.replica.resume()
    await admin.aclose()
    await store.aclose()
