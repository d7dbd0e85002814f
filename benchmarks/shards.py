"""What the shard count buys and costs on a Redis Cluster: how evenly the shards' hash
tags spread over the primaries, and what a listing and `check()` take.

    python -m benchmarks.shards [--server redis|valkey] [--traces 2000]

Balance is computed from the slots of the tags: the busiest primary's share of the shards
over the mean share, for the default prefix and as the median over 200 prefixes (1.00 is
even). Listing and check() are timed on a cluster of 3 primaries this script starts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter

from redis.crc import key_slot

from redis_checkpoint import RedisPersistenceStore
from redis_checkpoint.conformance.servers import ClusterProcess, redis_binary, valkey_binary
from redis_checkpoint.keys import shard_tag

from .checkpoints import env

SHARDS = (64, 256, 1024)
PRIMARIES = (3, 6, 16, 64)


def busiest(prefix: str, shards: int, primaries: int) -> float:
    """The busiest primary's count of shard tags over the mean, with slots split evenly."""
    nodes = Counter(
        key_slot(shard_tag(prefix, s).encode()) * primaries // 16384 for s in range(shards)
    )
    return max(nodes.values()) / (shards / primaries)


def balance() -> None:
    print("busiest primary / mean (default prefix 'rc'; median of 200 prefixes)")
    print(f"{'shards':>7} " + " ".join(f"{p:>5} primaries" for p in PRIMARIES))
    for shards in SHARDS:
        cells = []
        for primaries in PRIMARIES:
            median = statistics.median(busiest(f"p{i}", shards, primaries) for i in range(200))
            cells.append(f"{busiest('rc', shards, primaries):>5.2f} ({median:.2f})")
        print(f"{shards:>7} " + " ".join(f"{cell:>15}" for cell in cells))


async def costs(url: str, traces: int) -> None:
    print(f"\nlisting {traces:,} traces and check() on a 3-primary cluster (best of 3)")
    for shards in SHARDS:
        store = RedisPersistenceStore.from_url(url, prefix=f"s{shards}", shards=shards)
        for start in range(0, traces, 100):
            await asyncio.gather(
                *(store.append(env(f"t{i}", 0)) for i in range(start, start + 100))
            )
        listing = checking = float("inf")
        for _ in range(3):
            begun = time.perf_counter()
            listed = [s async for s in store.iter_traces()]
            listing = min(listing, time.perf_counter() - begun)
            assert len(listed) == traces
            begun = time.perf_counter()
            await store.check()
            checking = min(checking, time.perf_counter() - begun)
        ms = f"listing {listing * 1000:7.1f} ms, check() {checking * 1000:6.1f} ms"
        print(f"{shards:>7} shards: {ms}")
        await store.aclose()


def main(server: str, traces: int) -> None:
    balance()
    binary = redis_binary() if server == "redis" else valkey_binary()
    if binary is None:
        raise SystemExit(f"no {server} server binary found")
    with ClusterProcess(binary) as cluster:
        asyncio.run(costs(cluster.url, traces))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["redis", "valkey"], default="redis")
    parser.add_argument("--traces", type=int, default=2000)
    args = parser.parse_args()
    main(args.server, args.traces)
