"""Cluster benchmarks: the checkpoint store on a Redis Cluster beside the same store on one
standalone server, same run, same machine.

    python -m benchmarks.cluster [--server redis|valkey] [--rounds 5] [--scale 1.0]

Starts a cluster of 3 primaries and 3 replicas and a standalone server on free loopback
ports. B9 and B10 are rates on the cluster over rates on the standalone server; B11 is the
cluster's rate with `replicas=1` (a WAIT after each write) over its rate without. Each
side's best of `--rounds` interleaved runs is compared. Raw redis-py's XADD rates on both
are printed beside them, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from redis.asyncio import Redis, RedisCluster

from redis_checkpoint import RedisPersistenceStore
from redis_checkpoint.conformance.servers import (
    ClusterProcess,
    ServerProcess,
    redis_binary,
    valkey_binary,
)
from redis_checkpoint.connection import close, connect
from redis_checkpoint.errors import TREE

from .checkpoints import BLOB, Result, compare, env, report

WRITERS = 64


def sequential(store: RedisPersistenceStore, name: str, n: int) -> Any:
    async def run(r: int) -> None:
        for step in range(n):
            await store.append(env(f"{name}-{r}", step))

    return run


def concurrent(store: RedisPersistenceStore, name: str, n: int) -> Any:
    async def run(r: int) -> None:
        async def writer(w: int) -> None:
            for step in range(n):
                await store.append(env(f"{name}-{r}-{w}", step))

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    return run


async def raw_rate(client: Redis | RedisCluster, n: int, rounds: int) -> str:
    """Raw redis-py's sequential XADD rate, for scale."""

    async def run(r: int) -> None:
        for _ in range(n):
            await client.xadd(f"{{raw:{r}}}:s", {"e": BLOB})

    best, _ = await compare(n, run, run, rounds)
    return f"{best:,.0f}/s"


async def main(server: str, rounds: int, scale: float) -> list[Result]:
    binary = redis_binary() if server == "redis" else valkey_binary()
    if binary is None:
        raise SystemExit(f"no {server} server binary found")
    n = max(1, int(1000 * scale))
    with ClusterProcess(binary) as cluster, ServerProcess(binary) as single:
        stores = {
            "cluster": RedisPersistenceStore.from_url(cluster.url, prefix="bench"),
            "single": RedisPersistenceStore.from_url(single.url, prefix="bench"),
            "waiting": RedisPersistenceStore.from_url(cluster.url, prefix="bw", replicas=1),
        }
        for store in stores.values():
            await store.append(env("warm-up", 0))
        cluster_store, single_store = stores["cluster"], stores["single"]
        print("running B9 ...", flush=True)
        many = max(1, n // 20)
        b9 = await compare(
            many * WRITERS,
            concurrent(cluster_store, "b9c", many),
            concurrent(single_store, "b9s", many),
            rounds,
        )
        print("running B10 ...", flush=True)
        b10 = await compare(
            n, sequential(cluster_store, "b10c", n), sequential(single_store, "b10s", n), rounds
        )
        print("running B11 ...", flush=True)
        b11 = await compare(
            n, sequential(stores["waiting"], "b11w", n), sequential(cluster_store, "b11", n), rounds
        )
        raw_cluster = connect(cluster.url, TREE, 10.0)
        raw_single = Redis.from_url(single.url)
        scale_note = (
            f"raw redis-py XADD, sequential: cluster {await raw_rate(raw_cluster, n, rounds)}, "
            f"standalone {await raw_rate(raw_single, n, rounds)}"
        )
        for client in (raw_cluster, raw_single):
            await close(client)
        for store in stores.values():
            await store.aclose()
    return [
        Result("B9", "64 concurrent appends: cluster vs standalone", *b9, ">= 0.9"),
        Result("B10", "sequential append: cluster vs standalone", *b10, ">= 0.8", scale_note),
        Result("B11", "sequential append, cluster: replicas=1 vs 0", *b11, ">= 0.0", "report"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["redis", "valkey"], default="redis")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    args = parser.parse_args()
    report(asyncio.run(main(args.server, args.rounds, args.scale)), f"{args.server} cluster")
