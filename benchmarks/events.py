"""Event-store benchmarks, same rules as the checkpoint ones: same server, same run.

    python -m benchmarks.events [--server redis|valkey] [--rounds 5] [--only B6 B8]

Starts its own server on a free loopback port. Events carry a 1 KiB payload.
- B6 and B7r are rate ratios (higher is better): sequential one-event `append` with its
  sequence fence against sequential raw `XADD` of the same stored bytes, and
  `read_history` of 1,000 events against a raw redis-py `XRANGE` of the same entries.
- B5e is Redis's bytes per stored event (the history stream's `MEMORY USAGE` over its
  events) against the payload's bytes plus 200 (lower is better).
- B7 and B8 are time ratios (lower is better) that show cost follows what a call returns,
  not what is stored: `read_history_from(head - 10)` on a 100,000-event history against a
  1,000-event one, and `expired_timers` with 1,000 due among 100,000 against 1,000 in all.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from redis.asyncio import Redis

from redis_checkpoint.conformance.servers import ServerProcess, redis_binary, valkey_binary
from redis_checkpoint.events import (
    ActivityScheduled,
    EventEnvelope,
    Payload,
    RedisEventStore,
    TimerId,
    WriteToken,
)
from redis_checkpoint.events.stored import encode_event

from .checkpoints import Result, compare, server_times

TOKEN = WriteToken.recorder()
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
BIG = Payload.from_json({"order_id": "1001", "blob": "x" * 1000})  # 1 KiB, as for checkpoints
SMALL = Payload.from_json({"order_id": "1001"})


def event(wf: UUID, seq: int, payload: Payload = BIG) -> ActivityScheduled:
    return ActivityScheduled(
        envelope=EventEnvelope(seq=seq, recorded_at=EPOCH, workflow_id=wf),
        activity_id=seq,
        activity_type="charge-card",
        input=payload,
    )


async def b6(store: RedisEventStore, raw: Redis, n: int, rounds: int) -> Result:
    workflows = [UUID(int=600 + r) for r in range(rounds)]
    events = [[event(wf, seq) for seq in range(1, n + 1)] for wf in workflows]
    blob = encode_event(events[0][0])

    async def ours(r: int) -> None:
        for e in events[r]:
            await store.append(TOKEN, workflows[r], [e], e.seq - 1)

    async def theirs(r: int) -> None:
        for seq in range(1, n + 1):
            await raw.xadd(f"raw:b6:{r}", {"c": blob}, id=f"0-{seq}")

    await raw.config_resetstat()
    rates = await compare(n, ours, theirs, rounds)
    note = await server_times(raw, "evalsha", "xadd")
    return Result("B6", "one-event append with fencing vs XADD", *rates, ">= 0.8", note)


async def b7r(store: RedisEventStore, raw: Redis, n: int, rounds: int) -> Result:
    wf = UUID(int=750)
    await store.append(TOKEN, wf, [event(wf, seq) for seq in range(1, n + 1)], 0)
    stream = store.keys(wf).history

    async def ours(r: int) -> None:
        assert len(await store.read_history(wf)) == n

    async def theirs(r: int) -> None:
        assert len(await raw.xrange(stream) or ()) == n

    rates = await compare(n, ours, theirs, rounds)
    return Result("B7r", f"read_history of {n:,} events vs XRANGE", *rates, ">= 0.5")


async def b5e(store: RedisEventStore, raw: Redis, n: int) -> Result:
    used = await raw.memory_usage(store.keys(UUID(int=750)).history, samples=0) or 0  # B7r's
    return Result(
        "B5e", "Redis bytes per event / (payload + 200 B)", used / n, len(BIG.bytes) + 200, "<= 1.3"
    )


async def history(store: RedisEventStore, wf: UUID, size: int) -> None:
    for start in range(0, size, 1000):
        batch = [event(wf, seq, SMALL) for seq in range(start + 1, min(size, start + 1000) + 1)]
        await store.append(TOKEN, wf, batch, start)


async def b7(store: RedisEventStore, n: int, rounds: int) -> Result:
    large, small = UUID(int=700), UUID(int=701)
    await history(store, large, 100_000)
    await history(store, small, 1_000)

    def tail_reads(wf: UUID, head: int) -> Callable[[int], Awaitable[None]]:
        async def run(r: int) -> None:
            for _ in range(n):
                assert len(await store.read_history_from(wf, head - 10)) == 11

        return run

    large_rate, small_rate = await compare(
        n, tail_reads(large, 100_000), tail_reads(small, 1_000), rounds
    )
    return Result(
        "B7", "read_history_from(head-10): 100k vs 1k", 1 / large_rate, 1 / small_rate, "<= 1.5"
    )


async def timers(store: RedisEventStore, due: int, later: int) -> None:
    async def arm(i: int, at: datetime) -> None:
        await store.schedule_timer(UUID(int=800_000 + i), TimerId.anonymous(i), at)

    for start in range(0, due + later, 2000):
        await asyncio.gather(
            *(
                arm(i, EPOCH + timedelta(seconds=i if i < due else 10**6 + i))
                for i in range(start, min(due + later, start + 2000))
            )
        )


async def b8(large: RedisEventStore, small: RedisEventStore, n: int, rounds: int) -> Result:
    await timers(large, 1_000, 99_000)
    await timers(small, 1_000, 0)
    as_of = EPOCH + timedelta(seconds=999)

    def due(store: RedisEventStore) -> Callable[[int], Awaitable[None]]:
        async def run(r: int) -> None:
            for _ in range(n):
                assert len(await store.expired_timers(as_of)) == 1_000

        return run

    large_rate, small_rate = await compare(n, due(large), due(small), rounds)
    return Result(
        "B8", "expired_timers, 1k due: 100k vs 1k timers", 1 / large_rate, 1 / small_rate, "<= 1.5"
    )


async def main(server: str, rounds: int, only: set[str]) -> list[Result]:
    binary = redis_binary() if server == "redis" else valkey_binary()
    if binary is None:
        raise SystemExit(f"no {server} server binary found")
    with ServerProcess(binary) as proc:
        raw = Redis.from_url(proc.url)
        client = Redis.from_url(proc.url)
        store = RedisEventStore(client, prefix="bench")
        await store.append(TOKEN, UUID(int=1), [event(UUID(int=1), 1)], 0)  # warm up
        await raw.xadd("raw:warm-up", {"e": b"x"})
        benches: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            ("B6", lambda: b6(store, raw, 2000, rounds)),
            ("B7R", lambda: b7r(store, raw, 1000, rounds * 4)),
            ("B5E", lambda: b5e(store, raw, 1000)),
            ("B7", lambda: b7(store, 500, rounds)),
            ("B8", lambda: b8(store, RedisEventStore(client, prefix="b8"), 10, rounds)),
        ]
        results = []
        for name, bench in benches:
            if not only or name in only:
                print(f"running {name} ...", flush=True)
                results.append(await bench())
        await client.aclose()
        await raw.aclose()
    return results


def report(results: list[Result], server: str) -> None:
    print(f"\nredis-checkpoint event store on {server}")
    print(f"{'':3} {'what':44} {'ours':>12} {'baseline':>12} {'ratio':>6}  target")
    for r in results:
        if r.name in ("B6", "B7r"):
            ours, base = f"{r.ours:>10,.0f}/s", f"{r.raw:>10,.0f}/s"
        elif r.name == "B5e":
            ours, base = f"{r.ours:>10,.0f} B", f"{r.raw:>10,.0f} B"
        else:
            ours, base = f"{r.ours * 1e6:>9,.0f} µs", f"{r.raw * 1e6:>9,.0f} µs"
        verdict = "ok" if r.met() else "MISSED"
        print(f"{r.name:3} {r.what:44} {ours:>12} {base:>12} {r.ratio:>6.2f}  {r.target} {verdict}")
        if r.note:
            print(f"{'':4}{r.note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["redis", "valkey"], default="redis")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=[], help="run only these, e.g. B6 B8")
    args = parser.parse_args()
    only = {name.upper() for name in args.only}
    if "B5E" in only:
        only.add("B7R")  # B5e measures the history that B7r writes
    report(asyncio.run(main(args.server, args.rounds, only)), args.server)
