"""The in-memory reference store: Ranvier's semantics, with this package's decisions.

It keeps encoded bytes, not models, so it exercises the codec and the size limit exactly as
the Redis store does. Every method runs without awaiting inside, so each is atomic on the
event loop. Data lives as long as the object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from types import TracebackType
from typing import Self

from .codec import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_ENVELOPE_BYTES,
    Batch,
    decode_envelope,
    decode_intervention,
    encode_intervention,
)
from .errors import TREE, CircuitMismatch, TraceCompleted, TraceNotFound
from .models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
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
    keys: dict[str, int] = field(default_factory=dict)  # idempotency key -> applied at ms


class InMemoryPersistenceStore:
    """A `PersistenceStore` in a dict, for tests and local development.

    Args:
        ttl: seconds a trace lives after its last write (sliding); None keeps it.
        completed_ttl: seconds a trace lives after `complete`; None falls back to `ttl`.
        max_envelope_bytes: the largest encoded envelope accepted.
        max_batch_bytes: the largest encoded `append_many` batch accepted.
        idempotency_window: seconds an `idempotency_key` is remembered.
        clock: returns the time in seconds; injected by tests.
    """

    def __init__(
        self,
        *,
        ttl: float | None = None,
        completed_ttl: float | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        idempotency_window: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check = TREE.check
        self._traces: dict[str, _Trace] = {}
        self._ttl = check.ttl_ms(ttl, "ttl")
        self._completed_ttl = check.ttl_ms(completed_ttl, "completed_ttl")
        self._max_bytes = check.integer(max_envelope_bytes, "max_envelope_bytes", 1)
        self._max_batch = check.integer(max_batch_bytes, "max_batch_bytes", 1)
        self._window = check.ttl_ms(idempotency_window, "idempotency_window")
        self._clock = clock
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store: later calls raise StoreClosed (the data stays in the object)."""
        self._closed = True

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, trace_id: str) -> _Trace | None:
        if self._closed:
            raise TREE.closed("the in-memory store is closed")
        TREE.check.utf8(trace_id, "trace_id")
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

    def _touch(self, trace: _Trace, key: str | None = None) -> None:
        trace.updated_ms = now = self._now()
        if key is not None:
            trace.keys[key] = now
        keep = self._completed_ttl if trace.completion and self._completed_ttl else self._ttl
        if keep:
            trace.expires_ms = now + keep

    def _replayed(self, trace: _Trace | None, key: str | None) -> bool:
        """Whether `key` was applied to the trace within the idempotency window."""
        if key is None:
            return False
        TREE.check.utf8(key, "idempotency_key")
        if trace is None:
            return False
        horizon = self._now() - self._window
        trace.keys = {k: at for k, at in trace.keys.items() if at > horizon}
        return key in trace.keys

    async def append(
        self, envelope: PersistenceEnvelope, idempotency_key: str | None = None
    ) -> None:
        """Append one envelope; see `PersistenceStore.append`."""
        await self.append_many([envelope], idempotency_key)

    async def append_many(
        self, envelopes: Iterable[PersistenceEnvelope], idempotency_key: str | None = None
    ) -> None:
        """Append envelopes of one trace, all or nothing."""
        items = TREE.check.items(envelopes, "envelopes")
        if not items:
            return
        batch = Batch(items, self._max_bytes, self._max_batch)
        circuit = batch.circuit.decode()
        trace = self._get(batch.trace_id)
        if self._replayed(trace, idempotency_key):
            return
        if trace is None:
            trace = _Trace(circuit, batch.schematic_version.decode())
        elif trace.circuit != circuit:
            raise CircuitMismatch(batch.trace_id, trace.circuit, circuit)
        elif trace.completion is not None:
            raise TraceCompleted(batch.trace_id, "accept new events")
        self._traces[batch.trace_id] = trace
        trace.version = batch.schematic_version.decode()
        trace.events.extend(batch.blobs)
        self._touch(trace, idempotency_key)

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace, events sorted by step with ties in append order; None if unknown."""
        trace = self._get(trace_id)
        if trace is None:
            return None
        events = sorted(await self._events(trace_id, trace), key=attrgetter("step"))
        return PersistedTrace(
            trace_id=trace_id,
            circuit=trace.circuit,
            schematic_version=trace.version,
            events=events,
            interventions=[decode_intervention(b) for b in trace.interventions],
            resumed_from_step=trace.resumed,
            completion=trace.completion,
        )

    async def _events(self, trace_id: str, trace: _Trace) -> list[PersistenceEnvelope]:
        return [decode_envelope(b, trace_id, trace.circuit) for b in trace.events]

    async def iter_events(self, trace_id: str) -> AsyncIterator[PersistenceEnvelope]:
        """The envelopes of a trace in append order; none for an unknown trace."""
        trace = self._get(trace_id)
        for envelope in [] if trace is None else await self._events(trace_id, trace):
            yield envelope

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        step = TREE.check.integer(resume_from_step, "resume_from_step", 0)
        trace = self._existing(trace_id)
        if trace.completion is not None:
            raise TraceCompleted(trace_id, "be resumed")
        trace.resumed = step
        self._touch(trace)
        return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; `completed_ttl` applies from here."""
        state = TREE.check.member(completion, CompletionState, "completion")
        trace = self._existing(trace_id)
        trace.completion = state
        self._touch(trace)

    async def save_intervention(
        self, trace_id: str, intervention: Intervention, idempotency_key: str | None = None
    ) -> None:
        """Append an intervention, also on a completed trace."""
        blob = encode_intervention(intervention)
        trace = self._existing(trace_id)
        if not self._replayed(trace, idempotency_key):
            trace.interventions.append(blob)
            self._touch(trace, idempotency_key)

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace; returns whether it existed."""
        return self._get(trace_id) is not None and self._traces.pop(trace_id) is not None

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace, most recently updated first, optionally filtered."""
        circuit = TREE.check.optional_text(circuit, "circuit")
        completed = TREE.check.optional_bool(completed, "completed")
        TREE.check.integer(page, "page", 1, 10_000)
        if self._closed:
            raise TREE.closed("the in-memory store is closed")
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
