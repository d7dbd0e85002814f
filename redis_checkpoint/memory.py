"""The in-memory reference store: Ranvier's semantics, with this package's decisions.

It keeps encoded bytes, not models, so it exercises the codec and the size limit exactly as
the Redis store does. Every method runs without awaiting inside, so each is atomic on the
event loop. Data lives as long as the object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from operator import attrgetter
from types import TracebackType
from typing import Self

from .codec import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Batch,
    decode_envelope,
    decode_intervention,
    encode_intervention,
)
from .errors import CircuitMismatch, TraceCompleted, TraceNotFound
from .keys import utf8
from .models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
    as_completion,
    as_size,
    as_step,
    as_ttl_ms,
)


@dataclass(slots=True)
class _Trace:
    circuit: str
    version: str
    events: list[bytes] = field(default_factory=list)  # append order; sorted on load
    interventions: list[bytes] = field(default_factory=list)
    resumed: int | None = None
    completion: CompletionState | None = None
    updated_ms: int = 0
    expires_ms: int | None = None


class InMemoryPersistenceStore:
    """A `PersistenceStore` in a dict, for tests and local development.

    Args:
        ttl: seconds a trace lives after its last write (sliding); None keeps it.
        completed_ttl: seconds a trace lives after `complete`; None falls back to `ttl`.
        max_envelope_bytes: the largest encoded envelope accepted.
        clock: returns the time in seconds; injected by tests.
    """

    def __init__(
        self,
        *,
        ttl: float | None = None,
        completed_ttl: float | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._traces: dict[str, _Trace] = {}
        self._ttl = as_ttl_ms(ttl, "ttl")
        self._completed_ttl = as_ttl_ms(completed_ttl, "completed_ttl")
        self._max_bytes = as_size(max_envelope_bytes, "max_envelope_bytes")
        self._clock = clock

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; the data stays until the object goes."""

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, trace_id: str) -> _Trace | None:
        utf8(trace_id, "trace_id")
        trace = self._traces.get(trace_id)
        if trace is not None and trace.expires_ms is not None and trace.expires_ms <= self._now():
            del self._traces[trace_id]
            return None
        return trace

    def _existing(self, trace_id: str) -> _Trace:
        trace = self._get(trace_id)
        if trace is None:
            raise TraceNotFound(trace_id)
        return trace

    def _touch(self, trace: _Trace) -> None:
        trace.updated_ms = now = self._now()
        keep = self._completed_ttl if trace.completion and self._completed_ttl else self._ttl
        if keep:
            trace.expires_ms = now + keep

    async def append(self, envelope: PersistenceEnvelope) -> None:
        """Append one envelope; see `PersistenceStore.append`."""
        await self.append_many([envelope])

    async def append_many(self, envelopes: list[PersistenceEnvelope]) -> None:
        """Append envelopes of one trace, all or nothing."""
        if not envelopes:
            return
        batch = Batch(envelopes, self._max_bytes)
        trace = self._get(batch.trace_id)
        if trace is None:
            trace = _Trace(batch.circuit, batch.schematic_version)
        elif trace.circuit != batch.circuit:
            raise CircuitMismatch(batch.trace_id, trace.circuit, batch.circuit)
        elif trace.completion is not None:
            raise TraceCompleted(batch.trace_id, "accept new events")
        self._traces[batch.trace_id] = trace
        trace.version = batch.schematic_version
        trace.events.extend(batch.blobs)
        self._touch(trace)

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace, events sorted by step with ties in append order; None if unknown."""
        trace = self._get(trace_id)
        if trace is None:
            return None
        events = [decode_envelope(b, trace_id, trace.circuit) for b in trace.events]
        events.sort(key=attrgetter("step"))
        return PersistedTrace(
            trace_id=trace_id,
            circuit=trace.circuit,
            schematic_version=trace.version,
            events=events,
            interventions=[decode_intervention(b) for b in trace.interventions],
            resumed_from_step=trace.resumed,
            completion=trace.completion,
        )

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        step = as_step(resume_from_step)
        trace = self._existing(trace_id)
        if trace.completion is not None:
            raise TraceCompleted(trace_id, "be resumed")
        trace.resumed = step
        self._touch(trace)
        return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; `completed_ttl` applies from here."""
        state = as_completion(completion)
        trace = self._existing(trace_id)
        trace.completion = state
        self._touch(trace)

    async def save_intervention(self, trace_id: str, intervention: Intervention) -> None:
        """Append an intervention, also on a completed trace."""
        blob = encode_intervention(intervention)
        trace = self._existing(trace_id)
        trace.interventions.append(blob)
        self._touch(trace)

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace; returns whether it existed."""
        return self._get(trace_id) is not None and self._traces.pop(trace_id) is not None

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace, most recently updated first, optionally filtered."""
        live = [(tid, t) for tid in list(self._traces) if (t := self._get(tid)) is not None]
        live.sort(key=lambda item: item[1].updated_ms, reverse=True)
        for trace_id, t in live:
            if (circuit is None or t.circuit == circuit) and (
                completed is None or (t.completion is not None) == completed
            ):
                yield TraceSummary(
                    trace_id=trace_id,
                    circuit=t.circuit,
                    schematic_version=t.version,
                    events=len(t.events),
                    interventions=len(t.interventions),
                    resumed_from_step=t.resumed,
                    completion=t.completion,
                    updated_ms=t.updated_ms,
                )
