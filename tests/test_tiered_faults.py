"""The tiered stores under faults, on real servers: a flusher killed (kill -9) mid-batch,
the database unreachable for a while, Redis killed and restarted with a backlog (AOF on),
the cache flushed or evicting under a running workload, and Redis gone under write-through.

Each test counts what was acknowledged and what the database holds, and fails on any
acknowledged write lost or stored twice.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from redis_checkpoint import (
    Backpressure,
    PostgresPersistenceStore,
    RedisPersistenceStore,
    StoreUnavailable,
    TieredPersistenceStore,
)
from redis_checkpoint.conformance.checkpoints import envelope
from redis_checkpoint.conformance.servers import ServerProcess
from redis_checkpoint.flusher import GROUP

from .conftest import fresh_prefix, start_server
from .proxy import SwitchProxy


@asynccontextmanager
async def tiered(
    redis_url: str, durable_url: str, prefix: str, **options: Any
) -> AsyncIterator[TieredPersistenceStore]:
    cache_options = {k: options.pop(k) for k in ("ttl", "timeout") if k in options}
    cache = RedisPersistenceStore.from_url(redis_url, prefix=prefix, shards=8, **cache_options)
    durable = PostgresPersistenceStore.from_url(durable_url)
    async with TieredPersistenceStore(cache, durable, **options) as store:
        yield store


class Ledger:
    """What the writers were told is stored: payloads per trace. A write cut short (its
    task cancelled) may or may not be stored; every acknowledged one must be, once."""

    def __init__(self) -> None:
        self.acked: dict[str, list[int]] = {}
        self.unsure: dict[str, set[int]] = {}

    async def write(self, store: TieredPersistenceStore, trace: str, payload: int) -> None:
        unsure = self.unsure.setdefault(trace, set())
        unsure.add(payload)
        await store.append(envelope(trace, step=payload, payload=payload))
        unsure.discard(payload)
        self.acked.setdefault(trace, []).append(payload)

    def total(self) -> int:
        return sum(map(len, self.acked.values()))

    async def check(self, durable: PostgresPersistenceStore) -> None:
        """The database holds each acknowledged write once, and nothing unasked for."""
        lost = duplicated = 0
        for trace, payloads in self.acked.items():
            found = await durable.load(trace)
            stored: list[Any] = [e.payload for e in (found.events if found else [])]
            lost += len(set(payloads) - set(stored))
            duplicated += len(stored) - len(set(stored))
            assert set(stored) - set(payloads) <= self.unsure[trace], trace
        assert (lost, duplicated) == (0, 0)


def flusher_process(redis_url: str, prefix: str, durable_url: str) -> subprocess.Popen[bytes]:
    command = ["--url", redis_url, "--prefix", prefix, "flush", "--shards", "8"]
    command += ["--durable", durable_url, "--batch", "20", "--every", "0.1"]
    return subprocess.Popen(
        [sys.executable, "-m", "redis_checkpoint", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def pending(redis: Redis, prefix: str) -> int:
    """Entries delivered to a flusher and not acknowledged, over every outbox."""
    total = 0
    for shard in range(8):
        key = f"{{{prefix}:{shard}}}:outbox:t"
        if await redis.exists(key):
            groups = await redis.xinfo_groups(key)
            total += sum(g["pending"] for g in groups if g["name"] == GROUP.encode())
    return total


async def test_a_flusher_killed_mid_batch_leaves_each_acknowledged_write_once(
    redis_server: ServerProcess, postgres_url: str
) -> None:
    """Rounds of: 8 writers add 100 appends each while a flusher process applies them; it
    is killed (-9) once it holds a batch (entries delivered, not acknowledged), at once or
    up to 20 ms later (before or after its commit). Then this store's flusher takes over."""
    prefix, ledger = fresh_prefix(), Ledger()
    redis = Redis.from_url(redis_server.url)
    async with tiered(redis_server.url, postgres_url, prefix, flusher=False, claim_idle=0.2) as s:
        killed_mid_batch = 0
        for round in range(8):
            writing = asyncio.gather(
                *(ledger_writes(ledger, s, f"t{w}", 100, round * 100) for w in range(8))
            )
            proc = flusher_process(redis_server.url, prefix, postgres_url)
            for _ in range(5000):  # until it holds a batch (or ends): 10 s at most
                if await pending(redis, prefix) or proc.poll() is not None:
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(random.uniform(0.0, 0.02))
            proc.kill()  # kill -9: no cleanup, its entries stay pending in its name
            await asyncio.to_thread(proc.wait)
            assert proc.stdout is not None
            proc.stdout.close()
            killed_mid_batch += await pending(redis, prefix) > 0
            await writing
        assert killed_mid_batch >= 4, f"only {killed_mid_batch} of 8 kills hit a batch"
        await s.flush(wait=60)  # this store's flusher takes over what the killed ones held
        assert ledger.total() == 8 * 8 * 100
        await ledger.check(s.durable)  # type: ignore[arg-type]
        assert await pending(redis, prefix) == 0
    await redis.aclose()


async def ledger_writes(
    ledger: Ledger, store: TieredPersistenceStore, trace: str, n: int, first: int = 0
) -> None:
    for payload in range(first, first + n):
        await ledger.write(store, trace, payload)
        await asyncio.sleep(0)


async def random_writes(
    ledger: Ledger, store: TieredPersistenceStore, traces: list[str], writer: int
) -> None:
    for n in range(100_000):
        await ledger.write(store, random.choice(traces), n * 4 + writer)  # unique payloads
        await asyncio.sleep(0)


def with_port(url: str, port: int) -> str:
    head, _, rest = url.partition("@127.0.0.1:")
    return f"{head}@127.0.0.1:{port}/{rest.partition('/')[2]}"


async def test_the_database_down_backs_writes_up_to_the_bound_then_drains(
    redis_server: ServerProcess, postgres_url: str
) -> None:
    ledger, bound = Ledger(), 150
    async with SwitchProxy(5432) as proxy:
        url = with_port(postgres_url, proxy.port)
        async with tiered(redis_server.url, url, fresh_prefix(), max_backlog=bound) as store:
            for payload in range(50):
                await ledger.write(store, "trace", payload)
            await store.flush()
            proxy.cut()  # the database is unreachable: the flusher's passes fail
            with pytest.raises(Backpressure):
                for payload in range(50, 50 + 10 * bound):
                    await ledger.write(store, "trace", payload)
            assert ledger.total() == 50 + bound  # writes went on into Redis, to the bound
            report = await store.check()
            assert report["backlog"] == bound and report["lag"] is not None
            cached = await store.load("trace")
            assert cached is not None and len(cached.events) == 50 + bound  # nothing of the refused
            with pytest.raises(StoreUnavailable, match="not flushed within"):
                await store.flush(wait=0.5)
            proxy.restore()
            await store.flush(wait=30)  # the backlog drains once the database is back
            assert (await store.check())["backlog"] == 0
            await ledger.check(store.durable)  # type: ignore[arg-type]


async def test_redis_killed_and_restarted_with_a_backlog_loses_nothing(
    postgres_url: str,
) -> None:
    server = start_server("redis-server", "--appendonly", "yes", "--appendfsync", "always")
    prefix, ledger = fresh_prefix(), Ledger()
    try:
        async with tiered(server.url, postgres_url, prefix, flusher=False, batch=50) as store:
            await asyncio.gather(*(ledger_writes(ledger, store, f"t{w}", 100) for w in range(4)))
            half = await store.flusher.run_once()  # some flushed, the rest a backlog
            assert 0 < half < ledger.total()
        server.kill()  # kill -9 with the backlog in Redis (its AOF is fsynced per write)
        server.start()
        async with tiered(server.url, postgres_url, prefix, flusher=False) as store:
            assert (await store.check())["backlog"] == ledger.total() - half
            await store.flush()
            await ledger.check(store.durable)  # type: ignore[arg-type]
            for trace, payloads in ledger.acked.items():  # and the cache still answers
                found = await store.load(trace)
                assert found is not None and len(found.events) == len(payloads)
    finally:
        server.close()


async def reads_complete(
    store: TieredPersistenceStore, ledger: Ledger, traces: list[str], stop: asyncio.Event
) -> int:
    """Read traces until `stop`; each read holds every write acknowledged before it began.
    Returns the reads made."""
    reads = 0
    while not stop.is_set():
        trace = random.choice(traces)
        before = set(ledger.acked.get(trace, []))
        found = await store.load(trace)
        stored: set[Any] = {e.payload for e in (found.events if found else [])}
        assert before <= stored, f"{trace}: a read lost {sorted(before - stored)[:5]}"
        reads += 1
        await asyncio.sleep(0)
    return reads


async def workload(
    store: TieredPersistenceStore, ledger: Ledger, fault: Callable[[], Any], rounds: int
) -> int:
    """4 writers and 4 readers, each on a random one of 32 traces per call (so traces go
    idle, get flushed and become evictable), while `fault` runs `rounds` times."""
    traces = [f"t{n}" for n in range(32)]
    stop = asyncio.Event()
    readers = [asyncio.create_task(reads_complete(store, ledger, traces, stop)) for _ in range(4)]
    writers = [asyncio.create_task(random_writes(ledger, store, traces, w)) for w in range(4)]
    try:
        for _ in range(rounds):
            await asyncio.sleep(0.1)
            await fault()
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        for task in writers:
            task.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    return sum(await asyncio.gather(*readers))


async def test_flushdb_under_a_write_through_workload_loses_no_read(
    redis_server: ServerProcess, postgres_url: str
) -> None:
    ledger, redis = Ledger(), Redis.from_url(redis_server.url)
    private = start_server("redis-server")  # FLUSHDB on a server of this test's own
    try:
        async with tiered(private.url, postgres_url, fresh_prefix(), mode="write-through") as s:

            async def flush() -> None:
                private.command("FLUSHDB")

            reads = await workload(s, ledger, flush, rounds=10)
            assert reads > 100 and ledger.total() > 100
            await ledger.check(s.durable)  # type: ignore[arg-type]
    finally:
        private.close()
        await redis.aclose()


async def test_maxmemory_eviction_under_a_write_behind_workload_loses_no_read(
    postgres_url: str,
) -> None:
    server = start_server(
        "redis-server", "--maxmemory", "3mb", "--maxmemory-policy", "volatile-lru"
    )
    ledger = Ledger()
    try:
        async with tiered(server.url, postgres_url, fresh_prefix(), ttl=600) as store:
            warms, warm = [0], store.cache.warm

            async def counted(*args: Any) -> bool:
                warms[0] += 1
                return await warm(*args)

            store.cache.warm = counted  # type: ignore[method-assign, assignment]
            filler = RedisPersistenceStore.from_url(server.url, prefix=fresh_prefix(), ttl=3600)
            async with filler:

                async def crowd() -> None:  # others' traces, with a TTL, crowd the memory
                    big = "x" * 4096
                    for _ in range(60):
                        await filler.append(envelope(f"f{random.random()}", payload=big))

                reads = await workload(store, ledger, crowd, rounds=10)
            evicted = int(str(server.command("INFO", "stats")).split("evicted_keys:")[1].split()[0])
            assert evicted > 0 and reads > 100
            assert warms[0] > 16, warms  # our traces were evicted, and read back whole
            await store.flush()
            await ledger.check(store.durable)  # type: ignore[arg-type]
    finally:
        server.close()


async def test_write_through_goes_on_on_the_database_with_redis_gone(
    postgres_url: str,
) -> None:
    server = start_server("redis-server", "--appendonly", "yes", "--appendfsync", "always")
    ledger = Ledger()
    try:
        async with tiered(
            server.url, postgres_url, fresh_prefix(), mode="write-through", timeout=1.0
        ) as store:
            for payload in range(20):
                await ledger.write(store, "trace", payload)
            assert await store.load("trace") is not None  # warmed: the cache has a copy
            server.kill()  # gone, with that copy in its AOF
            for payload in range(20, 40):  # degraded, not failed: on the database
                await ledger.write(store, "trace", payload)
            found = await store.load("trace")
            assert found is not None and len(found.events) == 40
            server.start()  # back, with the stale copy: this process drops it first
            found = await store.load("trace")
            assert found is not None and len(found.events) == 40
            await ledger.check(store.durable)  # type: ignore[arg-type]
    finally:
        server.close()
