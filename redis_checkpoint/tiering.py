"""What both tiered stores share: a Redis store as the cache in front of a durable store, in
one of two modes, with the read path, the warm under a lease, the write paths and the
flusher's lifecycle written once.

write-behind: a write is acknowledged once Redis has it; the same script records the change
in its shard's outbox (lua/_cache.lua) and a flusher applies it to the durable store. A
write to a record the cache does not hold warms it first, so the contract's checks always
see the whole record. The durable store lags: listings first wait for the backlog that was
acknowledged before them (`flush`), and a read the cache cannot answer fails rather than
return less than was acknowledged.

write-through: a write commits to the durable store, then drops the record from the cache;
the next read warms it. A cache that cannot be reached degrades to the durable store: reads
go there, and a write whose drop failed is remembered and dropped again before this process
reads that record from the cache.

A read that misses takes the record's lease, reads the durable store, and warms the cache
only if the lease still stands: a write that invalidated the record meanwhile removed it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from .client import Miss, RedisBacked
from .failures import Closed, Unavailable
from .flusher import Changes, Flusher

log = logging.getLogger(__name__)
T = TypeVar("T")
MODES = ("write-behind", "write-through")


class Tiered:
    """The shared part of `TieredPersistenceStore` and `TieredEventStore`.

    Args:
        cache: the Redis store in front (its ttl / completed_ttl evict from Redis only).
        durable: the store behind (the PostgreSQL or SQLite store of the contract).
        mode: "write-behind" or "write-through".
        max_backlog: write-behind: the most unflushed changes one shard's outbox holds; a
            write beyond raises Backpressure.
        flusher: write-behind: run a flusher in this process while the store is open
            (`async with`); False when `redis-checkpoint flush` runs elsewhere.
        batch, claim_idle: the flusher's (see `Flusher`).
    """

    cache_type: ClassVar[type[RedisBacked]]  # the contract's Redis store
    durable_type: ClassVar[type[Any]]  # and its SQL store
    changes_type: ClassVar[type[Changes]]  # its side of flushing (made with the cache)

    def __init__(
        self,
        cache: Any,
        durable: Any,
        *,
        mode: str = "write-behind",
        max_backlog: int = 100_000,
        flusher: bool = True,
        batch: int = 1000,
        claim_idle: float = 5.0,
    ) -> None:
        self.cache_type.errors.check.instance(cache, self.cache_type, "cache")
        if not isinstance(durable, self.durable_type):
            kind = self.durable_type.__name__
            raise cache.errors.invalid(f"durable must be a {kind} (PostgreSQL or SQLite)")
        changes = self.changes_type(cache)
        errors = cache.errors
        if mode not in MODES:
            raise errors.invalid(f"mode must be 'write-behind' or 'write-through', got {mode!r}")
        if not isinstance(flusher, bool):
            raise errors.invalid(f"flusher must be True or False, got {flusher!r}")
        self.cache, self.durable, self.mode = cache, durable, mode
        self.errors = errors
        self.behind = mode == "write-behind"
        self.flusher = Flusher(cache, durable, changes, batch=batch, claim_idle=claim_idle)
        backlog = errors.check.integer(max_backlog, "max_backlog", 1)
        if self.behind:
            cache.write_behind(backlog)
        self._run_flusher = flusher and self.behind
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stale: dict[str, tuple[str, ...]] = {}  # write-through drops still to make

    async def __aenter__(self) -> Self:
        await self.durable.__aenter__()
        await self.cache.__aenter__()
        if self._run_flusher and self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.flusher.run(self._stop), name="flusher")
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the in-process flusher and close both stores (unflushed changes stay in
        the outboxes for the next flusher)."""
        if self._task is not None:
            self._stop.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.cache.aclose()
        await self.durable.aclose()

    async def flush(self, wait: float = 30.0) -> None:
        """Return once every change acknowledged before the call is durable (write-behind;
        write-through has nothing to flush). Runs flusher passes itself meanwhile.

        Raises:
            StoreUnavailable (StoreUnavailableError for events): not done within `wait`
                seconds (the durable store is down, say); the changes wait in the outboxes.
        """
        if not self.behind:
            return
        seconds = self.errors.check.seconds(wait, "wait")
        marks = await self.flusher.marks()
        try:
            async with asyncio.timeout(seconds):
                while marks := await self.flusher.pending(marks):
                    try:
                        applied = await self.flusher.run_once()
                    except self.errors.unavailable as exc:
                        log.info("flush waits for the durable store: %s", exc)
                        applied = 0
                    if not applied:
                        await asyncio.sleep(0.05)
        except TimeoutError:
            backlog = await self.flusher.backlog()
            raise self.errors.unavailable(
                f"flush: {len(marks)} outbox(es) not flushed within {seconds:g}s; "
                f"{backlog.changes} change(s) wait for the durable store"
            ) from None

    async def check(self) -> dict[str, Any]:
        """Both stores' reports, and the write-behind backlog: `backlog` (changes not yet
        durable) and `lag` (seconds the oldest has waited, None when there is none).
        `warnings` gathers both stores' and the tier's; a durable store that cannot be
        reached is one of them, not a failure."""
        cache = await self.cache.check()
        report: dict[str, Any] = {"mode": self.mode, "cache": cache}
        warnings: list[str] = list(cache.get("warnings", []))
        try:
            durable = await self.durable.check()
        except Unavailable as exc:
            durable = {"error": str(exc)}
            warnings.append(f"the durable store cannot be reached: {exc}")
        report["durable"] = durable
        warnings += durable.get("warnings", [])
        warnings += self.flusher.rewound.values()
        if self.behind:
            backlog = await self.flusher.backlog()
            report |= {"backlog": backlog.changes, "lag": backlog.lag}
            if backlog.lag is not None and backlog.lag > 60:
                warnings.append(
                    f"the oldest unflushed change is {backlog.lag:.0f}s old: is a flusher running?"
                )
        return report | {"warnings": warnings}

    # -- reads ------------------------------------------------------------------------

    async def _read(
        self,
        record: str,
        cached: Callable[[], Awaitable[T]],
        durable: Callable[[], Awaitable[T]],
        warm: Callable[[bytes, T], Awaitable[bool]],
        lease: str,
    ) -> T:
        """A read: the cache's answer; on a miss the durable store's, warmed into the cache
        under `lease` (or, if another caller is warming it, the cache's once it has).
        Write-through reads the durable store while Redis is unreachable."""
        if record in self._stale:  # a write-through drop that failed: make it first
            await self._drop(record, self._stale[record])
            if record in self._stale:
                return await durable()
        deadline = asyncio.get_running_loop().time() + self.cache.timeout
        while True:
            try:
                return await cached()
            except Miss:
                pass
            except Unavailable:
                if self.behind:  # the durable store may lag: it cannot answer for the cache
                    raise
                log.warning("cache unreachable: reading %s from the durable store", record)
                return await durable()
            token = await self.cache.lease(lease)
            if token is None:  # another caller is warming it
                await self._wait_for_warm(record, deadline)
                continue
            value = await durable()
            if await warm(token, value) or not self.behind:
                # write-through: a write that took the lease away committed after the
                # durable store was read, so the value read stands
                return value
            # write-behind: written or warmed meanwhile; the cache has it, newer than `value`

    async def _wait_for_warm(self, record: str, deadline: float) -> None:
        """Wait for another caller's warm: 5 ms, then twice as long each time up to 0.2 s
        (many callers missing at once must not crowd out the one warming)."""
        loop = asyncio.get_running_loop()
        if loop.time() > deadline:
            raise self.errors.unavailable(f"{record} was being warmed by others for too long")
        waited = self.cache.timeout - (deadline - loop.time())
        await asyncio.sleep(min(0.2, max(0.005, waited)))

    # -- writes -----------------------------------------------------------------------

    async def _write(
        self,
        record: str,
        cached: Callable[[], Awaitable[T]],
        durable: Callable[[], Awaitable[T]],
        warm: Callable[[], Awaitable[bool]],
        drop: tuple[str, ...],
    ) -> T:
        """A write: write-behind to the cache (warming the record first if it misses),
        write-through to the durable store, then a drop of the record's cached copy."""
        if not self.behind:
            result = await durable()
            await self._drop(record, drop)
            return result
        deadline = asyncio.get_running_loop().time() + self.cache.timeout
        while True:
            try:
                return await cached()
            except Miss:
                if not await warm():
                    await self._wait_for_warm(record, deadline)

    async def _warm(
        self,
        lease: str,
        durable: Callable[[], Awaitable[T]],
        warm: Callable[[bytes, T], Awaitable[bool]],
    ) -> bool:
        """Warm a record for a write; False if another caller holds its lease."""
        token = await self.cache.lease(lease)
        if token is None:
            return False
        await warm(token, await durable())
        return True

    async def _drop(self, record: str, keys: tuple[str, ...]) -> None:
        """Drop a record's cached copy after a write-through commit; if Redis cannot be
        reached, remember it (this process drops it before it next reads the record)."""
        try:
            await self.cache.invalidate(keys)
        except (Unavailable, Closed) as exc:
            if isinstance(exc, Closed):
                raise
            self._stale[record] = keys
            log.warning("cache unreachable: %s stays to be dropped (%s)", record, exc)
        else:
            self._stale.pop(record, None)
