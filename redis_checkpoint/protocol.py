"""The `PersistenceStore` contract, as Ranvier's trait defines it, plus this package's extras."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

from .models import (
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
)


@runtime_checkable
class PersistenceStore(Protocol):
    """Stores checkpoint traces so that a crashed pipeline resumes where it stopped.

    The runtime calls `append` on each step and `complete` on terminal outcomes; `resume`
    records where the next execution of the trace starts. Every method is atomic.
    """

    async def append(self, envelope: PersistenceEnvelope) -> None:
        """Append one envelope; the first append creates the trace and pins its circuit.

        Duplicate and out-of-order steps are accepted. The trace takes the envelope's
        `schematic_version`.

        Raises:
            CircuitMismatch: the trace exists for another circuit.
            TraceCompleted: the trace is completed.
            InvalidEnvelope: the envelope cannot be stored (EnvelopeTooLarge if too big).
        """
        ...

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace with its events sorted by step (ties in append order), or None."""
        ...

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record `resume_from_step` verbatim; returns `next_step = resume_from_step + 1`.

        Raises:
            TraceNotFound: no such trace.
            TraceCompleted: the trace is completed and cannot be resumed.
        """
        ...

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting any earlier one.

        Raises:
            TraceNotFound: no such trace.
        """
        ...

    async def save_intervention(self, trace_id: str, intervention: Intervention) -> None:
        """Append an intervention; allowed on completed traces too.

        Raises:
            TraceNotFound: no such trace.
        """
        ...


class ManagedPersistenceStore(PersistenceStore, Protocol):
    """What both stores of this package add beyond the upstream trait."""

    async def append(
        self, envelope: PersistenceEnvelope, idempotency_key: str | None = None
    ) -> None:
        """Append one envelope; a retry with the same `idempotency_key` is applied once."""
        ...

    async def append_many(
        self, envelopes: Iterable[PersistenceEnvelope], idempotency_key: str | None = None
    ) -> None:
        """Append envelopes of one trace, all or nothing, in one round trip."""
        ...

    async def save_intervention(
        self, trace_id: str, intervention: Intervention, idempotency_key: str | None = None
    ) -> None:
        """Append an intervention; a retry with the same `idempotency_key` is applied once."""
        ...

    def iter_events(self, trace_id: str) -> AsyncIterator[PersistenceEnvelope]:
        """The envelopes of a trace in append order, in pages; none for an unknown trace."""
        ...

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace; returns whether it existed."""
        ...

    def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace, most recently updated first, optionally filtered."""
        ...

    async def aclose(self) -> None:
        """Close the store (and the connection, if the store opened it); later calls raise
        StoreClosed."""
        ...
