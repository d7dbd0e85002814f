"""The write-behind flusher: applies the changes a tiered store's cache recorded in its
outboxes (lua/_cache.lua) to the durable store, exactly once and in order.

Each pass takes, per outbox, a batch (`lua/take.lua`: the flusher's own pending entries,
else those a crashed or stalled flusher held longer than `claim_idle`, else new ones). The
batch's leading run of consecutive changes is applied in one database transaction together
with the outbox's progress (`sql.Database.apply_outbox`): changes applied before are
skipped, so a batch applied twice, by a flusher that stalled and one that took over, changes
nothing, and a batch that does not follow on from the last one applied waits. Only after the
commit are the entries acknowledged and deleted, and the records' expiry armed
(`lua/settle.lua`). Many flushers may run at once, in-process or as `redis-checkpoint flush`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .client import RedisBacked
from .sql import Database, OutboxGap, OutboxRewound, Tx

log = logging.getLogger(__name__)
GROUP = "flush"


class Changes(Protocol):
    """One contract's side of flushing: its outboxes, and what their entries mean."""

    def __init__(self, cache: Any) -> None:
        """The side of flushing of `cache`, the contract's Redis store."""

    def outboxes(self) -> list[str]:
        """The outbox stream of every shard."""
        ...

    def parse(self, fields: dict[bytes, bytes], items: list[bytes]) -> tuple[str, Any]:
        """The record an entry changes (its id) and the change, from the entry's fields
        (the last of each name) and its items (the values of its `e` fields, in order)."""
        ...

    def settled(self, record: str) -> tuple[str, str, str, str]:
        """The keys of `record` whose expiry lua/settle.lua arms, the meta hash second."""
        ...


class Durable(Protocol):
    database: Database

    async def apply_changes(self, tx: Tx, changes: Sequence[Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the outboxes hold: changes not yet durable, and the age of the oldest (s)."""

    changes: int
    lag: float | None


class Flusher:
    """Applies one tiered store's outboxes to its durable store.

    Args:
        cache: the tiered store's Redis store (in write-behind mode).
        durable: the durable store (it applies changes with their outbox's progress).
        changes: the contract's side (`Changes`).
        batch: entries taken per outbox per pass.
        claim_idle: seconds an entry waits in another flusher's hands before this one takes
            it over (that flusher crashed or stalled; taking over early only costs work).
    """

    def __init__(
        self,
        cache: RedisBacked,
        durable: Durable,
        changes: Changes,
        *,
        batch: int = 1000,
        claim_idle: float = 5.0,
    ) -> None:
        check = cache.errors.check
        self.cache, self.durable, self.changes = cache, durable, changes
        self.batch = check.integer(batch, "batch", 1, 100_000)
        self.claim_ms = round(check.seconds(claim_idle, "claim_idle") * 1000)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.applied = 0  # changes this flusher applied (not those it found applied)
        self.rewound: dict[str, str] = {}  # outboxes that went back in time (OutboxRewound)
        self._turn = asyncio.Lock()  # one pass at a time in this process

    async def run_once(self) -> int:
        """One pass over every outbox; returns the changes applied."""
        async with self._turn:
            async with self.cache.deadline(write=True):
                boxes = self.changes.outboxes()
                taken = await asyncio.gather(*(self._take(box) for box in boxes))
            jobs = [self._apply(box, *got) for box, got in zip(boxes, taken, strict=True) if got[1]]
            applied = sum(await asyncio.gather(*jobs))
        self.applied += applied
        return applied

    async def run(self, stop: asyncio.Event, on_pass: Callable[[int], Any] | None = None) -> None:
        """Pass after pass until `stop` is set: at once while there is work, backing off
        to 0.2 s when idle, and to 1 s after a failure (the database down: the backlog
        waits in the outboxes)."""
        idle = 0.005
        while not stop.is_set():
            try:
                applied = await self.run_once()
            except Exception as exc:  # the pass failed as a whole; the entries wait
                log.warning("flusher pass failed, retrying in 1 s: %s", exc)
                applied, idle = 0, 1.0
            else:
                idle = 0.005 if applied else min(idle * 2, 0.2)
            if on_pass is not None:
                on_pass(applied)
            if not applied:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)

    async def _take(self, box: str) -> tuple[bool, list[Any]]:
        args = (GROUP, self.consumer, self.batch, self.claim_ms)
        fresh, entries = await self.cache._script("take", (box,), args, record=False)
        return bool(fresh), entries

    async def _apply(self, box: str, fresh: bool, entries: list[Any]) -> int:
        """Apply the leading run of consecutive changes of `entries`, then settle them."""
        run = _consecutive(entries)
        epoch, first = _position(run[0][0])
        records, changes = [], []
        for _, fields in run:
            record, change = self.changes.parse(*_fields(fields))
            records.append(record)
            changes.append(change)
        database = self.durable.database
        try:
            applied = await database.apply_outbox(
                box, epoch, first, changes, self.durable.apply_changes, fresh
            )
        except OutboxGap as exc:  # an earlier batch is in another flusher's hands
            log.debug("%s", exc)
            return 0
        except OutboxRewound as exc:  # loud, and the outbox waits: see check()
            log.error("%s", exc)
            self.rewound[box] = str(exc)
            return 0
        last = {record: first + i for i, record in enumerate(records)}  # each one's last n
        keys = [key for record in last for key in self.changes.settled(record)]
        ids = [entry_id for entry_id, _ in run]
        args = (GROUP, len(ids), *ids, *last.values())
        async with self.cache.deadline(write=True):
            await self.cache._script("settle", (box, *keys), args, record=False)
        return applied

    async def backlog(self) -> Backlog:
        """The changes waiting in every outbox, and how long the oldest has waited."""
        boxes = self.changes.outboxes()
        commands: list[tuple[Any, ...]] = []
        for box in boxes:
            commands += [("XLEN", box), ("XRANGE", box, "-", "+", "COUNT", 1)]
        async with self.cache.deadline(write=False):
            replies = await self.cache._commands(commands)
        oldest = [_fields(first[0][1])[0].get(b"w") for first in replies[1::2] if first]
        lag = time.time() - min(int(w) for w in oldest if w) / 1000 if oldest else None
        return Backlog(sum(map(int, replies[::2])), lag)

    async def marks(self) -> dict[str, bytes]:
        """The id of the last change each outbox has recorded so far (`flush` waits for
        them); outboxes that never recorded one are left out."""
        boxes = self.changes.outboxes()
        async with self.cache.deadline(write=False):
            replies = await self.cache._commands(
                [("HMGET", f"{box}:n", "epoch", "n") for box in boxes]
            )
        return {box: b"%b-%b" % (e, n) for box, (e, n) in zip(boxes, replies, strict=True) if n}

    async def pending(self, marks: dict[str, bytes]) -> dict[str, bytes]:
        """Of `marks`, the outboxes that still hold a change up to their mark."""
        boxes = list(marks)
        async with self.cache.deadline(write=False):
            replies = await self.cache._commands(
                [("XRANGE", box, "-", marks[box], "COUNT", 1) for box in boxes]
            )
        return {box: marks[box] for box, found in zip(boxes, replies, strict=True) if found}


def _fields(flat: list[bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """An entry's fields by name, and the values of its `e` fields in order."""
    names, items = {}, []
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        if name == b"e":
            items.append(value)
        else:
            names[name] = value
    return names, items


def _position(entry_id: bytes) -> tuple[int, int]:
    epoch, _, n = entry_id.partition(b"-")
    return int(epoch), int(n)


def _consecutive(entries: list[Any]) -> list[Any]:
    """The leading entries whose changes are consecutive (same epoch, n + 1 each)."""
    epoch, n = _position(entries[0][0])
    run = [entries[0]]
    for entry in entries[1:]:
        if _position(entry[0]) != (epoch, n + 1):
            break
        run.append(entry)
        n += 1
    return run
