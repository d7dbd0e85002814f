"""The checkpoint contract on PostgreSQL or SQLite: `SqlPersistenceStore` holds the logic,
every call one transaction of `sql.Database` on the tables of `sql_traces`;
`PostgresPersistenceStore` and `SqlitePersistenceStore` are its public names per database.

A write locks its trace's row (`SELECT ... FOR UPDATE`; SQLite has one writer) and makes
the contract's checks under that lock, so concurrent writers are as safe as one script on
Redis, and a rejected call rolls back whole. On PostgreSQL a write is one statement
instead (one round trip), a function of `pg_traces` making the same checks under the same
lock. An expired trace reads as absent; a write that finds it removes its rows in its own
transaction (`purge_expired` reclaims the others). Times are this process's clock
(`time.time`) in milliseconds. On PostgreSQL, text holds no NUL character, and trace ids
and idempotency keys are up to `MAX_ID_BYTES` (its B-tree entries must fit a third of a
page): longer ones are InvalidInput, never sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from operator import attrgetter
from typing import Any, Self, TypedDict, Unpack

from . import pg_traces
from . import sql_traces as rows
from .codec import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_ENVELOPE_BYTES,
    Batch,
    decode_intervention,
    encode_intervention,
    trusted,
)
from .errors import TREE, CircuitMismatch, CorruptRecord, InvalidInput, TraceCompleted
from .models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
)
from .outbox import TraceChange, TraceSnapshot
from .sql import SCHEMA_VERSION, Database, SqlBacked, Tx
from .sql_mirror import mirror_bulk
from .sql_traces import TraceRow

log = logging.getLogger(__name__)

PART = "checkpoints"
PAGE = 1000  # envelopes per transaction of `iter_events`
DEFAULT_IDEMPOTENCY_WINDOW = 86_400.0
MAX_ID_BYTES = 1024  # PostgreSQL: trace ids and idempotency keys, as UTF-8
_STEP = attrgetter("step")


class Options(TypedDict, total=False):
    """The store keywords `from_url` passes on."""

    ttl: float | None
    completed_ttl: float | None
    max_envelope_bytes: int
    max_batch_bytes: int
    idempotency_window: float
    timeout: float


class PostgresOptions(Options, total=False):
    """The keywords of `PostgresPersistenceStore.from_url`."""

    pool_size: int


class SqlPersistenceStore(SqlBacked):
    """A `ManagedPersistenceStore` (and `outbox.DurableTraces`) on a SQL database.

    Args:
        database: the database (`sql.Database.open`); the store closes it with itself.
        ttl: seconds a trace lives after its last write (sliding); None keeps it.
        completed_ttl: seconds a trace lives after `complete`; None falls back to `ttl`.
        max_envelope_bytes: the largest encoded envelope accepted.
        max_batch_bytes: the largest encoded `append_many` batch accepted.
        idempotency_window: seconds an `idempotency_key` is remembered.
    """

    errors = TREE
    part = PART

    def __init__(
        self,
        database: Database,
        *,
        ttl: float | None = None,
        completed_ttl: float | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        check = TREE.check
        super().__init__(database, rows.schema)
        self._keep = rows.Retention(
            check.ttl_ms(ttl, "ttl"),
            check.ttl_ms(completed_ttl, "completed_ttl"),
            check.ttl_ms(idempotency_window, "idempotency_window"),
        )
        self._max_bytes = check.integer(max_envelope_bytes, "max_envelope_bytes", 1)
        self._max_batch = check.integer(max_batch_bytes, "max_batch_bytes", 1)
        self._postgres = database.dialect == "postgres"

    def _text(self, value: Any, field: str, *, empty: bool = False) -> str:
        TREE.check.utf8(value, field, empty=empty)
        if self._postgres and "\x00" in value:  # its TEXT cannot hold U+0000
            raise InvalidInput(f"{field} cannot hold NUL characters on PostgreSQL")
        return str(value)

    def _id(self, value: Any, field: str = "trace_id") -> str:
        """A trace id or idempotency key: both are keys of PostgreSQL's B-tree indexes,
        whose entries (both together in rc_idempotency's) must fit a third of a page."""
        text = self._text(value, field)
        size = len(text.encode())
        if self._postgres and size > MAX_ID_BYTES:
            raise InvalidInput(f"{field} is {size} bytes, over {MAX_ID_BYTES} on PostgreSQL")
        return text

    def _key(self, key: str | None) -> str | None:
        return None if key is None else self._id(key, "idempotency_key")

    async def _call(self, function: str, trace_id: str, *args: Any) -> None:
        """A write on PostgreSQL: one of `pg_traces`' functions, one statement."""
        await self.start()
        await pg_traces.call(self.database, function, trace_id, *args)

    # -- the contract -------------------------------------------------------------------

    async def append(
        self, envelope: PersistenceEnvelope, idempotency_key: str | None = None
    ) -> None:
        """Append one envelope; see `PersistenceStore.append`. A retry with the same
        `idempotency_key` within the window is applied once."""
        await self.append_many([envelope], idempotency_key)

    async def append_many(
        self, envelopes: Iterable[PersistenceEnvelope], idempotency_key: str | None = None
    ) -> None:
        """Append envelopes of one trace, all or nothing, in one transaction.

        Raises:
            InvalidInput: the batch mixes traces or circuits, or its encoded size is over
                `max_batch_bytes` (InvalidEnvelope, EnvelopeTooLarge for one envelope).
            CircuitMismatch, TraceCompleted: as `append`.
        """
        items = TREE.check.items(envelopes, "envelopes")
        if not items:
            return
        batch = Batch(items, self._max_bytes, self._max_batch)
        trace_id, key = self._id(batch.trace_id), self._key(idempotency_key)
        circuit = self._text(items[0].circuit, "circuit")
        version = self._text(batch.schematic_version.decode(), "schematic_version", empty=True)
        if self._postgres:
            keep = self._keep
            sent = (list(batch.blobs), key, rows.now_ms(), keep.lifetime(False), keep.window)
            await self._call("rc_append", trace_id, circuit, version, *sent)
            return
        async with self._transaction(write=True) as tx:
            row, now = await rows.lock_or_create(tx, trace_id, circuit, version)
            if await rows.replayed(tx, trace_id, key, now - self._keep.window):
                return
            if row.circuit != circuit:
                raise CircuitMismatch(trace_id, row.circuit, circuit)
            if row.completion is not None:
                raise TraceCompleted(trace_id, "accept new events")
            await rows.add(tx, "rc_envelopes", trace_id, row.events + 1, batch.blobs)
            sets, args = "version = $4, n_events = $5", (version, row.events + len(batch.blobs))
            await rows.touch(tx, trace_id, now, self._keep.expires(now, False), sets, *args)
            await rows.remember(tx, trace_id, key, now, self._keep.window)

    async def snapshot(self, trace_id: str, keys: bool = False) -> TraceSnapshot | None:
        """The live trace as one transaction sees it, or None (`outbox.DurableTraces`);
        with `keys`, its idempotency keys within the window too (a warm's)."""
        self._id(trace_id)
        async with self._transaction(write=False) as tx:
            now = rows.now_ms()
            row = await rows.row(tx, trace_id)
            if row is None or not row.live(now):
                return None
            envelopes = await rows.blobs(tx, "rc_envelopes", trace_id)
            interventions = await rows.blobs(tx, "rc_interventions", trace_id)
            recent = await rows.keys(tx, trace_id, now - self._keep.window) if keys else []
        with rows.decoding("rc_traces", trace_id):
            resumed = rows.step(row.resumed)
        times = (row.created_ms, row.updated_ms)
        meta = (row.circuit, row.version, row.completion, resumed)
        return TraceSnapshot(trace_id, *meta, *times, envelopes, interventions, recent)

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace, events sorted by step with ties in append order; None if unknown."""
        snap = await self.snapshot(trace_id)
        if snap is None:
            return None
        with rows.decoding("rc_envelopes", trace_id):
            events = sorted(rows.envelopes(trace_id, snap.circuit, snap.blobs), key=_STEP)
        with rows.decoding("rc_interventions", trace_id):
            interventions = [decode_intervention(blob) for blob in snap.interventions]
        with rows.decoding("rc_traces", trace_id):
            return trusted(  # as its envelopes are: validating 10,000 of them again is slow
                PersistedTrace,
                {
                    "trace_id": trace_id,
                    "circuit": snap.circuit,
                    "schematic_version": snap.version,
                    "events": events,
                    "interventions": interventions,
                    "resumed_from_step": snap.resumed,
                    "completion": rows.completion(snap.completion),
                },
            )

    async def iter_events(self, trace_id: str) -> AsyncIterator[PersistenceEnvelope]:
        """The envelopes of a trace in append order, `PAGE` per transaction (bounded
        memory), up to those there when it started; none for an unknown trace.

        Raises:
            StoreUnavailable: the trace was deleted or re-created while it was read.
        """
        self._id(trace_id)
        seen: TraceRow | None = None
        done = 0
        while seen is None or done < seen.events:
            async with self._transaction(write=False) as tx:
                row = await rows.row(tx, trace_id)
                if seen is None and (row is None or not row.live(rows.now_ms())):
                    return
                if row is None or (seen is not None and row.created_ms != seen.created_ms):
                    raise TREE.unavailable(f"trace {trace_id} was deleted while it was read")
                seen = seen or row
                page = await tx.fetch(
                    "SELECT ordinal, blob FROM rc_envelopes WHERE trace_id = $1"
                    " AND ordinal > $2 AND ordinal <= $3 ORDER BY ordinal LIMIT $4",
                    *(trace_id, done, seen.events, PAGE),
                )
            if not page:
                return
            done = page[-1][0]
            with rows.decoding("rc_envelopes", trace_id):
                envelopes = rows.envelopes(trace_id, seen.circuit, [blob for _, blob in page])
            for envelope in envelopes:
                yield envelope

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        step = TREE.check.integer(resume_from_step, "resume_from_step", 0)
        self._id(trace_id)
        if self._postgres:
            args = (str(step), rows.now_ms(), self._keep.lifetime(False))
            await self._call("rc_resume", trace_id, *args)
            return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))
        async with self._transaction(write=True) as tx:
            row, now = await rows.existing(tx, trace_id)
            if row.completion is not None:
                raise TraceCompleted(trace_id, "be resumed")
            expires = self._keep.expires(now, False)
            await rows.touch(tx, trace_id, now, expires, "resumed = $4", str(step))
        return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; `completed_ttl` applies from here."""
        state = TREE.check.member(completion, CompletionState, "completion")
        self._id(trace_id)
        if self._postgres:
            args = (state.value, rows.now_ms(), self._keep.lifetime(True))
            await self._call("rc_complete", trace_id, *args)
            return
        async with self._transaction(write=True) as tx:
            _, now = await rows.existing(tx, trace_id)
            expires = self._keep.expires(now, True)
            await rows.touch(tx, trace_id, now, expires, "completion = $4", state.value)

    async def save_intervention(
        self, trace_id: str, intervention: Intervention, idempotency_key: str | None = None
    ) -> None:
        """Append an intervention, also on a completed trace; retry-safe like append."""
        blob = encode_intervention(intervention)
        self._id(trace_id)
        key = self._key(idempotency_key)
        if self._postgres:
            keep = self._keep
            args = (blob, key, rows.now_ms(), keep.lifetime(False), keep.lifetime(True))
            await self._call("rc_intervene", trace_id, *args, keep.window)
            return
        async with self._transaction(write=True) as tx:
            row, now = await rows.existing(tx, trace_id)
            if await rows.replayed(tx, trace_id, key, now - self._keep.window):
                return
            count = row.interventions + 1
            await rows.add(tx, "rc_interventions", trace_id, count, [blob])
            expires = self._keep.expires(now, row.completion is not None)
            await rows.touch(tx, trace_id, now, expires, "n_interventions = $4", count)
            await rows.remember(tx, trace_id, key, now, self._keep.window)

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace; returns whether it existed."""
        self._id(trace_id)
        async with self._transaction(write=True) as tx:
            row, _ = await rows.lock(tx, trace_id)
            if row is not None:
                await rows.remove(tx, [trace_id])
            return row is not None

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace, most recently updated first, optionally filtered.

        One transaction per `page` traces, each resuming after the last (updated_ms,
        trace_id) listed: a trace written meanwhile moves to the front, and is not listed
        twice (nor at all, if it was not listed before).
        """
        circuit = None if circuit is None else self._text(circuit, "circuit", empty=True)
        completed = TREE.check.optional_bool(completed, "completed")
        page = TREE.check.integer(page, "page", 1, 10_000)
        first, later, args = rows.listing(circuit, completed)
        now, cursor = rows.now_ms(), list[Any]()
        while True:
            async with self._transaction(write=False) as tx:
                found = await tx.fetch(later if cursor else first, page, now, *args, *cursor)
            for raw in found:
                try:
                    with rows.decoding("rc_traces", raw[0]):
                        summary = rows.summary(raw)
                except CorruptRecord as exc:  # one corrupt trace hides no other
                    log.warning("listing skips trace %r: %s", raw[0], exc)
                    continue
                yield summary
            if len(found) < page:
                return
            cursor = [found[-1][7], found[-1][0]]

    # -- administration and the durable tier ---------------------------------------------

    async def purge_expired(self, limit: int = 1000) -> int:
        """Remove the rows of up to `limit` expired traces (which already read as absent);
        returns how many. Run it now and then: nothing else reclaims a trace that is never
        written again. Rows that a call under way has locked are left for the next run."""
        limit = TREE.check.integer(limit, "limit", 1, 100_000)
        async with self._transaction(write=True) as tx:
            found = await rows.expired(tx, rows.now_ms(), limit)
            await rows.remove(tx, found)
        return len(found)

    async def check(self) -> dict[str, Any]:
        """A report: the database (without credentials), its dialect, server and schema version,
        the live and the expired traces, the store's settings, and `warnings`."""
        async with self._transaction(write=False) as tx:
            report = await rows.census(tx, self.database.dialect, PART, rows.now_ms())
        expired = report["traces_expired"]
        return {
            "database": self.database.where,
            "dialect": self.database.dialect,
            **report,
            "package_schema_version": SCHEMA_VERSION,
            "ttl_ms": self._keep.ttl,
            "completed_ttl_ms": self._keep.completed_ttl,
            "idempotency_window_ms": self._keep.window,
            "max_envelope_bytes": self._max_bytes,
            "max_batch_bytes": self._max_batch,
            "timeout": self.database.timeout,
            "warnings": [f"{expired} expired traces await purge_expired()"] if expired else [],
        }

    async def apply_changes(self, tx: Tx, changes: Sequence[TraceChange]) -> None:
        """Mirror a write-behind cache's `changes` in order inside `tx` (one of
        `self.database`'s, as `apply_outbox` gives: `start()` the store first, which creates
        the tables), without the contract's checks: the cache made them. Applying them
        twice changes nothing (see `sql_mirror`; with retention, `sql_traces.mirror`)."""
        if self._keep.ttl or self._keep.completed_ttl:
            await rows.mirror(tx, changes, self._keep)
        else:
            await mirror_bulk(tx, changes, self._keep.window)


class PostgresPersistenceStore(SqlPersistenceStore):
    """The checkpoint store on PostgreSQL (asyncpg: `pip install 'redis-checkpoint[postgres]'`).

    Each write locks its trace's row, so any number of processes may share the database.
    """

    schemes = ("postgresql", "postgres")
    dialects = ("postgres",)

    @classmethod
    def from_url(cls, url: str, **options: Unpack[PostgresOptions]) -> Self:
        """A store on `postgresql://user:password@host:port/database` (or `postgres://`);
        `timeout` is seconds per call, `pool_size` the most connections it opens."""
        return cls.open(url, dict(options))


class SqlitePersistenceStore(SqlPersistenceStore):
    """The checkpoint store on a SQLite file (aiosqlite: `pip install
    'redis-checkpoint[sqlite]'`), in WAL mode: one writer at a time, across processes too."""

    schemes = ("sqlite",)
    dialects = ("sqlite",)

    @classmethod
    def from_url(cls, url: str, **options: Unpack[Options]) -> Self:
        """A store on `sqlite:///relative.db`, `sqlite:////absolute.db` or
        `sqlite:///:memory:`; `timeout` is seconds per call (a lock wait included)."""
        return cls.open(url, dict(options))
