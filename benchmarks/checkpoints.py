"""Checkpoint-store benchmarks: our rate beside raw redis-py on the same server, same run.

    python -m benchmarks.checkpoints [--server redis|valkey] [--rounds 5] [--scale 1.0]

Starts its own server on a free loopback port. Each figure is a ratio of ours to raw
redis-py (B1-B4: rates, higher is better; B5: bytes held in Redis per encoded envelope
byte, lower is better). Each side's best of `--rounds` runs is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import JsonValue
from redis.asyncio import Redis

from redis_checkpoint import PersistenceEnvelope, RedisPersistenceStore
from redis_checkpoint.codec import encode_envelope
from redis_checkpoint.conformance.servers import ServerProcess, redis_binary, valkey_binary

PAYLOAD: JsonValue = {"order_id": "1001", "blob": "x" * 1000}  # 1 KiB of JSON


def env(trace_id: str, step: int) -> PersistenceEnvelope:
    return PersistenceEnvelope(
        trace_id=trace_id,
        circuit="Bench",
        schematic_version="1.0",
        step=step,
        node_id="node-7",
        outcome_kind="Next",
        timestamp_ms=1_760_000_000_000,
        payload=PAYLOAD,
    )


BLOB = encode_envelope(env("raw", 1))


@dataclass
class Result:
    name: str
    what: str
    ours: float
    raw: float
    target: str
    note: str = ""  # e.g. the server time per call of each side

    @property
    def ratio(self) -> float:
        return self.ours / self.raw

    def met(self) -> bool:
        op, value = self.target.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)


Run = Callable[[int], Awaitable[None]]


async def server_times(raw: Redis, ours: str, theirs: str) -> str:
    """The server's own time per call (`INFO commandstats`) of command `ours` and `theirs`
    since the last CONFIG RESETSTAT: what a sequential call cannot go below."""
    stats = await raw.info("commandstats")

    def per_call(name: str) -> float:
        return float(stats.get(f"cmdstat_{name}", {}).get("usec_per_call", 0.0))

    return f"server µs/call: {ours} {per_call(ours):.1f}, {theirs} {per_call(theirs):.1f}"


async def compare(ops: int, ours: Run, raw: Run, rounds: int) -> tuple[float, float]:
    """Best rate (ops/s) of each side over interleaved rounds, so that noise on a shared
    machine hits both alike. `run` gets the round number."""
    best = [0.0, 0.0]
    for r in range(rounds):
        for side, run in enumerate((ours, raw)):
            gc.collect()  # garbage from earlier rounds must not bill either side
            start = time.perf_counter()
            await run(r)
            best[side] = max(best[side], ops / (time.perf_counter() - start))
    return best[0], best[1]


async def b1(store: RedisPersistenceStore, raw: Redis, n: int, rounds: int) -> Result:
    batches = [[env(f"b1-{r}", i) for i in range(n)] for r in range(rounds)]

    async def ours(r: int) -> None:
        for e in batches[r]:
            await store.append(e)

    async def theirs(r: int) -> None:
        for _ in range(n):
            await raw.xadd(f"raw:b1:{r}", {"e": BLOB})

    await raw.config_resetstat()
    rates = await compare(n, ours, theirs, rounds)
    note = await server_times(raw, "evalsha", "xadd")
    return Result("B1", "sequential append vs XADD", *rates, ">= 0.8", note)


async def b2(store: RedisPersistenceStore, raw: Redis, n: int, rounds: int) -> Result:
    writers = 64
    envs = {
        (r, w): [env(f"b2-{r}-{w}", i) for i in range(n)]
        for r in range(rounds)
        for w in range(writers)
    }

    async def ours(r: int) -> None:
        async def writer(w: int) -> None:
            for e in envs[r, w]:
                await store.append(e)

        await asyncio.gather(*(writer(w) for w in range(writers)))

    async def theirs(r: int) -> None:
        async def writer(w: int) -> None:
            for _ in range(n):
                await raw.xadd(f"raw:b2:{r}:{w}", {"e": BLOB})

        await asyncio.gather(*(writer(w) for w in range(writers)))

    rates = await compare(n * writers, ours, theirs, rounds)
    return Result("B2", "64 concurrent writers vs 64 XADD tasks", *rates, ">= 1.0")


async def b3(store: RedisPersistenceStore, raw: Redis, n: int, rounds: int) -> Result:
    size = 100
    batches = [
        [[env(f"b3-{r}", b * size + i) for i in range(size)] for b in range(n)]
        for r in range(rounds)
    ]

    async def ours(r: int) -> None:
        for batch in batches[r]:
            await store.append_many(batch)

    async def theirs(r: int) -> None:
        for _ in range(n):
            async with raw.pipeline(transaction=False) as pipe:
                for _ in range(size):
                    pipe.xadd(f"raw:b3:{r}", {"e": BLOB})
                await pipe.execute()

    rates = await compare(n * size, ours, theirs, rounds)
    return Result("B3", "append_many(100) vs pipelined XADD x100", *rates, ">= 0.6")


async def b4(store: RedisPersistenceStore, raw: Redis, n: int, rounds: int) -> Result:
    for start in range(0, n, 500):
        await store.append_many([env("b4", i) for i in range(start, min(n, start + 500))])
    stream = store.keys("b4").stream

    async def ours(r: int) -> None:
        trace = await store.load("b4")
        assert trace is not None and len(trace.events) == n

    async def theirs(r: int) -> None:
        assert len(await raw.xrange(stream) or ()) == n

    rates = await compare(n, ours, theirs, rounds)
    return Result("B4", f"load of {n:,} envelopes vs XRANGE", *rates, ">= 0.5")


async def b5(store: RedisPersistenceStore, raw: Redis, n: int) -> Result:
    keys = store.keys("b4")  # written by B4
    used = [await raw.memory_usage(k, samples=0) or 0 for k in keys.own]
    per_envelope = sum(used) / n
    return Result(
        "B5", "Redis bytes per envelope / encoded bytes", per_envelope, len(BLOB), "<= 1.3"
    )


async def main(server: str, rounds: int, scale: float, only: set[str]) -> list[Result]:
    binary = redis_binary() if server == "redis" else valkey_binary()
    if binary is None:
        raise SystemExit(f"no {server} server binary found")
    with ServerProcess(binary) as proc:
        raw = Redis.from_url(proc.url)
        store = RedisPersistenceStore(Redis.from_url(proc.url), prefix="bench")
        await store.append(env("warm-up", 0))
        await raw.xadd("raw:warm-up", {"e": BLOB})

        def s(count: int) -> int:
            return max(1, int(count * scale))

        benches: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            ("B1", lambda: b1(store, raw, s(2000), rounds)),
            ("B2", lambda: b2(store, raw, s(50), rounds)),
            ("B3", lambda: b3(store, raw, s(40), rounds)),
            ("B4", lambda: b4(store, raw, 10_000, rounds * 2)),
            ("B5", lambda: b5(store, raw, 10_000)),
        ]
        results = []
        for name, bench in benches:
            if only and name not in only:
                continue
            print(f"running {name} ...", flush=True)
            results.append(await bench())
        await store.aclose()
        await store.redis.aclose()
        await raw.aclose()
    return results


def report(results: list[Result], server: str) -> None:
    print(f"\nredis-checkpoint vs raw redis-py on {server}, 1 KiB payload ({len(BLOB)} B encoded)")
    print(f"{'':3} {'what':44} {'ours':>12} {'raw':>12} {'ratio':>6}  target")
    for r in results:
        unit = "B" if r.name == "B5" else "/s"
        print(
            f"{r.name:3} {r.what:44} {r.ours:>10,.0f}{unit:>2} {r.raw:>10,.0f}{unit:>2} "
            f"{r.ratio:>6.2f}  {r.target} {'ok' if r.met() else 'MISSED'}"
        )
        if r.note:
            print(f"{'':4}{r.note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["redis", "valkey"], default="redis")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--only", nargs="*", default=[], help="run only these, e.g. B1 B4")
    args = parser.parse_args()
    only = {name.upper() for name in args.only}
    if only & {"B4", "B5"}:
        only |= {"B4", "B5"}  # B5 measures the trace that B4 writes
    report(asyncio.run(main(args.server, args.rounds, args.scale, only)), args.server)
