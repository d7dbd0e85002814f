"""`InMemoryEventStore`: the reference semantics, in one process, for tests and development.

It keeps each event in the stored form the Redis store keeps (`stored.py`), so every write
and read goes through the same encoding and checks as on Redis. No method awaits between
its check and its write, so each is atomic on the event loop without a lock. Nothing
expires and nothing is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from . import arguments
from .arguments import check, contiguity_error
from .errors import BackendError, SequenceConflict
from .models import ChildWorkflowStarted, EventBase, TimerId
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
from .stored import decode_event


class InMemoryEventStore:
    """An `EventStore` and `VisibilityStore` in memory, with the Redis store's choices:
    one visibility row per workflow, newest first; a workflow's parent is the workflow
    whose history started it (ChildWorkflowStarted; of several, the lowest id)."""

    def __init__(self) -> None:
        self._histories: dict[UUID, list[bytes]] = {}
        self._parents: dict[UUID, set[UUID]] = {}
        self._timers: dict[tuple[UUID, TimerId], datetime] = {}
        self._packages: dict[tuple[str, str], PackageRecord] = {}
        self._routes: dict[str, str] = {}
        self._visibility: dict[UUID, VisibilityRecord] = {}

    async def __aenter__(self) -> InMemoryEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def append(
        self,
        token: WriteToken,
        workflow_id: UUID,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """See `WritableEventStore.append`."""
        wf, batch, expected = arguments.append(token, workflow_id, events, expected_seq)
        history = self._histories.get(wf, [])
        if len(history) != expected:
            raise SequenceConflict(expected, len(history))
        if not batch:
            return
        if (error := contiguity_error(batch, expected)) is not None:
            raise BackendError(error)
        self._histories[wf] = history + [arguments.stored(e) for e in batch]
        for event in batch:
            if isinstance(event, ChildWorkflowStarted):
                self._parents.setdefault(event.child_workflow_id, set()).add(wf)

    async def read_history(self, workflow_id: UUID) -> list[EventBase]:
        return await self.read_history_from(workflow_id, 1)

    async def read_history_from(
        self, workflow_id: UUID, from_seq: int, *, limit: int | None = None
    ) -> list[EventBase]:
        wf = arguments.workflow_id(workflow_id)
        start = max(arguments.seq(from_seq, "from_seq"), 1) - 1
        end = None if limit is None else start + arguments.limit(limit)
        page = self._histories.get(wf, [])[start:end]
        return [decode_event(raw, seq, wf) for seq, raw in enumerate(page, start + 1)]

    async def read_run_chain(self, workflow_id: UUID) -> list[RunSummary]:
        return run_chain_from_history(await self.read_history(workflow_id))

    async def list_workflow_ids(self) -> list[UUID]:
        return sorted(self._histories, key=str)

    async def list_active(self) -> list[UUID]:
        # Like libSQL: a workflow is active once started and while its status is Running.
        running = [s.workflow_id for s in await self._summaries() if not s.status.is_terminal]
        return sorted(running, key=str)

    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        return [s for s in await self._summaries() if filter.matches(s)]

    async def _summaries(self) -> list[WorkflowSummary]:
        """Every started workflow's summary, by (started_at, id text)."""
        found = []
        for wf in self._histories:
            summary = WorkflowSummary.from_history(await self.read_history(wf))
            if summary is not None:
                parents = self._parents.get(wf)  # several: the lowest id, as on Redis
                summary.parent = min(parents, key=str) if parents else None
                found.append(summary)
        return sorted(found, key=lambda s: (s.started_at, str(s.workflow_id)))

    async def schedule_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> None:
        key = (arguments.workflow_id(workflow_id), arguments.timer_id(timer_id))
        self._timers[key] = arguments.instant(fire_at, "fire_at")

    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        limit = arguments.instant(as_of, "as_of")
        due = [
            TimerEntry(workflow_id=wf, timer_id=timer, fire_at=at)
            for (wf, timer), at in self._timers.items()
            if at <= limit
        ]
        return sorted(due, key=TimerEntry.sort_key)

    async def retire_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> bool:
        """Delete the timer row if it still fires at `fire_at`; False if re-armed or absent."""
        key = (arguments.workflow_id(workflow_id), arguments.timer_id(timer_id))
        if self._timers.get(key) != arguments.instant(fire_at, "fire_at"):
            return False
        del self._timers[key]
        return True

    async def put_package(self, record: PackageRecord) -> None:
        check.instance(record, PackageRecord, "record")
        self._packages[record.workflow_type, record.content_hash] = record.model_copy()
        self._routes[record.workflow_type] = record.content_hash

    async def list_packages(self) -> list[PackageRecord]:
        return sorted((p.model_copy() for p in self._packages.values()), key=PackageRecord.sort_key)

    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        key = (check.text(workflow_type, "workflow_type"), check.text(content_hash, "content_hash"))
        self._packages.pop(key, None)

    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        key = check.text(workflow_type, "workflow_type")
        self._routes[key] = check.text(content_hash, "content_hash")

    async def list_package_routes(self) -> list[PackageRouteRecord]:
        return [
            PackageRouteRecord(workflow_type=t, content_hash=h)
            for t, h in sorted(self._routes.items())
        ]

    async def record_visibility(self, record: VisibilityRecord) -> None:
        check.instance(record, VisibilityRecord, "record")
        self._visibility[record.workflow_id] = record.model_copy(deep=True)

    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        return [r.model_copy(deep=True) for r in filter.select(self._visibility.values())]

    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        return sum(filter.matches(r) for r in self._visibility.values())
