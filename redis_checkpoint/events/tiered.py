"""`TieredEventStore`: a `RedisEventStore` as the cache in front of a durable event store
(PostgreSQL or SQLite), write-behind or write-through (see `..tiering`).

Histories are the hot path and go through the cache. Timers, packages, routes and
visibility rows are small, and the engine reads them back with scans (due timers, listings)
that only the durable store can answer whole once the cache has evicted anything: they are
written to and read from the durable store in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ..keys import shard_keys
from ..outbox import EventsAppended
from ..tiering import Tiered
from . import arguments
from .models import EventBase, TimerId
from .protocol import WriteToken
from .records import (
    ListWorkflowsFilter,
    PackageRecord,
    PackageRouteRecord,
    RunSummary,
    TimerEntry,
    VisibilityRecord,
    WorkflowFilter,
    WorkflowSummary,
    run_chain_from_history,
)
from .redis_store import RedisEventStore
from .sql_store import SqlEventStore
from .stored import decode_event


class _Histories:
    """The event side of flushing: what lua/append_events.lua records."""

    def __init__(self, cache: RedisEventStore) -> None:
        self.cache = cache

    def outboxes(self) -> list[str]:
        return shard_keys(self.cache.prefix, self.cache.shards, "outbox:w")

    def parse(self, fields: dict[bytes, bytes], items: list[bytes]) -> tuple[str, Any]:
        wf, first = UUID(fields[b"t"].decode()), int(fields[b"o"])
        events = tuple(decode_event(raw, seq, wf) for seq, raw in enumerate(items, first))
        return str(wf), EventsAppended(wf, events)

    def settled(self, record: str) -> tuple[str, str, str, str]:
        return self.cache.keys(UUID(record)).settled


class TieredEventStore(Tiered):
    """An `EventStore` and `VisibilityStore` with Redis in front of a durable store.

    Args:
        cache: a `RedisEventStore`; its `completed_ttl` evicts from Redis only.
        durable: a `PostgresEventStore` or `SqliteEventStore`.
        mode, max_backlog, flusher, batch, claim_idle: see `TieredPersistenceStore`.
    """

    cache: RedisEventStore
    durable: Any
    cache_type = RedisEventStore
    durable_type = SqlEventStore
    changes_type = _Histories

    def _dropped(self, wf: UUID) -> tuple[str, ...]:
        keys = self.cache.keys(wf)
        return (*keys.own, keys.lease)

    async def append(
        self,
        token: WriteToken,
        workflow_id: UUID,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """See `WritableEventStore.append`: fenced by the cache (write-behind, which holds
        the whole history once warmed) or by the durable store (write-through)."""
        wf = arguments.workflow_id(workflow_id)
        keys = self.cache.keys(wf)

        async def warm() -> bool:
            return await self._warm(
                keys.lease, lambda: self.durable.read_history(wf), self._put(wf)
            )

        await self._write(
            str(wf),
            lambda: self.cache.append(token, wf, events, expected_seq),
            lambda: self.durable.append(token, wf, events, expected_seq),
            warm,
            self._dropped(wf),
        )

    def _put(self, wf: UUID) -> Any:
        async def put(token: bytes, history: list[EventBase]) -> bool:
            return await self.cache.warm(wf, token, history)

        return put

    async def read_history(self, workflow_id: UUID) -> list[EventBase]:
        return await self.read_history_from(workflow_id, 1)

    async def read_history_from(
        self, workflow_id: UUID, from_seq: int, *, limit: int | None = None
    ) -> list[EventBase]:
        """Events with `seq >= from_seq`, from the cache; on a miss from the durable store
        (warming the cache with the whole history)."""
        wf = arguments.workflow_id(workflow_id)
        start = max(arguments.seq(from_seq, "from_seq"), 1)
        top = None if limit is None else arguments.limit(limit)
        history = await self._read(
            str(wf),
            lambda: self.cache.cached_history(wf, start),
            lambda: self.durable.read_history(wf),
            self._put(wf),
            self.cache.keys(wf).lease,
        )
        found = [event for event in history if event.seq >= start]
        return found if top is None else found[:top]

    async def read_run_chain(self, workflow_id: UUID) -> list[RunSummary]:
        return run_chain_from_history(await self.read_history(workflow_id))

    # -- scans: the durable store's, after a flush in write-behind mode -----------------

    async def list_workflow_ids(self) -> list[UUID]:
        await self.flush()
        ids: list[UUID] = await self.durable.list_workflow_ids()
        return ids

    async def list_active(self) -> list[UUID]:
        await self.flush()
        ids: list[UUID] = await self.durable.list_active()
        return ids

    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        await self.flush()
        found: list[WorkflowSummary] = await self.durable.query(filter)
        return found

    # -- the durable store's alone, in both modes ----------------------------------------

    async def schedule_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> None:
        await self.durable.schedule_timer(workflow_id, timer_id, fire_at)

    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        due: list[TimerEntry] = await self.durable.expired_timers(as_of)
        return due

    async def retire_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> bool:
        retired: bool = await self.durable.retire_timer(workflow_id, timer_id, fire_at)
        return retired

    async def put_package(self, record: PackageRecord) -> None:
        await self.durable.put_package(record)

    async def list_packages(self) -> list[PackageRecord]:
        packages: list[PackageRecord] = await self.durable.list_packages()
        return packages

    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        await self.durable.delete_package(workflow_type, content_hash)

    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        await self.durable.put_package_route(workflow_type, content_hash)

    async def list_package_routes(self) -> list[PackageRouteRecord]:
        routes: list[PackageRouteRecord] = await self.durable.list_package_routes()
        return routes

    async def record_visibility(self, record: VisibilityRecord) -> None:
        await self.durable.record_visibility(record)

    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        rows: list[VisibilityRecord] = await self.durable.list_workflows(filter)
        return rows

    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        count: int = await self.durable.count_workflows(filter)
        return count
