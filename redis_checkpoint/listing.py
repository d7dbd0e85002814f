"""Listing a per-shard sorted-set index across all shards, newest first, exactly once.

Each shard keeps its own index (`{<prefix>:<shard>}:<name>`, scored by the server's time of
the last write), so a listing merges every shard's. A shard is read in pages by a cursor on
(score, member), never by offset, so entries removed meanwhile (expired traces) cannot shift
a page past live ones. A write during the listing moves its trace above the listing's start
time: the listing then reads, ascending, what moved, and skips the ids it has already
returned (it remembers them: a few dozen bytes per id).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import pairs
from .keys import shard_keys

log = logging.getLogger(__name__)

ROUNDS = 1000  # round trips catching up with writes, at most (endless creation outpaces it)
Read = Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]  # RedisBacked._commands


@dataclass
class _Cursor:
    key: str
    buffer: list[tuple[bytes, float]] = field(default_factory=list)
    score: float | None = None  # the last (score, member) taken from this shard
    member: bytes = b""
    ties: int = 0  # members taken at exactly `score`
    done: bool = False

    def take(self) -> tuple[bytes, float]:
        member, score = self.buffer.pop(0)
        self.ties = self.ties + 1 if score == self.score else 1
        self.score, self.member = score, member
        return member, score

    def command(self, low: str, high: str, page: int) -> tuple[object, ...]:
        top = high if self.score is None else repr(self.score)
        command = ("ZREVRANGEBYSCORE", self.key, top, low, "WITHSCORES", "LIMIT", 0)
        return (*command, page + self.ties)

    def fill(self, reply: list[bytes], page: int) -> None:
        found = [(m, float(s)) for m, s in pairs(reply)]
        self.done = len(found) < page + self.ties
        # Members at the cursor's own score come in descending order: skip those taken.
        self.buffer = [(m, s) for m, s in found if s != self.score or m < self.member]


async def _server_ms(read: Read) -> float:
    [(seconds, micros)] = await read([("TIME",)])
    return float(int(seconds) * 1000 + int(micros) // 1000)


async def _fill(read: Read, cursors: list[_Cursor], low: str, high: str, page: int) -> None:
    replies = await read([cursor.command(low, high, page) for cursor in cursors])
    for cursor, reply in zip(cursors, replies, strict=True):
        cursor.fill(reply, page)


async def _pass(
    read: Read, keys: list[str], low: str, high: str, page: int
) -> AsyncIterator[bytes]:
    """Members scored in (low, high] of every shard, highest first."""
    cursors = [_Cursor(key) for key in keys]
    await _fill(read, cursors, low, high, page)
    heap = [(-c.buffer[0][1], i) for i, c in enumerate(cursors) if c.buffer]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        cursor = cursors[i]
        member, _ = cursor.take()
        yield member
        if not cursor.buffer and not cursor.done:  # refill this shard alone
            await _fill(read, [cursor], low, high, page)
        if cursor.buffer:
            heapq.heappush(heap, (-cursor.buffer[0][1], i))


@dataclass
class _Up:
    """An ascending cursor on (score, member) over one shard's index."""

    key: str
    score: float | None = None
    member: bytes = b""
    ties: int = 0  # members taken at exactly `score`

    def command(self, since: str, page: int) -> tuple[object, ...]:
        low = since if self.score is None else repr(self.score)
        return ("ZRANGEBYSCORE", self.key, low, "+inf", "WITHSCORES", "LIMIT", 0, page + self.ties)

    def fill(self, reply: list[bytes], page: int) -> tuple[list[bytes], bool]:
        """The members past the cursor, and whether the read reached the end of the index."""
        found = [(m, float(s)) for m, s in pairs(reply)]
        fresh = [
            (m, s)
            for m, s in found
            if self.score is None or s > self.score or (s == self.score and m > self.member)
        ]
        for member, score in fresh:
            self.ties = self.ties + 1 if score == self.score else 1
            self.score, self.member = score, member
        return [m for m, _ in fresh], len(found) < page + self.ties


async def _catch_up(
    read: Read, keys: list[str], since: str, page: int, seen: set[bytes]
) -> AsyncIterator[bytes]:
    """Members scored from `since` on, ascending, that are not in `seen`. Writes only raise
    a score, so a member that moves stays ahead of the cursor; a shard is done when one
    read returned everything above its cursor and nothing unseen."""
    cursors = [_Up(key) for key in keys]
    for _ in range(ROUNDS):
        if not cursors:
            return
        replies = await read([cursor.command(since, page) for cursor in cursors])
        going = []
        for cursor, reply in zip(cursors, replies, strict=True):
            members, complete = cursor.fill(reply, page)
            new = [member for member in members if member not in seen]
            for member in new:
                seen.add(member)
                yield member
            if new or not complete:
                going.append(cursor)
        cursors = going
    log.warning("listing stopped after %d rounds: writes outpace it", ROUNDS)


async def iter_index(
    read: Read, prefix: str, shards: int, name: str, page: int
) -> AsyncIterator[bytes]:
    """Every member of the shards' `name` index once; a member present for the whole listing
    is returned whatever writes move it meanwhile.

    First, newest first, what is scored up to the listing's start; then, ascending, what
    writes moved from there on, skipping what was returned.
    """
    keys = shard_keys(prefix, shards, name)
    seen: set[bytes] = set()
    started = repr(await _server_ms(read))
    async for member in _pass(read, keys, "-inf", started, page):
        seen.add(member)
        yield member
    async for member in _catch_up(read, keys, started, page, seen):
        yield member
