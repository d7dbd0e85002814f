"""Listing across virtual shards: a k-way merge of per-shard sorted sets, in pages.

Each shard keeps its own index (`{<prefix>:<shard>}:<name>`), so a listing reads every
shard. One pipelined round trip fetches the first page of all shards; a shard whose page
runs out is refilled on its own. Memory stays at one page per shard.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from .errors import CorruptRecord
from .keys import shard_keys

Page = list[tuple[bytes, float]]


async def _fetch(redis: Redis, keys: list[str], offsets: list[int], size: int) -> list[Page]:
    async with redis.pipeline(transaction=False) as pipe:
        for key, offset in zip(keys, offsets, strict=True):
            pipe.zrevrange(key, offset, offset + size - 1, withscores=True)
        pages: list[Page | Exception] = await pipe.execute(raise_on_error=False)
    for key, page in zip(keys, pages, strict=True):
        if isinstance(page, Exception):
            raise CorruptRecord(key, str(page))
    return pages  # type: ignore[return-value]


async def iter_shard_index(
    redis: Redis, prefix: str, shards: int, name: str, page: int
) -> AsyncIterator[list[bytes]]:
    """Members of every shard's `name` index, highest score first overall, `page` at a time."""
    keys = shard_keys(prefix, shards, name)
    buffers = await _fetch(redis, keys, [0] * shards, page)
    offsets = [len(buffer) for buffer in buffers]
    heap = [(-buffer[0][1], shard, 0) for shard, buffer in enumerate(buffers) if buffer]
    heapq.heapify(heap)
    out: list[bytes] = []
    while heap:
        _, shard, i = heapq.heappop(heap)
        out.append(buffers[shard][i][0])
        if len(out) == page:
            yield out
            out = []
        i += 1
        if i == len(buffers[shard]) == page:  # a full page ran out: the shard may hold more
            [buffers[shard]] = await _fetch(redis, [keys[shard]], [offsets[shard]], page)
            offsets[shard] += len(buffers[shard])
            i = 0
        if i < len(buffers[shard]):
            heapq.heappush(heap, (-buffers[shard][i][1], shard, i))
    if out:
        yield out
