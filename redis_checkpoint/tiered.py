"""`TieredPersistenceStore`: a `RedisPersistenceStore` as the cache in front of a durable
checkpoint store (PostgreSQL or SQLite), write-behind or write-through (see `tiering.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from . import codec
from .errors import TREE
from .keys import TraceKeys, shard_keys
from .models import (
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
)
from .outbox import (
    Appended,
    Completed,
    Deleted,
    DurableTraces,
    Intervened,
    Resumed,
    TraceChange,
    TraceSnapshot,
)
from .redis_store import RedisPersistenceStore
from .sql_store import SqlPersistenceStore
from .tiering import Tiered

Found = PersistedTrace | TraceSnapshot | None


class _Traces:
    """The checkpoint side of flushing: what the trace scripts record (lua/_trace.lua)."""

    def __init__(self, cache: RedisPersistenceStore) -> None:
        self.cache = cache

    def outboxes(self) -> list[str]:
        return shard_keys(self.cache.prefix, self.cache.shards, "outbox:t")

    def parse(self, fields: dict[bytes, bytes], items: list[bytes]) -> tuple[str, TraceChange]:
        trace, kind, at = fields[b"t"].decode(), fields[b"k"], int(fields[b"w"])
        key = fields.get(b"i", b"").decode() or None
        change: TraceChange
        if kind == b"a":
            circuit, version = fields[b"c"].decode(), fields[b"v"].decode()
            change = Appended(trace, circuit, version, int(fields[b"o"]), tuple(items), at, key)
        elif kind == b"c":
            change = Completed(trace, fields[b"s"].decode(), at)
        elif kind == b"r":
            change = Resumed(trace, int(fields[b"s"]), at)
        elif kind == b"i":
            change = Intervened(trace, int(fields[b"o"]), items[0], at, key)
        elif kind == b"d":
            change = Deleted(trace)
        else:
            raise TREE.corrupt(self.outboxes()[0], f"unknown change kind {kind!r}")
        return trace, change

    def settled(self, record: str) -> tuple[str, str, str, str]:
        return self.cache.keys(record).settled


class TieredPersistenceStore(Tiered):
    """A `PersistenceStore` with Redis in front of a durable store.

    Args:
        cache: a `RedisPersistenceStore`; its `ttl` and `completed_ttl` evict from Redis
            only (the durable store keeps a trace until `delete`). Write-behind needs its
            Redis to evict only keys with a TTL (maxmemory-policy volatile-* or noeviction).
        durable: a `PostgresPersistenceStore` or `SqlitePersistenceStore`.
        mode: "write-behind" (acknowledged once Redis has it) or "write-through"
            (acknowledged once the database has it).
        max_backlog, flusher, batch, claim_idle: see `tiering.Tiered`.
    """

    cache: RedisPersistenceStore
    durable: DurableTraces
    cache_type = RedisPersistenceStore
    durable_type = SqlPersistenceStore
    changes_type = _Traces

    def _keys(self, trace_id: str) -> TraceKeys:
        return self.cache.keys(trace_id)

    def _dropped(self, keys: TraceKeys) -> tuple[str, ...]:
        return (keys.stream, keys.meta, keys.interventions, keys.idempotency, keys.lease)

    async def _warm_trace(self, trace_id: str) -> bool:
        keys = self._keys(trace_id)
        snapshot, warm = self.durable.snapshot, self.cache.warm
        return await self._warm(
            keys.lease, lambda: snapshot(trace_id, True), lambda t, s: warm(trace_id, t, s)
        )

    async def _trace_write(self, trace_id: str, cached: Any, durable: Any) -> Any:
        keys = self._keys(trace_id)
        return await self._write(
            trace_id, cached, durable, lambda: self._warm_trace(trace_id), self._dropped(keys)
        )

    async def append(
        self, envelope: PersistenceEnvelope, idempotency_key: str | None = None
    ) -> None:
        """Append one envelope; see `PersistenceStore.append`."""
        await self.append_many([envelope], idempotency_key)

    async def append_many(
        self, envelopes: Iterable[PersistenceEnvelope], idempotency_key: str | None = None
    ) -> None:
        """Append envelopes of one trace, all or nothing."""
        items = TREE.check.items(envelopes, "envelopes")
        if not items:
            return
        trace_id = codec.envelope(items[0]).trace_id
        await self._trace_write(
            trace_id,
            lambda: self.cache.append_many(items, idempotency_key),
            lambda: self.durable.append_many(items, idempotency_key),  # type: ignore[attr-defined]
        )

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        cursor: ResumeCursor = await self._trace_write(
            trace_id,
            lambda: self.cache.resume(trace_id, resume_from_step),
            lambda: self.durable.resume(trace_id, resume_from_step),  # type: ignore[attr-defined]
        )
        return cursor

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; see `PersistenceStore.complete`."""
        await self._trace_write(
            trace_id,
            lambda: self.cache.complete(trace_id, completion),
            lambda: self.durable.complete(trace_id, completion),  # type: ignore[attr-defined]
        )

    async def save_intervention(
        self, trace_id: str, intervention: Intervention, idempotency_key: str | None = None
    ) -> None:
        """Append an intervention, also on a completed trace."""
        durable: Any = self.durable
        await self._trace_write(
            trace_id,
            lambda: self.cache.save_intervention(trace_id, intervention, idempotency_key),
            lambda: durable.save_intervention(trace_id, intervention, idempotency_key),
        )

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace from both tiers; returns whether it existed."""
        durable: Any = self.durable
        existed: bool = await self._trace_write(
            trace_id, lambda: self.cache.delete(trace_id), lambda: durable.delete(trace_id)
        )
        return existed

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace from the cache; on a miss from the durable store (warming the cache)."""
        durable, cache = self.durable, self.cache

        async def cached() -> Found:
            return await cache.cached_load(trace_id)

        async def from_durable() -> Found:  # a snapshot: the cache needs append order
            return await durable.snapshot(trace_id, True)

        async def warm(token: bytes, found: Found) -> bool:
            assert not isinstance(found, PersistedTrace)
            return await cache.warm(trace_id, token, found)

        found = await self._read(trace_id, cached, from_durable, warm, self._keys(trace_id).lease)
        return found.trace() if isinstance(found, TraceSnapshot) else found

    async def iter_events(self, trace_id: str) -> AsyncIterator[PersistenceEnvelope]:
        """The envelopes of a trace in append order; none for an unknown trace."""
        source: Any = self.cache
        if self.behind:
            if await self.load(trace_id) is None:  # warms the cache on a miss
                return
        else:
            source = self.durable  # the whole record, in append order
        async for envelope in source.iter_events(trace_id):
            yield envelope

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every trace, from the durable store (after a flush in write-behind mode)."""
        await self.flush()
        durable: Any = self.durable
        async for summary in durable.iter_traces(circuit=circuit, completed=completed, page=page):
            yield summary
