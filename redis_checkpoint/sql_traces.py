"""The checkpoint tables of the SQL stores: their schema, the statements on one trace's
rows, and the mirroring of a write-behind cache's changes (`outbox`).

    rc_traces         a row per trace: circuit, version, completion, resumed step (TEXT: a
                      u64 does not fit BIGINT), counts, times, expires_ms (NULL: kept)
    rc_envelopes      (trace_id, ordinal) -> the envelope's `codec` bytes; ordinals 1, 2, ...
    rc_interventions  (trace_id, ordinal) -> the intervention's `codec` bytes
    rc_idempotency    (trace_id, idem_key) -> when a keyed write was applied

SQL is written once with `$n` placeholders (`sql.py` converts them for SQLite). A write
takes its trace's row with `tx.lock` first, and touches the other tables' rows of that trace
only: one lock per trace, always taken first, so writers never deadlock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import pg_traces
from .codec import decode_envelope
from .errors import TREE, TraceNotFound
from .models import U64_MAX, CompletionState, PersistenceEnvelope, TraceSummary
from .outbox import Appended, Completed, Deleted, Intervened, Resumed, TraceChange
from .sql import Tx

TABLES = ("rc_envelopes", "rc_interventions", "rc_idempotency", "rc_traces")
_COLUMNS = (
    "circuit, version, completion, resumed, n_events, n_interventions, created_ms, "
    "updated_ms, expires_ms"
)
SUMMARY = (
    "SELECT trace_id, circuit, version, n_events, n_interventions, resumed, completion, "
    "updated_ms FROM rc_traces"
)


def schema(dialect: str) -> tuple[str, ...]:
    """The tables of the checkpoint stores, for `dialect` ("postgres" or "sqlite"), and on
    PostgreSQL the functions of its writes (`pg_traces`)."""
    blob = "BYTEA" if dialect == "postgres" else "BLOB"
    return (
        "CREATE TABLE IF NOT EXISTS rc_traces (trace_id TEXT PRIMARY KEY, circuit TEXT NOT NULL,"
        " version TEXT NOT NULL, completion TEXT, resumed TEXT, n_events BIGINT NOT NULL,"
        " n_interventions BIGINT NOT NULL, created_ms BIGINT NOT NULL,"
        " updated_ms BIGINT NOT NULL, expires_ms BIGINT)",
        # iter_traces walks it backwards, newest first; purge_expired finds what to drop.
        "CREATE INDEX IF NOT EXISTS rc_traces_updated ON rc_traces (updated_ms, trace_id)",
        "CREATE INDEX IF NOT EXISTS rc_traces_expires ON rc_traces (expires_ms)",
        *(
            f"CREATE TABLE IF NOT EXISTS {table} (trace_id TEXT NOT NULL,"
            f" ordinal BIGINT NOT NULL, blob {blob} NOT NULL, PRIMARY KEY (trace_id, ordinal))"
            for table in ("rc_envelopes", "rc_interventions")
        ),
        "CREATE TABLE IF NOT EXISTS rc_idempotency (trace_id TEXT NOT NULL,"
        " idem_key TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (trace_id, idem_key))",
        *(pg_traces.FUNCTIONS if dialect == "postgres" else ()),
    )


@dataclass(slots=True)
class TraceRow:
    """A row of rc_traces."""

    circuit: str
    version: str
    completion: str | None
    resumed: str | None
    events: int
    interventions: int
    created_ms: int
    updated_ms: int
    expires_ms: int | None

    def live(self, now: int) -> bool:
        """Whether the trace has not expired at `now` (ms)."""
        return self.expires_ms is None or self.expires_ms > now


@dataclass(frozen=True, slots=True)
class Retention:
    """How long traces and idempotency keys live, in ms (0: for ever)."""

    ttl: int
    completed_ttl: int
    window: int

    def lifetime(self, completed: bool) -> int | None:
        """How long a trace lives after a write, in ms (None: for ever); `completed_ttl`
        rules a completed one."""
        return ((self.completed_ttl or self.ttl) if completed else self.ttl) or None

    def expires(self, now: int, completed: bool) -> int | None:
        """When a trace written at `now` expires."""
        keep = self.lifetime(completed)
        return None if keep is None else now + keep


async def row(tx: Tx, trace_id: str, lock: str = "") -> TraceRow | None:
    """The trace's row (locked with `lock`, `tx.lock`), or None."""
    raw = await tx.fetchrow(f"SELECT {_COLUMNS} FROM rc_traces WHERE trace_id = $1{lock}", trace_id)
    return None if raw is None else TraceRow(*raw)


def now_ms() -> int:
    """The time in ms: this process's clock, for every call of the contract."""
    return int(time.time() * 1000)


async def lock(tx: Tx, trace_id: str) -> tuple[TraceRow | None, int]:
    """The trace's row, locked, and the time once the lock is granted; None for an absent
    or expired trace (whose rows go: the caller is a write)."""
    found = await row(tx, trace_id, tx.lock)
    now = now_ms()
    if found is not None and not found.live(now):
        await remove(tx, [trace_id])
        return None, now
    return found, now


async def existing(tx: Tx, trace_id: str) -> tuple[TraceRow, int]:
    """As `lock`, for a trace that must exist (TraceNotFound)."""
    found, now = await lock(tx, trace_id)
    if found is None:
        raise TraceNotFound(trace_id)
    return found, now


async def lock_or_create(tx: Tx, trace_id: str, circuit: str, version: str) -> tuple[TraceRow, int]:
    """As `lock`, creating the trace's row (with no envelopes) if there is none. A
    concurrent first append's row is taken ON CONFLICT as it is, to be checked; a delete
    racing this makes it insert again."""
    for _ in range(3):
        found, now = await lock(tx, trace_id)
        if found is not None:
            return found, now
        await tx.execute(
            "INSERT INTO rc_traces (trace_id, circuit, version, n_events, n_interventions,"
            " created_ms, updated_ms) VALUES ($1, $2, $3, 0, 0, $4, $4)"
            " ON CONFLICT (trace_id) DO NOTHING",
            *(trace_id, circuit, version, now),
        )
    raise TREE.unavailable(f"trace {trace_id} kept being deleted while appended to")


async def touch(
    tx: Tx, trace_id: str, now: int, expires: int | None, sets: str, *args: Any
) -> None:
    """Update the trace's row: `sets` (its placeholders from $4) and its times."""
    sql = f"UPDATE rc_traces SET updated_ms = $2, expires_ms = $3, {sets} WHERE trace_id = $1"
    await tx.execute(sql, trace_id, now, expires, *args)


async def remove(tx: Tx, trace_ids: Sequence[str]) -> None:
    """Delete every row of the traces."""
    for table in TABLES:
        sql = f"DELETE FROM {table} WHERE trace_id = $1"
        await tx.executemany(sql, [(trace_id,) for trace_id in trace_ids])


async def add(tx: Tx, table: str, trace_id: str, first: int, blobs: Sequence[bytes]) -> None:
    """Insert `blobs` into `table` at ordinals `first`, `first + 1`, ...; an ordinal already
    there is kept (a change applied again)."""
    sql = (
        f"INSERT INTO {table} (trace_id, ordinal, blob) VALUES ($1, $2, $3)"
        " ON CONFLICT (trace_id, ordinal) DO NOTHING"
    )
    await tx.executemany(sql, [(trace_id, first + n, blob) for n, blob in enumerate(blobs)])


async def blobs(tx: Tx, table: str, trace_id: str) -> list[bytes]:
    """The trace's blobs in `table`, in ordinal order."""
    sql = f"SELECT blob FROM {table} WHERE trace_id = $1 ORDER BY ordinal"
    return [bytes(raw[0]) for raw in await tx.fetch(sql, trace_id)]


async def keys(tx: Tx, trace_id: str, horizon: int) -> list[tuple[str, int]]:
    """The trace's idempotency keys applied after `horizon` (ms), with when."""
    sql = "SELECT idem_key, at_ms FROM rc_idempotency WHERE trace_id = $1 AND at_ms > $2"
    return [(raw[0], raw[1]) for raw in await tx.fetch(sql, trace_id, horizon)]


async def replayed(tx: Tx, trace_id: str, key: str | None, horizon: int) -> bool:
    """Whether `key` was applied to the trace after `horizon` (ms)."""
    if key is None:
        return False
    sql = "SELECT 1 FROM rc_idempotency WHERE trace_id = $1 AND idem_key = $2 AND at_ms > $3"
    return await tx.fetchrow(sql, trace_id, key, horizon) is not None


async def remember(tx: Tx, trace_id: str, key: str | None, now: int, window: int) -> None:
    """Record `key` as applied at `now`; the trace's keys older than `window` go."""
    if key is None:
        return
    await tx.execute(
        "DELETE FROM rc_idempotency WHERE trace_id = $1 AND at_ms <= $2", trace_id, now - window
    )
    await tx.execute(
        "INSERT INTO rc_idempotency (trace_id, idem_key, at_ms) VALUES ($1, $2, $3)"
        " ON CONFLICT (trace_id, idem_key) DO UPDATE SET at_ms = excluded.at_ms",
        trace_id,
        key,
        now,
    )


async def expired(tx: Tx, now: int, limit: int) -> list[str]:
    """Up to `limit` traces expired at `now`, locked; those a call under way holds are
    skipped on PostgreSQL (SQLite has one writer)."""
    skip = f"{tx.lock} SKIP LOCKED" if tx.lock else ""
    sql = f"SELECT trace_id FROM rc_traces WHERE expires_ms <= $1 LIMIT $2{skip}"
    return [raw[0] for raw in await tx.fetch(sql, now, limit)]


async def census(tx: Tx, dialect: str, part: str, now: int) -> dict[str, Any]:
    """The server's version, the schema version of `part`, and the traces live and expired
    at `now`."""
    server = "SELECT version()" if dialect == "postgres" else "SELECT 'SQLite ' || sqlite_version()"
    name = await tx.fetchrow(server)
    version = await tx.fetchrow("SELECT version FROM rc_schema WHERE part = $1", part)
    counts = await tx.fetchrow(
        "SELECT COUNT(*), COUNT(CASE WHEN expires_ms <= $1 THEN 1 END) FROM rc_traces", now
    )
    total, expired = counts or (0, 0)
    return {
        "server": None if name is None else name[0],
        "schema_version": None if version is None else version[0],
        "traces": total - expired,
        "traces_expired": expired,
    }


def listing(circuit: str | None, completed: bool | None) -> tuple[str, str, list[Any]]:
    """The queries of a page of `iter_traces`, the first and those after a cursor (its
    two placeholders last), and their arguments after $1 (the page size) and $2 (now)."""
    where, args = ["(expires_ms IS NULL OR expires_ms > $2)"], []
    if circuit is not None:
        where.append("circuit = $3")
        args.append(circuit)
    if completed is not None:
        where.append(f"completion IS {'NOT ' if completed else ''}NULL")
    n = len(args) + 3
    after = f"(updated_ms < ${n} OR (updated_ms = ${n} AND trace_id < ${n + 1}))"
    order = " ORDER BY updated_ms DESC, trace_id DESC LIMIT $1"
    return (
        f"{SUMMARY} WHERE {' AND '.join(where)}{order}",
        f"{SUMMARY} WHERE {' AND '.join([*where, after])}{order}",
        args,
    )


def envelopes(trace_id: str, circuit: str, blobs: Sequence[bytes]) -> list[PersistenceEnvelope]:
    """The stored envelopes of a trace; ValueError if one does not decode."""
    return [decode_envelope(blob, trace_id, circuit) for blob in blobs]


@contextmanager
def decoding(table: str, trace_id: str) -> Iterator[None]:
    """Data read that does not decode is corrupt data, naming where it is."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise TREE.corrupt(f"{table} {trace_id!r}", f"undecodable: {exc}") from None


def step(raw: str | None) -> int | None:
    """A stored resume step (decimal text); ValueError if it is not a u64."""
    if raw is not None and not (raw.isdigit() and int(raw) <= U64_MAX):
        raise ValueError(f"{raw!r} is not a step")
    return None if raw is None else int(raw)


def completion(raw: str | None) -> CompletionState | None:
    """A stored completion state; ValueError if it is not one."""
    return None if raw is None else CompletionState(raw)


def summary(raw: Sequence[Any]) -> TraceSummary:
    """A row of `SUMMARY` as a TraceSummary."""
    trace_id, circuit, version, events, interventions, resumed, state, updated = raw
    return TraceSummary(
        trace_id=trace_id,
        circuit=circuit,
        schematic_version=version,
        events=events,
        interventions=interventions,
        resumed_from_step=step(resumed),
        completion=completion(state),
        updated_ms=updated,
    )


async def mirror(tx: Tx, changes: Sequence[TraceChange], keep: Retention) -> None:
    """Apply a cache's `changes` in order inside `tx`, without the contract's checks (the
    cache made them). Each is idempotent: rows are keyed by ordinal, counts only grow, and
    the times are the change's own, so a batch applied twice is applied once."""
    for change in changes:
        if isinstance(change, Deleted):
            await remove(tx, [change.trace_id])
            continue
        found = await row(tx, change.trace_id, tx.lock)
        if isinstance(change, Appended):
            await _appended(tx, change, found, keep)
        elif found is None:  # deleted since, further on in the outbox
            continue
        elif isinstance(change, Completed):
            expires = keep.expires(change.at_ms, True)
            sets, args = "completion = $4", (change.completion,)
            await touch(tx, change.trace_id, change.at_ms, expires, sets, *args)
        elif isinstance(change, Resumed):
            expires = keep.expires(change.at_ms, found.completion is not None)
            sets, args = "resumed = $4", (str(change.step),)
            await touch(tx, change.trace_id, change.at_ms, expires, sets, *args)
        else:
            await _intervened(tx, change, found, keep)


async def _appended(tx: Tx, change: Appended, found: TraceRow | None, keep: Retention) -> None:
    trace_id, at = change.trace_id, change.at_ms
    if found is not None and not found.live(at):  # expired here, and re-created by the cache
        await remove(tx, [trace_id])
        found = None
    count = change.first + len(change.blobs) - 1
    if found is None:
        await tx.execute(
            "INSERT INTO rc_traces (trace_id, circuit, version, n_events, n_interventions,"
            " created_ms, updated_ms, expires_ms) VALUES ($1, $2, $3, $4, 0, $5, $5, $6)",
            *(trace_id, change.circuit, change.version, count, at, keep.expires(at, False)),
        )
    else:
        expires = keep.expires(at, found.completion is not None)
        sets, args = "version = $4, n_events = $5", (change.version, max(count, found.events))
        await touch(tx, trace_id, at, expires, sets, *args)
    await add(tx, "rc_envelopes", trace_id, change.first, change.blobs)
    await remember(tx, trace_id, change.key, at, keep.window)


async def _intervened(tx: Tx, change: Intervened, found: TraceRow, keep: Retention) -> None:
    expires = keep.expires(change.at_ms, found.completion is not None)
    count = max(change.index, found.interventions)
    await add(tx, "rc_interventions", change.trace_id, change.index, [change.blob])
    await touch(tx, change.trace_id, change.at_ms, expires, "n_interventions = $4", count)
    await remember(tx, change.trace_id, change.key, change.at_ms, keep.window)
