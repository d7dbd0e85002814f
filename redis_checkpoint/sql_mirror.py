"""A write-behind batch of trace changes, applied to the SQL tables in bulk.

The flusher hands over up to a thousand changes at a time. Applied one by one, each costs
several statements; here a run of changes between two deletes is folded first, per trace
(the last version, completion and resume step; the largest counts; the first and last
times), and then written with one `executemany` per table: the envelopes, the
interventions, the trace rows (upserted: counts only grow, a completion or a resume step
is kept unless the batch sets one), the idempotency keys. So a batch applied twice changes
nothing. A durable store with retention (`ttl`) takes `sql_traces.mirror`, change by change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .outbox import Appended, Completed, Deleted, Intervened, Resumed, TraceChange
from .sql import Tx
from .sql_traces import remove

_LATER = "CASE WHEN excluded.{0} > rc_traces.{0} THEN excluded.{0} ELSE rc_traces.{0} END"
# A trace some Appended of the batch creates, or else brings up to date.
UPSERT = (
    "INSERT INTO rc_traces (trace_id, circuit, version, completion, resumed, n_events,"
    " n_interventions, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (trace_id) DO UPDATE SET version = excluded.version,"
    " completion = COALESCE(excluded.completion, rc_traces.completion),"
    " resumed = COALESCE(excluded.resumed, rc_traces.resumed),"
    f" n_events = {_LATER.format('n_events')},"
    f" n_interventions = {_LATER.format('n_interventions')},"
    " updated_ms = excluded.updated_ms"
)
# A trace the batch only completes, resumes or intervenes on: it exists, or a delete
# further on in the outbox removed it (then there is no row to update).
UPDATE = (
    "UPDATE rc_traces SET completion = COALESCE($2, completion), resumed = COALESCE($3, resumed),"
    " n_interventions = CASE WHEN $4 > n_interventions THEN $4 ELSE n_interventions END,"
    " updated_ms = $5 WHERE trace_id = $1"
)


@dataclass(slots=True)
class _Fold:
    """What a run of changes does to one trace."""

    circuit: str | None = None  # set by an Appended: the row is upserted
    version: str = ""
    completion: str | None = None
    resumed: str | None = None
    events: int = 0
    interventions: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    keys: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Run:
    """A run of changes with no delete inside, folded, and the rows it inserts."""

    traces: dict[str, _Fold] = field(default_factory=dict)
    envelopes: list[tuple[str, int, bytes]] = field(default_factory=list)
    interventions: list[tuple[str, int, bytes]] = field(default_factory=list)

    def add(self, change: Appended | Completed | Resumed | Intervened) -> None:
        fold = self.traces.setdefault(change.trace_id, _Fold())
        if isinstance(change, Appended):
            if fold.circuit is None:
                fold.created_ms = change.at_ms
            fold.circuit, fold.version = change.circuit, change.version
            fold.events = max(fold.events, change.first + len(change.blobs) - 1)
            rows = enumerate(change.blobs, change.first)
            self.envelopes += [(change.trace_id, n, blob) for n, blob in rows]
        elif isinstance(change, Intervened):
            fold.interventions = max(fold.interventions, change.index)
            self.interventions.append((change.trace_id, change.index, change.blob))
        elif isinstance(change, Completed):
            fold.completion = change.completion
        elif isinstance(change, Resumed):
            fold.resumed = str(change.step)
        fold.updated_ms = change.at_ms
        key = getattr(change, "key", None)
        if key is not None:
            fold.keys[key] = change.at_ms

    async def write(self, tx: Tx, window: int) -> None:
        for table, rows in (
            ("rc_envelopes", self.envelopes),
            ("rc_interventions", self.interventions),
        ):
            if rows:
                await tx.executemany(
                    f"INSERT INTO {table} (trace_id, ordinal, blob) VALUES ($1, $2, $3)"
                    " ON CONFLICT (trace_id, ordinal) DO NOTHING",
                    rows,
                )
        made = [(t, f) for t, f in self.traces.items() if f.circuit is not None]
        if made:
            await tx.executemany(UPSERT, [_upsert(t, f) for t, f in made])
        touched = [(t, f) for t, f in self.traces.items() if f.circuit is None]
        if touched:
            updates = [
                (t, f.completion, f.resumed, f.interventions, f.updated_ms) for t, f in touched
            ]
            await tx.executemany(UPDATE, updates)
        await _remember(tx, self.traces, window)


def _upsert(trace_id: str, f: _Fold) -> tuple[object, ...]:
    return (
        *(trace_id, f.circuit, f.version, f.completion, f.resumed, f.events, f.interventions),
        *(f.created_ms, f.updated_ms),
    )


async def _remember(tx: Tx, traces: dict[str, _Fold], window: int) -> None:
    """The batch's idempotency keys, and the traces' keys older than `window` go."""
    keyed = [(t, f) for t, f in traces.items() if f.keys]
    if not keyed:
        return
    await tx.executemany(
        "DELETE FROM rc_idempotency WHERE trace_id = $1 AND at_ms <= $2",
        [(t, f.updated_ms - window) for t, f in keyed],
    )
    await tx.executemany(
        "INSERT INTO rc_idempotency (trace_id, idem_key, at_ms) VALUES ($1, $2, $3)"
        " ON CONFLICT (trace_id, idem_key) DO UPDATE SET at_ms = excluded.at_ms",
        [(t, key, at) for t, f in keyed for key, at in f.keys.items()],
    )


def _runs(changes: Sequence[TraceChange]) -> Iterator[_Run | Deleted]:
    """`changes` as runs with no delete inside, and the deletes between them."""
    run = _Run()
    for change in changes:
        if isinstance(change, Deleted):
            if run.traces:
                yield run
                run = _Run()
            yield change
        else:
            run.add(change)
    if run.traces:
        yield run


async def mirror_bulk(tx: Tx, changes: Sequence[TraceChange], window: int) -> None:
    """Apply a cache's `changes` in order inside `tx`, in bulk (see the module doc)."""
    for part in _runs(changes):
        if isinstance(part, Deleted):
            await remove(tx, [part.trace_id])
        else:
            await part.write(tx, window)
