"""Durable-tier benchmarks: the tiered store, the PostgreSQL store and the flusher, each
beside its baseline measured in the same run on the same servers.

    python -m benchmarks.durable [--rounds 5] [--scale 1.0] [--only B12 B15 D1]

Starts its own Redis server on a free loopback port and makes (then drops) a database of its
own on the PostgreSQL at RC_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/
postgres). Figures are ratios of rates, higher is better; each side's best of `--rounds`
interleaved runs is compared.

B12  write-behind append / plain Redis append (RedisPersistenceStore), sequential
B13  write-behind append / PostgresPersistenceStore.append, sequential
B14  tiered load, cache hit / PostgresPersistenceStore.load, a 50-envelope trace
B15  flusher into PostgreSQL / asyncpg executemany of the same rows, in the same batches
B16  PostgresPersistenceStore.append / a bare single-row INSERT through asyncpg
D1   the driver choice: asyncpg / psycopg 3 (async), the same one-row INSERT
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from redis_checkpoint import (
    PostgresPersistenceStore,
    RedisPersistenceStore,
    TieredPersistenceStore,
)
from redis_checkpoint.conformance.servers import ServerProcess, redis_binary

from .checkpoints import BLOB, Result, compare, env, report

POSTGRES = os.environ.get("RC_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BARE = (
    "CREATE TABLE bare (trace_id TEXT, ordinal BIGINT, blob BYTEA, PRIMARY KEY (trace_id, ordinal))"
)


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A database of this run's own, dropped at the end."""
    name = f"rc_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


@dataclass
class Setup:
    redis_url: str
    pg_url: str
    rounds: int

    def tiered(self, prefix: str, **options: object) -> TieredPersistenceStore:
        cache = RedisPersistenceStore.from_url(self.redis_url, prefix=prefix)
        durable = PostgresPersistenceStore.from_url(self.pg_url)
        return TieredPersistenceStore(cache, durable, max_backlog=10**7, **options)  # type: ignore[arg-type]


Run = Callable[[int], Awaitable[None]]


def appends(store: object, name: str, n: int, rounds: int) -> Run:
    batches = [[env(f"{name}-{r}", i) for i in range(n)] for r in range(rounds)]

    async def run(r: int) -> None:
        for e in batches[r]:
            await store.append(e)  # type: ignore[attr-defined]

    return run


async def b12(s: Setup, n: int) -> Result:
    """The flusher stays off: what is measured is the write path alone (the outbox record
    in the same script); a running flusher shares the machine in real use."""
    async with (
        s.tiered("b12", flusher=False) as tiered,
        RedisPersistenceStore.from_url(s.redis_url, prefix="b12plain") as plain,
    ):
        await tiered.append(env("warm", 0))
        await plain.append(env("warm", 0))
        rates = await compare(
            n, appends(tiered, "b12", n, s.rounds), appends(plain, "b12", n, s.rounds), s.rounds
        )
    return Result("B12", "write-behind append vs Redis append", *rates, ">= 0.85")


async def b13(s: Setup, n: int) -> Result:
    async with (
        s.tiered("b13", flusher=False) as tiered,
        PostgresPersistenceStore.from_url(s.pg_url) as pg,
    ):
        await tiered.append(env("warm", 0))
        await pg.append(env("warm", 0))
        rates = await compare(
            n, appends(tiered, "b13", n, s.rounds), appends(pg, "b13", n, s.rounds), s.rounds
        )
    return Result("B13", "write-behind append vs Postgres append", *rates, ">= 5")


async def b14(s: Setup, n: int) -> Result:
    async with s.tiered("b14") as tiered, PostgresPersistenceStore.from_url(s.pg_url) as pg:
        await tiered.append_many([env("b14", i) for i in range(50)])
        await pg.append_many([env("b14pg", i) for i in range(50)])
        assert await tiered.load("b14") is not None  # cached from here on

        async def ours(r: int) -> None:
            for _ in range(n):
                await tiered.load("b14")

        async def theirs(r: int) -> None:
            for _ in range(n):
                await pg.load("b14pg")

        rates = await compare(n, ours, theirs, s.rounds)
    return Result("B14", "tiered load (hit) vs Postgres load, 50 env", *rates, ">= 3")


async def b15(s: Setup, n: int) -> Result:
    """n appends over 64 traces wait in the outboxes; the flusher applies them (batches of
    1,000 per outbox). The baseline inserts the same rows with executemany, 1,000 a
    transaction."""
    rows = [(f"b15-{i % 64}", i // 64 + 1, BLOB) for i in range(n)]
    best = [0.0, 0.0]
    conn = await asyncpg.connect(s.pg_url)
    await conn.execute(BARE.replace("bare", "b15"))
    for r in range(s.rounds):
        async with s.tiered(f"b15r{r}", flusher=False) as tiered:
            for t in range(64):
                await tiered.append_many([env(f"b15-{t}", i) for i in range(n // 64)])
            loop = asyncio.get_running_loop()
            start = loop.time()
            while await tiered.flusher.run_once():
                pass
            best[0] = max(best[0], (n // 64 * 64) / (loop.time() - start))
        await conn.execute("TRUNCATE b15")
        start = loop.time()
        for at in range(0, n, 1000):
            async with conn.transaction():
                await conn.executemany("INSERT INTO b15 VALUES ($1, $2, $3)", rows[at : at + 1000])
        best[1] = max(best[1], n / (loop.time() - start))
    await conn.close()
    return Result("B15", "flusher vs executemany of the same rows", best[0], best[1], ">= 0.7")


async def b16(s: Setup, n: int) -> Result:
    conn = await asyncpg.connect(s.pg_url)
    await conn.execute(BARE)
    async with PostgresPersistenceStore.from_url(s.pg_url) as pg:
        await pg.append(env("warm", 0))

        async def theirs(r: int) -> None:
            for i in range(n):
                await conn.execute("INSERT INTO bare VALUES ($1, $2, $3)", f"b16-{r}", i, BLOB)

        rates = await compare(n, appends(pg, "b16", n, s.rounds), theirs, s.rounds)
    await conn.close()
    return Result("B16", "Postgres append vs bare INSERT (asyncpg)", *rates, ">= 0.6")


async def d1(s: Setup, n: int) -> Result:
    """The same one-row INSERT through both drivers, each on one connection."""
    import psycopg

    conn = await asyncpg.connect(s.pg_url)
    await conn.execute(BARE.replace("bare", "d1"))
    other = await psycopg.AsyncConnection.connect(s.pg_url, autocommit=True)

    async def ours(r: int) -> None:
        for i in range(n):
            await conn.execute("INSERT INTO d1 VALUES ($1, $2, $3)", f"a{r}", i, BLOB)

    async def theirs(r: int) -> None:
        for i in range(n):
            await other.execute("INSERT INTO d1 VALUES (%s, %s, %s)", (f"p{r}", i, BLOB))

    rates = await compare(n, ours, theirs, s.rounds)
    await conn.close()
    await other.close()
    return Result("D1", "asyncpg INSERT vs psycopg 3 INSERT", *rates, ">= 1.0")


async def main(rounds: int, scale: float, only: set[str]) -> list[Result]:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server binary found")

    def n(count: int) -> int:
        return max(1, int(count * scale))

    with ServerProcess(binary) as proc:
        async with database() as pg_url:
            s = Setup(proc.url, pg_url, rounds)
            benches: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
                ("B12", lambda: b12(s, n(2000))),
                ("B13", lambda: b13(s, n(1000))),
                ("B14", lambda: b14(s, n(500))),
                ("B15", lambda: b15(s, n(20_000))),
                ("B16", lambda: b16(s, n(1000))),
                ("D1", lambda: d1(s, n(1000))),
            ]
            results = []
            for name, bench in benches:
                if not only or name in only:
                    print(f"running {name} ...", flush=True)
                    results.append(await bench())
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--only", nargs="*", default=[], help="run only these, e.g. B12 D1")
    args = parser.parse_args()
    only = {name.upper() for name in args.only}
    report(asyncio.run(main(args.rounds, args.scale, only)), "Redis and PostgreSQL")
