"""Failover on a Redis Cluster, a Valkey cluster and a Sentinel set, each started here: a
primary is killed (kill -9) while 64 writers append, 32 checkpoint traces and 32 event
histories. The stores recover by themselves once its replica is promoted and the old
primary is back as a replica. With
`replicas=1` and the replica stalled (SIGSTOP) before the kill, every write acknowledged
without an error is on the survivor (those it did not get raised NotReplicated), and no
record is torn; without `replicas`, the writes acknowledged during the stall are lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest

from redis_checkpoint import RedisPersistenceStore
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.aion import TOKEN, act, started
from redis_checkpoint.conformance.servers import ClusterProcess, SentinelSet, ServerProcess
from redis_checkpoint.events import RedisEventStore
from redis_checkpoint.failures import Unavailable

from .conftest import _binary, _started, fresh_prefix
from .test_redis_shared import KINDS

PAYLOAD = 2048  # bytes per write: a stalled replica's backlog outgrows the socket buffers
OPTIONS: dict[str, Any] = {"timeout": 5, "replica_timeout": 0.2}


class Topology:
    """A primary to kill and the replica that takes over, on servers started here."""

    url: str

    def doomed(self) -> tuple[ServerProcess, ServerProcess]:
        raise NotImplementedError

    def wait_promoted(self, old: ServerProcess) -> None:
        raise NotImplementedError

    def rejoin(self, old: ServerProcess) -> None:
        """Restart the killed primary as a replica, and wait until it is in sync."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Cluster(Topology):
    def __init__(self, name: str) -> None:
        self.cluster = _started(name, ClusterProcess(_binary(name)).start)
        self.url = self.cluster.url

    def doomed(self) -> tuple[ServerProcess, ServerProcess]:
        primary = self.cluster.primaries()[0]
        return primary, self.cluster.replica_of(primary)

    def wait_promoted(self, old: ServerProcess) -> None:
        self.cluster.wait_healthy(timeout=20)

    def rejoin(self, old: ServerProcess) -> None:
        old.start()  # it rejoins as the replica of the node that replaced it
        self.cluster.wait_healthy(timeout=20)

    def close(self) -> None:
        self.cluster.close()


class Sentinel(Topology):
    def __init__(self, name: str) -> None:
        self.set = _started("a Sentinel set", SentinelSet(_binary(name)).start)
        self.url = self.set.url

    def doomed(self) -> tuple[ServerProcess, ServerProcess]:
        return self.set.primary(), self.set.replica()

    def wait_promoted(self, old: ServerProcess) -> None:
        self.set.wait_failover(old.port, timeout=20)

    def rejoin(self, old: ServerProcess) -> None:
        primary = self.set.primary()
        old.start()  # as Sentinel would make it, without its 10 s wait
        old.command("REPLICAOF", "127.0.0.1", primary.port)
        deadline = time.monotonic() + 20
        while old.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the old primary did not sync"
            time.sleep(0.05)

    def close(self) -> None:
        self.set.close()


TOPOLOGIES: dict[str, Callable[[], Topology]] = {
    "redis-cluster": lambda: Cluster("redis-server"),
    "valkey-cluster": lambda: Cluster("valkey-server"),
    "redis-sentinel": lambda: Sentinel("redis-server"),
}


@pytest.fixture(params=list(TOPOLOGIES))
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh set-up per test: each one kills a primary."""
    made = TOPOLOGIES[request.param]()
    yield made
    made.close()


@dataclass
class Writes:
    """What the writers saw: the writes acknowledged without an error, by record, and a
    count of every outcome."""

    steps: dict[str, list[int]] = field(default_factory=dict)
    seqs: dict[UUID, list[int]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    rejoined_at: float = float("inf")  # when the old primary was back, a replica (monotonic)
    after_rejoin: int = 0  # writes acknowledged after that


async def trace_writer(store: RedisPersistenceStore, trace: str, writes: Writes, stop: Any) -> None:
    acked = writes.steps.setdefault(trace, [])
    step = 0
    while not stop.is_set():
        try:
            await store.append(envelope(trace, step=step, payload="x" * PAYLOAD))
            acked.append(step)
            _acknowledged(writes)
        except Exception as exc:  # NotReplicated, or unavailable while the primary is gone
            writes.outcomes[type(exc).__name__] += 1
            await asyncio.sleep(0.01)
        step += 1


async def event_writer(store: RedisEventStore, wf: UUID, writes: Writes, stop: Any) -> None:
    acked = writes.seqs.setdefault(wf, [])
    head = 0
    while not stop.is_set():
        seq = head + 1
        event = started(1, wf) if seq == 1 else act(seq, wf, "x" * PAYLOAD)
        try:
            await store.append(TOKEN, wf, [event], head)
            acked.append(seq)
            head = seq
            _acknowledged(writes)
        except Exception as exc:  # as above; after an unknown outcome, read where it stands
            writes.outcomes[type(exc).__name__] += 1
            await asyncio.sleep(0.01)
            with contextlib.suppress(Exception):
                head = len(await store.read_history(wf))


def _acknowledged(writes: Writes) -> None:
    writes.outcomes["acknowledged"] += 1
    writes.after_rejoin += time.monotonic() > writes.rejoined_at


async def lost_and_torn(
    traces: RedisPersistenceStore, events: RedisEventStore, writes: Writes
) -> tuple[int, int]:
    """Acknowledged writes the survivor does not hold, and records whose meta disagrees
    with their stream (torn)."""
    lost = torn = 0
    raw = traces.redis
    for trace, steps in writes.steps.items():
        found = await traces.load(trace)
        held = [e.step for e in found.events] if found else []
        assert len(held) == len(set(held)), f"{trace}: a write stored twice"
        lost += len(set(steps) - set(held))
        trace_keys = traces.keys(trace)
        torn += int(await raw.hget(trace_keys.meta, "n") or 0) != await raw.xlen(trace_keys.stream)
    for wf, seqs in writes.seqs.items():
        history = await events.read_history(wf)
        assert [e.seq for e in history] == list(range(1, len(history) + 1)), f"{wf}: a gap"
        lost += len(set(seqs) - {e.seq for e in history})
        keys = events.keys(wf)
        head = int(await raw.hget(keys.meta, "head") or 0)
        torn += head != await raw.xlen(keys.history)
    return lost, torn


@pytest.mark.parametrize("replicas", [1, 0])
async def test_a_primary_killed_under_64_writers_loses_no_acknowledged_write(
    topology: Topology, replicas: int
) -> None:
    prefix = fresh_prefix()
    options = {**OPTIONS, "replicas": replicas}
    traces = RedisPersistenceStore.from_url(topology.url, prefix=prefix, **options)
    events = RedisEventStore.from_url(topology.url, prefix=prefix, **options)
    writes, stop = Writes(), asyncio.Event()
    tasks = [asyncio.create_task(trace_writer(traces, f"t{n}", writes, stop)) for n in range(32)]
    tasks += [
        asyncio.create_task(event_writer(events, UUID(int=n + 1), writes, stop)) for n in range(32)
    ]
    primary, replica = topology.doomed()
    await asyncio.sleep(0.5)
    replica.pause()  # it lags: what the primary acknowledges now, it does not have
    await asyncio.sleep(0.5)
    primary.kill()
    replica.resume()
    await asyncio.to_thread(topology.wait_promoted, primary)
    await asyncio.to_thread(topology.rejoin, primary)
    writes.rejoined_at = time.monotonic()
    await asyncio.sleep(1.0)  # the writers go on through the same stores
    stop.set()
    await asyncio.gather(*tasks)
    lost, torn = await lost_and_torn(traces, events, writes)
    print(f"\n{topology.url} replicas={replicas}: {dict(writes.outcomes)}, lost {lost}")
    assert writes.after_rejoin > 64, writes.outcomes  # they recovered by themselves
    assert torn == 0
    if replicas:
        assert lost == 0 and writes.outcomes["NotReplicated"] > 0, (lost, writes.outcomes)
    await traces.aclose()
    await events.aclose()


@dataclass
class Record:
    """Record 0 of a store on a fresh Redis cluster, written once, and where it lives."""

    cluster: ClusterProcess
    store: Any
    owner: ServerProcess
    slot: int
    meta: str


@contextlib.asynccontextmanager
async def one_record(kind: str, **options: Any) -> AsyncIterator[Record]:
    cluster = Cluster("redis-server").cluster
    k = KINDS[kind]
    store = k.store_class.from_url(cluster.url, prefix=fresh_prefix(), **options)
    try:
        await k.write(store, 0, 1)
        meta = store.keys(*k.record_ids(0)).meta
        owner = cluster.primary_for(meta)
        yield Record(
            cluster, store, owner, int(str(owner.command("CLUSTER", "KEYSLOT", meta))), meta
        )
    finally:
        await store.aclose()
        cluster.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slot_the_cluster_cannot_serve_is_unavailable_until_it_can(kind: str) -> None:
    """A slot no node serves (CLUSTER DELSLOTS on every node): the whole cluster answers
    CLUSTERDOWN. Calls fail with the tree's unavailable error within their timeout, never
    as corruption or a raw redis-py error; once the slot is served again the same store
    writes and reads."""
    k = KINDS[kind]
    async with one_record(kind, timeout=1) as r:
        for node in r.cluster.nodes:
            node.command("CLUSTER", "DELSLOTS", r.slot)
        for call in (k.write(r.store, 0, 2), k.written(r.store, 0)):
            begun = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                await call
            assert isinstance(raised.value, k.base) and time.monotonic() - begun < 2.5
        r.owner.command("CLUSTER", "ADDSLOTS", r.slot)
        await asyncio.to_thread(r.cluster.wait_healthy, 20)
        await k.write(r.store, 0, 2)
        assert await k.written(r.store, 0) == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slot_moved_under_a_store_is_followed_with_no_write_lost(kind: str) -> None:
    """Resharding: while a record's slot migrates (its keys already on the new owner), a
    one-key read is redirected by ASK, which the store follows for that call; a script on
    several keys gets TRYAGAIN (Redis refuses multi-key calls mid-migration), which the store
    retries within its deadline; once the slot is moved, MOVED, followed for good."""
    k = KINDS[kind]
    async with one_record(kind, timeout=5) as r:
        source, slot = r.owner, r.slot
        target = next(p for p in r.cluster.primaries() if p is not source)
        ids = {server: str(server.command("CLUSTER", "MYID")) for server in (source, target)}
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert isinstance(keys, list) and keys
        source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *map(str, keys))
        deadline = asyncio.get_running_loop().time() + 5
        assert await r.store._run.read([("EXISTS", r.meta)], deadline) == [1]  # ASK
        write = asyncio.create_task(k.write(r.store, 0, 2))  # TRYAGAIN meanwhile
        await asyncio.sleep(0.5)
        assert not write.done()
        for server in r.cluster.primaries():
            server.command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        await write  # MOVED
        await k.write(r.store, 0, 3)
        assert await k.written(r.store, 0) == [1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_node_delays_no_call_bound_for_the_others(kind: str) -> None:
    """One primary stops answering (SIGSTOP) while writes go to records on every node
    through one store: the others' writes complete as fast as ever, the stalled node's end
    within their timeout as unavailable, and none is lost once it answers again."""
    k = KINDS[kind]
    async with one_record(kind, timeout=1.5) as r:
        records = range(1, 49)
        node_of = {n: r.cluster.primary_for(r.store.keys(*k.record_ids(n)).meta) for n in records}
        healthy = [n for n in records if node_of[n] is not r.owner]
        stalled = [n for n in records if node_of[n] is r.owner]
        assert healthy and stalled
        r.owner.pause()
        try:
            begun = time.monotonic()
            fine = asyncio.gather(*(k.write(r.store, n, 1) for n in healthy))
            late = asyncio.gather(
                *(k.write(r.store, n, 1) for n in stalled), return_exceptions=True
            )
            await fine
            took = time.monotonic() - begun
            outcomes = await late
            waited = time.monotonic() - begun
        finally:
            r.owner.resume()
        assert took < 1.5, took  # done before the stalled node's calls could time out
        assert all(isinstance(o, Unavailable) for o in outcomes) and waited < 1.5 + 1.0
        for n in healthy:
            assert await k.written(r.store, n) == [1]


@pytest.mark.parametrize("kind", KINDS)
async def test_check_reports_a_primary_that_does_not_answer(kind: str) -> None:
    """check() is what an operator runs when something is wrong: with one primary stalled it
    still answers within the timeout, naming that primary, and warns that the records could
    not be counted."""
    async with one_record(kind, timeout=2) as r:
        r.owner.pause()
        try:
            begun = time.monotonic()
            report = await r.store.check()
            took = time.monotonic() - begun
        finally:
            r.owner.resume()
    stalled = f"127.0.0.1:{r.owner.port}"
    down = [p for p in report["primaries"] if "error" in p]
    assert [p["node"] for p in down] == [stalled] and took < 2 + 0.5
    assert len(report["primaries"]) == 3 and report["role"] == "mixed"
    assert report[f"{r.store.index}_indexed"] is None
    warned = " | ".join(report["warnings"])
    assert f"{stalled}: did not answer" in warned and "could not be counted" in warned
