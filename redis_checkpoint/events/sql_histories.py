"""Workflow histories in SQL: fenced appends, range reads, run chains, the listings, and the
write-behind mirror (`outbox.DurableHistories`). Tables: `sql_tables`.

An append takes its workflow's write lock first: the `rc_event_writers` row `FOR UPDATE` on
PostgreSQL, the database's one write lock (`BEGIN IMMEDIATE`) on SQLite. Under it the head
(`MAX(seq)`) cannot move, so the checks and the inserts are one atomic step, and of N
appends racing at one head exactly one wins; the others find its head and get
SequenceConflict. A duplicate key met anyway (a writer that does not lock, such as a
flusher mirroring the same events) is reported as libSQL does: the head is read again and
a moved head is a SequenceConflict.

Summaries, run chains and the active list are projections of the queryable events only
(lifecycle, WorkflowReopened and ChildWorkflowStarted), which is all they depend on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..sql import Tx
from . import arguments
from .errors import BackendError, InvalidArgument, SequenceConflict
from .models import ChildWorkflowStarted, EventBase, WorkflowStarted, parse_event
from .protocol import WriteToken
from .records import RunSummary, WorkflowFilter, WorkflowSummary, run_chain_from_history
from .sql_tables import I64_MAX, INSERT_EVENT, SqlBacked, decoding, event_row

if TYPE_CHECKING:  # outbox imports the event models: importing it here would be a cycle
    from ..outbox import EventsAppended

HEAD = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE workflow_id = $1"
QUERYABLE = "SELECT workflow_id, seq, event FROM events WHERE is_queryable_event = 1"
PARENT_LINKS = (
    "SELECT child_workflow_id, workflow_id FROM events"
    " WHERE is_queryable_event = 1 AND child_workflow_id IS NOT NULL"
)


class SqlHistories(SqlBacked):
    """`WritableEventStore` and `ReadableEventStore` (less timers) in SQL."""

    async def append(
        self,
        token: WriteToken,
        workflow_id: UUID,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """See `WritableEventStore.append`: one transaction, all or nothing."""
        wf, batch, expected = arguments.append(token, workflow_id, events, expected_seq)
        rows = [self._row(wf, event) for event in batch]
        error = arguments.contiguity_error(batch, expected)
        try:
            await self._append(str(wf), rows, expected, error)
        except BackendError as exc:
            if not _duplicate(exc.__cause__):
                raise
            async with self._transaction(write=False) as tx:
                found = await _head(tx, str(wf))
            if found == expected:
                raise
            raise SequenceConflict(expected, found) from None

    def _row(self, wf: UUID, event: EventBase) -> tuple[Any, ...]:
        """The event's row, once it passed the checks both stores make of an event."""
        arguments.stored(event)  # InvalidArgument for what the annotations refuse
        if isinstance(event, WorkflowStarted | ChildWorkflowStarted):  # a TEXT column
            self._text(event.workflow_type, "workflow_type")
        return event_row(str(wf), event)

    async def _append(
        self, wf: str, rows: list[tuple[Any, ...]], expected: int, error: str | None
    ) -> None:
        writes = bool(rows) and error is None  # else it only reads the head and refuses
        async with self._transaction(write=writes) as tx:
            if writes and tx.lock:  # SQLite: BEGIN IMMEDIATE holds the write lock already
                await tx.execute(
                    "INSERT INTO rc_event_writers (workflow_id) VALUES ($1)"
                    " ON CONFLICT (workflow_id) DO NOTHING",
                    wf,
                )
                await tx.fetch(
                    f"SELECT workflow_id FROM rc_event_writers WHERE workflow_id = $1{tx.lock}", wf
                )
            found = await _head(tx, wf)  # after the lock: a new snapshot sees the last winner
            if found != expected:
                raise SequenceConflict(expected, found)
            if error is not None:
                raise BackendError(error)
            if writes:
                await tx.executemany(INSERT_EVENT, rows)

    async def read_history(self, workflow_id: UUID) -> list[EventBase]:
        """See `ReadableEventStore.read_history`."""
        return await self.read_history_from(workflow_id, 1)

    async def read_history_from(
        self, workflow_id: UUID, from_seq: int, *, limit: int | None = None
    ) -> list[EventBase]:
        """See `ReadableEventStore.read_history_from`: a primary-key range, at most `limit`
        events if given (an addition: page through a long history)."""
        wf = arguments.workflow_id(workflow_id)
        start = min(max(arguments.seq(from_seq, "from_seq"), 1), I64_MAX)
        count = I64_MAX if limit is None else min(arguments.limit(limit), I64_MAX)
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(
                "SELECT workflow_id, seq, event FROM events WHERE workflow_id = $1"
                " AND seq >= $2 ORDER BY seq LIMIT $3",
                str(wf),
                start,
                count,
            )
        return [_event(row) for row in rows]

    async def read_run_chain(self, workflow_id: UUID) -> list[RunSummary]:
        """See `ReadableEventStore.read_run_chain`: reads the queryable events only."""
        wf = arguments.workflow_id(workflow_id)
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(f"{QUERYABLE} AND workflow_id = $1 ORDER BY seq", str(wf))
        return run_chain_from_history([_event(row) for row in rows])

    async def list_workflow_ids(self) -> list[UUID]:
        """See `ReadableEventStore.list_workflow_ids`."""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch("SELECT DISTINCT workflow_id FROM events")
        with decoding("workflow id in table events"):
            return sorted((UUID(row[0]) for row in rows), key=str)

    async def list_active(self) -> list[UUID]:
        """See `ReadableEventStore.list_active`."""
        running = [s.workflow_id for s in await self._summaries() if not s.status.is_terminal]
        return sorted(running, key=str)

    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        """See `ReadableEventStore.query`: SQL picks the candidates by type and parent,
        `filter.matches` decides."""
        if not isinstance(filter, WorkflowFilter):
            raise InvalidArgument(f"filter must be a WorkflowFilter, got {filter!r}")
        summaries = await self._summaries(filter.workflow_type, filter.parent)
        return [s for s in summaries if filter.matches(s)]

    async def _summaries(
        self, workflow_type: str | None = None, parent: UUID | None = None
    ) -> list[WorkflowSummary]:
        """The summaries of the started candidates, with their parents (of several, the
        lowest id), by (started_at, id text)."""
        sql, args = self._candidates(workflow_type, parent)
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(sql, *args)
            links = await tx.fetch(PARENT_LINKS)
        histories: dict[str, list[EventBase]] = {}
        for row in rows:
            histories.setdefault(row[0], []).append(_event(row))
        parents = _parents(links)
        found = []
        for history in histories.values():
            if (summary := WorkflowSummary.from_history(history)) is not None:
                summary.parent = parents.get(summary.workflow_id)
                found.append(summary)
        return sorted(found, key=lambda s: (s.started_at, str(s.workflow_id)))

    def _candidates(self, workflow_type: str | None, parent: UUID | None) -> tuple[str, list[Any]]:
        """The queryable events of the workflows that may match (libSQL's plan): those with
        a start of `workflow_type`, and those that `parent` started."""
        sql, args = QUERYABLE, []
        if workflow_type is not None:
            args.append(self._text(workflow_type, "workflow_type"))
            sql += (
                " AND workflow_id IN (SELECT workflow_id FROM events"
                " WHERE is_queryable_event = 1 AND workflow_type = $1)"
            )
        if parent is not None:
            args.append(str(parent))
            sql += (
                " AND workflow_id IN (SELECT child_workflow_id FROM events"
                f" WHERE is_queryable_event = 1 AND workflow_id = ${len(args)}"
                " AND child_workflow_id IS NOT NULL)"
            )
        return sql + " ORDER BY workflow_id, seq", args

    async def apply_changes(self, tx: Tx, changes: Sequence[EventsAppended]) -> None:
        """Mirror a write-behind cache's appends inside `tx`, without fencing (the cache
        fenced them); an event already stored is left as it is, so applying twice is once."""
        rows = [event_row(str(c.workflow_id), e) for c in changes for e in c.events]
        if rows:
            await tx.executemany(INSERT_EVENT + " ON CONFLICT (workflow_id, seq) DO NOTHING", rows)


async def _head(tx: Tx, wf: str) -> int:
    row = await tx.fetchrow(HEAD, wf)
    return 0 if row is None else int(row[0])


def _event(row: Sequence[Any]) -> EventBase:
    """The event of a `(workflow_id, seq, event)` row."""
    with decoding(f"event {row[0]} seq {row[1]} in table events"):
        event: EventBase = parse_event(row[2])
    return event


def _parents(links: Sequence[Sequence[Any]]) -> dict[UUID, UUID]:
    """Each child's parent from `(child, parent)` rows: of several, the lowest id text."""
    parents: dict[UUID, UUID] = {}
    with decoding("child workflow id in table events"):
        for child_text, parent_text in links:
            child, parent = UUID(child_text), UUID(parent_text)
            if child not in parents or str(parent) < str(parents[child]):
                parents[child] = parent
    return parents


def _duplicate(cause: BaseException | None) -> bool:
    """Whether a driver error is a duplicate primary key (PostgreSQL's unique_violation)."""
    if isinstance(cause, sqlite3.IntegrityError):
        return "UNIQUE" in str(cause)
    return getattr(cause, "sqlstate", None) == "23505"
