"""Timers, packages and visibility rows in SQL, each call one transaction; the tables and
their text forms are libSQL's (`sql_tables`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from ..sql import Tx
from . import arguments
from .models import SearchAttributeValue, TimerId, WorkflowStatus
from .records import (
    ListWorkflowsFilter,
    PackageRecord,
    PackageRouteRecord,
    TimerEntry,
    VisibilityRecord,
)
from .sql_tables import SqlBacked, decoding, instant, json_text, nanos

check = arguments.check
_ATTRIBUTES: TypeAdapter[dict[str, SearchAttributeValue]] = TypeAdapter(
    dict[str, SearchAttributeValue]
)
_VISIBILITY_COLUMNS = (
    "workflow_id, run_id, workflow_type, status, start_time, close_time, search_attributes"
)


class SqlTimers(SqlBacked):
    """The timer part of `ReadableEventStore`, plus `retire_timer`, in SQL."""

    @staticmethod
    def _timer_key(workflow_id: UUID, timer_id: TimerId) -> tuple[str, str]:
        """The row key as libSQL writes it: both ids as their JSON text."""
        wf, timer = arguments.workflow_id(workflow_id), arguments.timer_id(timer_id)
        return json_text(str(wf)), timer.model_dump_json()

    async def schedule_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> None:
        """See `ReadableEventStore.schedule_timer`: one upsert."""
        key = self._timer_key(workflow_id, timer_id)
        at = nanos(arguments.instant(fire_at, "fire_at"))
        async with self._transaction(write=True) as tx:
            await tx.execute(
                "INSERT INTO timers (workflow_id, timer_id, fire_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (workflow_id, timer_id) DO UPDATE SET fire_at = excluded.fire_at",
                *key,
                at,
            )

    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        """See `ReadableEventStore.expired_timers`: a range of the fire_at index (the text
        form sorts as time does)."""
        limit = nanos(arguments.instant(as_of, "as_of"))
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(
                "SELECT workflow_id, timer_id, fire_at FROM timers WHERE fire_at <= $1", limit
            )
        return sorted((_timer(row) for row in rows), key=TimerEntry.sort_key)

    async def retire_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> bool:
        """Delete the timer row if it still fires at `fire_at`, so a timer service can clean
        up what it fired; False if it is absent or was re-armed meanwhile (the re-arm wins).
        """
        key = self._timer_key(workflow_id, timer_id)
        at = arguments.instant(fire_at, "fire_at")
        where = "FROM timers WHERE workflow_id = $1 AND timer_id = $2"
        async with self._transaction(write=True) as tx:
            row = await tx.fetchrow(f"SELECT workflow_id, timer_id, fire_at {where}{tx.lock}", *key)
            # Times compared, not texts: a libSQL row may hold nanoseconds this one drops.
            if row is None or _timer(row).fire_at != at:
                return False
            await tx.execute(f"DELETE {where}", *key)
        return True


def _timer(row: Sequence[Any]) -> TimerEntry:
    with decoding(f"timer {row[0]} {row[1]} in table timers"):
        return TimerEntry(
            workflow_id=UUID(json.loads(row[0])),
            timer_id=TimerId.model_validate_json(row[1]),
            fire_at=instant(row[2]),
        )


class SqlPackages(SqlBacked):
    """`PackageStore` in SQL."""

    async def put_package(self, record: PackageRecord) -> None:
        """See `PackageStore.put_package`: the archive and the route in one transaction."""
        check.instance(record, PackageRecord, "record")
        kind = self._text(record.workflow_type, "workflow_type")
        digest = self._text(record.content_hash, "content_hash")
        async with self._transaction(write=True) as tx:
            await tx.execute(
                "INSERT INTO packages (workflow_type, content_hash, archive, deployed_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_type, content_hash)"
                " DO UPDATE SET archive = excluded.archive, deployed_at = excluded.deployed_at",
                kind,
                digest,
                record.archive,
                nanos(record.deployed_at),
            )
            await _route(tx, kind, digest)

    async def list_packages(self) -> list[PackageRecord]:
        """See `PackageStore.list_packages`."""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(
                "SELECT workflow_type, content_hash, archive, deployed_at FROM packages"
            )
        records = []
        for kind, digest, archive, deployed in rows:
            with decoding(f"package {kind} {digest} in table packages"):
                records.append(
                    PackageRecord(
                        workflow_type=kind,
                        content_hash=digest,
                        archive=bytes(archive),
                        deployed_at=instant(deployed),
                    )
                )
        return sorted(records, key=PackageRecord.sort_key)

    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.delete_package`: idempotent; routes are left alone."""
        kind = self._text(workflow_type, "workflow_type")
        digest = self._text(content_hash, "content_hash")
        async with self._transaction(write=True) as tx:
            await tx.execute(
                "DELETE FROM packages WHERE workflow_type = $1 AND content_hash = $2", kind, digest
            )

    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.put_package_route`: one upsert."""
        kind = self._text(workflow_type, "workflow_type")
        digest = self._text(content_hash, "content_hash")
        async with self._transaction(write=True) as tx:
            await _route(tx, kind, digest)

    async def list_package_routes(self) -> list[PackageRouteRecord]:
        """See `PackageStore.list_package_routes`."""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch("SELECT workflow_type, content_hash FROM package_routes")
        with decoding("row in table package_routes"):
            routes = [PackageRouteRecord(workflow_type=t, content_hash=h) for t, h in rows]
        return sorted(routes, key=lambda r: r.workflow_type)


async def _route(tx: Tx, workflow_type: str, content_hash: str) -> None:
    await tx.execute(
        "INSERT INTO package_routes (workflow_type, content_hash) VALUES ($1, $2)"
        " ON CONFLICT (workflow_type) DO UPDATE SET content_hash = excluded.content_hash",
        workflow_type,
        content_hash,
    )


class SqlVisibility(SqlBacked):
    """`VisibilityStore` in SQL: SQL selects by type and status, `ListWorkflowsFilter`
    decides the rest (its rules are the one definition every backend shares)."""

    async def record_visibility(self, record: VisibilityRecord) -> None:
        """See `VisibilityStore.record_visibility`: one row per workflow id (an upsert)."""
        check.instance(record, VisibilityRecord, "record")
        close = None if record.close_time is None else nanos(record.close_time)
        row = (
            str(record.workflow_id),
            str(record.run_id),
            self._text(record.workflow_type, "workflow_type"),
            json_text(record.status.value),
            nanos(record.start_time),
            close,
            _ATTRIBUTES.dump_json(record.search_attributes).decode(),
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in _VISIBILITY_COLUMNS.split(", ")[1:])
        async with self._transaction(write=True) as tx:
            await tx.execute(
                f"INSERT INTO visibility ({_VISIBILITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5,"
                f" $6, $7) ON CONFLICT (workflow_id) DO UPDATE SET {updates}",
                *row,
            )

    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        """See `VisibilityStore.list_workflows`."""
        return filter.select(await self._rows(filter))

    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        """See `VisibilityStore.count_workflows`."""
        return sum(filter.matches(row) for row in await self._rows(filter))

    async def _rows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        """The rows of the filter's type and status, if it names them."""
        check.instance(filter, ListWorkflowsFilter, "filter")
        clauses, args = [], []
        if filter.workflow_type is not None:
            args.append(self._text(filter.workflow_type, "workflow_type"))
            clauses.append(f"workflow_type = ${len(args)}")
        if filter.status is not None:
            args.append(json_text(filter.status.value))
            clauses.append(f"status = ${len(args)}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetch(f"SELECT {_VISIBILITY_COLUMNS} FROM visibility{where}", *args)
        return [_visibility(row) for row in rows]


def _visibility(row: Sequence[Any]) -> VisibilityRecord:
    wf, run, kind, status, start, close, attributes = row
    with decoding(f"visibility row {wf}"):
        return VisibilityRecord(
            workflow_id=UUID(wf),
            run_id=UUID(run),
            workflow_type=kind,
            status=WorkflowStatus(json.loads(status)),
            start_time=instant(start),
            close_time=None if close is None else instant(close),
            search_attributes=_ATTRIBUTES.validate_json(attributes),
        )
