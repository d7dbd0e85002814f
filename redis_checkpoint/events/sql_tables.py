"""The tables of the SQL event stores, the text forms of their columns, and `SqlBacked`, the
lifecycle every part of `SqlEventStore` shares (one `sql.Database`, one transaction a call).

The tables are Aion's libSQL layout (`aion-store-libsql`, reference §10.1), so a SQLite file
its store wrote reads here, and the other way round; PostgreSQL has the same tables (BYTEA
for BLOB). The text forms are the ones that store writes:

    events      (workflow_id, seq) -> event: Aion's JSON (`dump_event`) as bytes;
                recorded_at (chrono's `to_rfc3339`: "...+00:00"), event_kind (the variant),
                is_queryable_event (1 for lifecycle events, WorkflowReopened and
                ChildWorkflowStarted: all that summaries and run chains read),
                workflow_type (WorkflowStarted, ChildWorkflowStarted), child_workflow_id
    timers      (workflow_id as JSON, "\"<uuid>\"", timer_id as JSON, {"Named": ...}) ->
                fire_at: RFC 3339 with 9 fractional digits and Z, so text order is time order
    packages    (workflow_type, content_hash) -> archive, deployed_at (9 digits and Z)
    package_routes  workflow_type -> content_hash
    visibility  workflow_id -> run_id, workflow_type, status as JSON ("\"Running\""),
                start_time, close_time (9 digits and Z), search_attributes (JSON)

One table is this package's own: `rc_event_writers`, a row per workflow appended to on
PostgreSQL, which appends lock (`FOR UPDATE`) before reading the head. The head itself is
`MAX(seq)`, read under that lock, so histories that libSQL wrote need no row of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from .. import sql
from ..sql import SCHEMA_VERSION, Database
from .errors import TREE, InvalidArgument, SerializationError
from .models import ChildWorkflowStarted, EventBase, WorkflowStarted, dump_event, rfc3339

PART = "events"
I64_MAX = 2**63 - 1  # the largest seq or LIMIT both databases hold

INSERT_EVENT = (
    "INSERT INTO events (workflow_id, seq, event, recorded_at, event_kind, is_queryable_event,"
    " workflow_type, child_workflow_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


def schema(dialect: str) -> tuple[str, ...]:
    """The event tables for `dialect` ("postgres" or "sqlite"), libSQL's DDL on SQLite."""
    postgres = dialect == "postgres"
    blob, integer = ("BYTEA", "BIGINT") if postgres else ("BLOB", "INTEGER")
    # Due timers are a text range: byte order on PostgreSQL whatever the database's locale.
    ordered = ' COLLATE "C"' if postgres else ""
    json_valid = "" if postgres else " CHECK (json_valid(search_attributes))"
    return (
        f"CREATE TABLE IF NOT EXISTS events (workflow_id TEXT NOT NULL, seq {integer} NOT NULL,"
        f" event {blob} NOT NULL, recorded_at TEXT NOT NULL, event_kind TEXT NOT NULL,"
        " is_queryable_event INTEGER NOT NULL, workflow_type TEXT, child_workflow_id TEXT,"
        " PRIMARY KEY (workflow_id, seq))",
        "CREATE INDEX IF NOT EXISTS idx_events_queryable_filter ON events (is_queryable_event,"
        " workflow_id, seq, event_kind, workflow_type, recorded_at, child_workflow_id)",
        "CREATE TABLE IF NOT EXISTS timers (workflow_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
        f" fire_at TEXT{ordered} NOT NULL, PRIMARY KEY (workflow_id, timer_id))",
        "CREATE INDEX IF NOT EXISTS idx_timers_fire_at ON timers (fire_at)",
        "CREATE TABLE IF NOT EXISTS packages (workflow_type TEXT NOT NULL,"
        f" content_hash TEXT NOT NULL, archive {blob} NOT NULL, deployed_at TEXT NOT NULL,"
        " PRIMARY KEY (workflow_type, content_hash))",
        "CREATE TABLE IF NOT EXISTS package_routes (workflow_type TEXT PRIMARY KEY,"
        " content_hash TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS visibility (workflow_id TEXT PRIMARY KEY,"
        " run_id TEXT NOT NULL, workflow_type TEXT NOT NULL, status TEXT NOT NULL,"
        " start_time TEXT NOT NULL, close_time TEXT,"
        f" search_attributes TEXT NOT NULL{json_valid})",
        *(
            f"CREATE INDEX IF NOT EXISTS idx_visibility_{column} ON visibility ({column})"
            for column in ("workflow_type", "status", "start_time", "close_time")
        ),
        "CREATE TABLE IF NOT EXISTS rc_event_writers (workflow_id TEXT PRIMARY KEY)",
    )


# -- text forms --------------------------------------------------------------------------


def nanos(at: datetime) -> str:
    """chrono's `to_rfc3339_opts(Nanos, true)`: always 9 fractional digits and `Z`."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "000Z"


def instant(text: str) -> datetime:
    """An RFC 3339 time as libSQL or this store wrote it (nanoseconds are truncated)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    return at.astimezone(UTC)


def json_text(value: Any) -> str:
    """serde_json's compact form of a string or number column value."""
    return json.dumps(value, ensure_ascii=False)


def event_row(workflow_id: str, event: EventBase) -> tuple[Any, ...]:
    """The `events` columns of one event, as `INSERT_EVENT` takes them."""
    queryable = event.sets_status is not None or isinstance(event, ChildWorkflowStarted)
    started = isinstance(event, WorkflowStarted | ChildWorkflowStarted)
    child = event.child_workflow_id if isinstance(event, ChildWorkflowStarted) else None
    return (
        workflow_id,
        event.seq,
        dump_event(event).encode(),
        rfc3339(event.recorded_at).removesuffix("Z") + "+00:00",  # chrono's to_rfc3339()
        type(event).__name__,
        int(queryable),
        getattr(event, "workflow_type", None) if started else None,
        None if child is None else str(child),
    )


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Stored data that does not decode raises SerializationError naming `what`."""
    try:
        yield
    except (ValueError, TypeError, KeyError, SerializationError) as exc:
        raise SerializationError(f"undecodable {what}: {exc}") from None


# -- lifecycle ---------------------------------------------------------------------------


class SqlBacked(sql.SqlBacked):
    """An event store on one `sql.Database` (see `sql.SqlBacked`).

    Args:
        database: the database (`sql.Database.open`); the store closes it with itself.
    """

    errors = TREE
    part = PART

    def __init__(self, database: Database) -> None:
        super().__init__(database, schema)
        self._no_nul = database.dialect == "postgres"  # its TEXT cannot hold U+0000

    def _text(self, value: Any, field: str) -> str:
        """Caller text bound for a TEXT column (PostgreSQL's cannot hold NUL)."""
        text = TREE.check.text(value, field)
        if self._no_nul and "\x00" in text:
            raise InvalidArgument(f"{field} cannot hold NUL characters on PostgreSQL")
        return text

    async def check(self) -> dict[str, Any]:
        """A report: the database (without credentials), its dialect, server version and
        schema version, the call timeout, and `warnings`."""
        server = "SELECT version()" if self.database.dialect == "postgres" else None
        async with self._transaction(write=False) as tx:
            row = await tx.fetchrow("SELECT version FROM rc_schema WHERE part = $1", PART)
            found = await tx.fetchrow(server or "SELECT 'SQLite ' || sqlite_version()")
        warnings = []
        if self.database.where.endswith(":memory:"):
            warnings.append("an in-memory SQLite database: nothing outlives the store")
        return {
            "database": self.database.where,
            "dialect": self.database.dialect,
            "server": None if found is None else str(found[0]),
            "schema_version": None if row is None else row[0],
            "package_schema_version": SCHEMA_VERSION,
            "timeout": self.database.timeout,
            "warnings": warnings,
        }
