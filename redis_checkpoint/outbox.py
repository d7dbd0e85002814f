"""The changes a write-behind cache records in its outbox, as the durable stores apply them.

A write on the cache (`lua/*.lua` with the OUTBOX constant) adds one change record to its
shard's outbox stream in the same script as the change itself. A flusher reads the records,
turns them into the changes below, and has the durable store apply them in order, in one
transaction with the outbox's progress (`sql.Database.apply_outbox`). The checks of the
contract were made by the cache: applying a change only mirrors it, and applying one twice
changes nothing (rows are keyed by their ordinal or seq).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from .codec import decode_envelope, decode_intervention
from .models import CompletionState, PersistedTrace
from .sql import Database, Tx

if TYPE_CHECKING:  # the events package imports this module
    from .events.models import EventBase


@dataclass(frozen=True, slots=True)
class Appended:
    """Envelopes (encoded by `codec`) appended to a trace at ordinals `first`, `first + 1`,
    ...; the first append of a trace creates it and pins `circuit`."""

    trace_id: str
    circuit: str
    version: str
    first: int
    blobs: tuple[bytes, ...]
    at_ms: int
    key: str | None = None  # the idempotency key, if the call had one


@dataclass(frozen=True, slots=True)
class Completed:
    trace_id: str
    completion: str  # a CompletionState value
    at_ms: int


@dataclass(frozen=True, slots=True)
class Resumed:
    trace_id: str
    step: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class Intervened:
    """An intervention (encoded by `codec`) saved as the trace's `index`-th (from 1)."""

    trace_id: str
    index: int
    blob: bytes
    at_ms: int
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Deleted:
    trace_id: str


TraceChange = Appended | Completed | Resumed | Intervened | Deleted


@dataclass(frozen=True, slots=True)
class EventsAppended:
    """Events appended to a workflow's history; their seqs follow on from the head."""

    workflow_id: UUID
    events: tuple[EventBase, ...]


@dataclass(frozen=True, slots=True)
class TraceSnapshot:
    """A trace as one transaction of the durable store saw it, to warm the cache with:
    envelopes and interventions in append order (ordinals 1, 2, ...)."""

    trace_id: str
    circuit: str
    version: str
    completion: str | None
    resumed: int | None
    created_ms: int
    updated_ms: int
    blobs: list[bytes]
    interventions: list[bytes]
    keys: list[tuple[str, int]] = field(default_factory=list)  # idempotency key, applied ms

    def trace(self) -> PersistedTrace:
        """The trace as `load` returns it: events sorted by step, ties in append order."""
        events = [decode_envelope(blob, self.trace_id, self.circuit) for blob in self.blobs]
        return PersistedTrace(
            trace_id=self.trace_id,
            circuit=self.circuit,
            schematic_version=self.version,
            events=sorted(events, key=lambda e: e.step),
            interventions=[decode_intervention(blob) for blob in self.interventions],
            resumed_from_step=self.resumed,
            completion=None if self.completion is None else CompletionState(self.completion),
        )


class DurableTraces(Protocol):
    """What a checkpoint store needs to sit behind a tiered store (the SQL stores)."""

    database: Database

    async def snapshot(self, trace_id: str, keys: bool = False) -> TraceSnapshot | None:
        """The trace in one transaction, or None; `keys`: its recent idempotency keys too."""
        ...

    async def apply_changes(self, tx: Tx, changes: Sequence[TraceChange]) -> None:
        """Mirror `changes` in order inside `tx`; applying one twice changes nothing."""
        ...


class DurableHistories(Protocol):
    """What an event store needs to sit behind a tiered store (the SQL stores)."""

    database: Database

    async def apply_changes(self, tx: Tx, changes: Sequence[EventsAppended]) -> None:
        """Mirror `changes` in order inside `tx`; applying one twice changes nothing."""
        ...
