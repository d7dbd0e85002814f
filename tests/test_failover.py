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
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from redis_checkpoint import RedisPersistenceStore
from redis_checkpoint.conformance import envelope
from redis_checkpoint.conformance.aion import TOKEN, act, started
from redis_checkpoint.conformance.servers import (
    ClusterProcess,
    SentinelSet,
    ServerProcess,
    free_port,
)
from redis_checkpoint.connection import close
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


async def write_and_close(k: Any, store: Any, n: int) -> None:
    await k.write(store, 0, n)
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
def test_a_cluster_store_used_before_a_fork_serves_the_children(
    redis_cluster: ClusterProcess, kind: str
) -> None:
    """A store that wrote in the parent (its slot map and connections made), then forked:
    each child writes on sockets of its own and closes cleanly."""
    k = KINDS[kind]
    prefix = fresh_prefix()
    store = k.store_class.from_url(redis_cluster.url, prefix=prefix)

    async def parent() -> None:
        await k.write(store, 0, 1)
        await close(store.redis)  # its loop ends here: so do its sockets

    asyncio.run(parent())
    for n in (2, 3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                asyncio.run(write_and_close(k, store, n))
                code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0

    async def written() -> list[int]:
        async with k.store_class.from_url(redis_cluster.url, prefix=prefix) as reader:
            return await k.written(reader, 0)

    assert asyncio.run(written()) == [1, 2, 3]
    asyncio.run(store.aclose())


async def kill_storm(cluster: ClusterProcess, stop: asyncio.Event) -> None:
    """CLIENT KILL of every client on every primary, every 20 ms, until `stop`."""
    admins = [Redis(port=primary.port) for primary in cluster.primaries()]
    while not stop.is_set():
        for admin in admins:
            with contextlib.suppress(Exception):
                await admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.02)
    for admin in admins:
        await admin.aclose()


async def write_on(store: Any, write: Callable[[int], Any], stop: asyncio.Event) -> list[Any]:
    """Writes 1, 2, 3... until `stop`: each one acknowledged, or the error it raised."""
    outcomes: list[Any] = []
    for n in range(1, 10**9):
        if stop.is_set():
            return outcomes
        try:
            await write(n)
            outcomes.append(n)
        except Exception as exc:
            outcomes.append(exc)
            await asyncio.sleep(0.01)
    return outcomes


WRITERS = 128  # per group: enough that one node's pipeline holds calls far apart store-wide


async def test_a_kill_storm_on_every_primary_loses_repeats_and_refuses_nothing(
    redis_cluster: ClusterProcess,
) -> None:
    """CLIENT KILL on every primary every 20 ms while 128 writers share one hot trace and
    128 more write traces of their own, through one store: no acknowledged write is lost or
    stored twice, and no call fails for arriving too late to tell whether it was applied (a
    round lost with its connection is sent again at once, ahead of newer calls, and its
    calls' numbers are close: they are numbered per slot, not store-wide)."""
    store = RedisPersistenceStore.from_url(redis_cluster.url, prefix=fresh_prefix(), timeout=5)
    stop = asyncio.Event()

    def hot(w: int) -> Callable[[int], Any]:
        return lambda n: store.append(envelope("hot", step=n * WRITERS + w))

    def own(w: int) -> Callable[[int], Any]:
        return lambda n: store.append(envelope(f"own-{w}", step=n))

    writers = [write_on(store, hot(w), stop) for w in range(WRITERS)]
    writers += [write_on(store, own(w), stop) for w in range(WRITERS)]
    storm = asyncio.create_task(kill_storm(redis_cluster, stop))
    done = asyncio.gather(*writers)
    await asyncio.sleep(2.0)
    stop.set()
    outcomes, _ = await asyncio.gather(done, storm)
    failed = [o for per in outcomes for o in per if isinstance(o, Exception)]
    assert not [f for f in failed if "too late" in str(f)], failed[:3]
    for w, per in enumerate(outcomes):
        trace = await store.load("hot" if w < WRITERS else f"own-{w - WRITERS}")
        held = [e.step for e in trace.events] if trace else []
        acked = {n * WRITERS + w if w < WRITERS else n for n in per if isinstance(n, int)}
        assert len(held) == len(set(held)) and acked <= set(held)
    await store.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_calls_to_a_killed_node_say_they_were_not_sent(kind: str) -> None:
    """Its port refuses connections until a replica takes over: nothing reached it, and
    the error of a store with no connection to it yet says so, rather than that the
    outcome is unknown."""
    k = KINDS[kind]
    async with one_record(kind, timeout=1) as r:
        r.owner.kill()
        fresh = k.store_class.from_url(r.cluster.url, prefix=r.store.prefix, timeout=1)
        with pytest.raises(Unavailable, match="not sent") as raised:
            await k.write(fresh, 0, 2)
        assert isinstance(raised.value, k.base)
        await fresh.aclose()


async def test_a_stalled_first_host_of_the_url_does_not_stop_a_new_store() -> None:
    """A new store asks the URL's hosts for the slots; the first one is stalled (SIGSTOP):
    its socket times out and the next host answers, within the store's timeout."""
    cluster = Cluster("redis-server").cluster
    first = next(n for n in cluster.nodes if n.port == cluster.startup_nodes[0][1])
    first.pause()
    try:
        store = RedisPersistenceStore.from_url(cluster.url, prefix=fresh_prefix(), timeout=8)
        away = next(
            t
            for t in (f"t{n}" for n in range(100))
            if cluster.primary_for(store.keys(t).meta) is not first
        )
        await store.append(envelope(away, step=1))
        trace = await store.load(away)
        assert trace is not None and len(trace.events) == 1
        await store.aclose()
    finally:
        first.resume()
        cluster.close()


async def test_a_dead_sentinel_listed_first_costs_no_retries(redis_sentinel: SentinelSet) -> None:
    """The first Sentinel of the URL refuses connections: the next one is asked at once."""
    alive = ",".join(f"{host}:{port}" for host, port in redis_sentinel.sentinels)
    url = f"redis+sentinel://127.0.0.1:{free_port()},{alive}/{redis_sentinel.service}"
    store = RedisPersistenceStore.from_url(url, prefix=fresh_prefix(), timeout=5)
    begun = time.monotonic()
    await store.append(envelope("t", step=1))
    assert time.monotonic() - begun < 2  # a hang guard: redis-py's default retries took 4.6 s
    await store.aclose()
