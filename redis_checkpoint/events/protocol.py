"""Aion's store traits as Protocols; the docstrings carry the contract (reference §2).

`EventStore` is `ReadableEventStore + WritableEventStore + PackageStore`; `VisibilityStore`
is separate. Everything is async. Unknown workflows read as empty, never as NotFoundError.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from .models import EventBase, TimerId, WorkflowId
from .records import (
    ListWorkflowsFilter,
    PackageRecord,
    PackageRouteRecord,
    RunSummary,
    TimerEntry,
    VisibilityRecord,
    WorkflowFilter,
    WorkflowSummary,
)


class WriteToken:
    """The capability to append: a reminder that only the recorder writes history.

    Not a security boundary; the runtime fence is `SequenceConflict`. Make one with
    `WriteToken.recorder()`.
    """

    __slots__ = ()
    _instance: WriteToken | None = None

    def __init__(self) -> None:
        raise TypeError("use WriteToken.recorder()")

    @classmethod
    def recorder(cls) -> WriteToken:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "WriteToken.recorder()"


@runtime_checkable
class ReadableEventStore(Protocol):
    async def read_history(self, workflow_id: WorkflowId) -> list[EventBase]:
        """The full history in ascending seq; `[]` for an unknown workflow."""
        ...

    async def read_history_from(self, workflow_id: WorkflowId, from_seq: int) -> list[EventBase]:
        """Events with `seq >= from_seq`, ascending; a range read costing what it returns.

        `from_seq <= 1` reads everything; beyond the head (or unknown workflow) gives `[]`.
        """
        ...

    async def read_run_chain(self, workflow_id: WorkflowId) -> list[RunSummary]:
        """The continue-as-new chain, oldest first; `[]` for an unknown workflow.

        Raises:
            BackendError: the chain is malformed (see `run_chain_from_history`).
        """
        ...

    async def list_workflow_ids(self) -> list[WorkflowId]:
        """Every workflow with at least one stored event, running or terminal, by id text."""
        ...

    async def list_active(self) -> list[WorkflowId]:
        """Workflows whose projected status is Running, by id text."""
        ...

    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        """Summaries of every started workflow matching `filter`, by (started_at, id text)."""
        ...

    async def schedule_timer(
        self, workflow_id: WorkflowId, timer_id: TimerId, fire_at: datetime
    ) -> None:
        """Upsert the timer row `(workflow_id, timer_id)`; rescheduling replaces `fire_at`.

        Does not append history: the engine records `TimerStarted` itself.
        """
        ...

    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        """Every timer row with `fire_at <= as_of` (inclusive), in `TimerEntry.sort_key` order.

        Rows are not removed by firing: a due row is returned until it is retired.
        """
        ...


@runtime_checkable
class WritableEventStore(Protocol):
    async def append(
        self,
        token: WriteToken,
        workflow_id: WorkflowId,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """Append `events` after head `expected_seq`, all or nothing.

        An empty batch at the right head is a no-op and creates nothing. The store does not
        check the events' workflow ids or kinds.

        Raises:
            SequenceConflict: the head is not `expected_seq` (stale or ahead); checked first.
            BackendError: the events' seqs are not `expected_seq + 1, + 2, ...`.
        """
        ...


@runtime_checkable
class PackageStore(Protocol):
    async def put_package(self, record: PackageRecord) -> None:
        """Upsert the package `(workflow_type, content_hash)` and point the type's route at
        it, in one atomic commit."""
        ...

    async def list_packages(self) -> list[PackageRecord]:
        """Every package with its archive, by deployed_at, then type and hash text."""
        ...

    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        """Delete one package; absent is a no-op. Routes are left alone (they may dangle)."""
        ...

    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        """Point `workflow_type` at `content_hash`; the archive need not exist."""
        ...

    async def list_package_routes(self) -> list[PackageRouteRecord]:
        """Every route, by workflow type text."""
        ...


@runtime_checkable
class EventStore(ReadableEventStore, WritableEventStore, PackageStore, Protocol):
    """The whole event-store contract a runtime needs."""


@runtime_checkable
class VisibilityStore(Protocol):
    async def record_visibility(self, record: VisibilityRecord) -> None:
        """Upsert the workflow's row; one row per workflow id, the latest record wins."""
        ...

    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        """Matching rows, newest start first (ties by id text), then offset, then limit."""
        ...

    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        """How many rows match, ignoring `offset` and `limit`."""
        ...
