"""The checkpoint-store conformance suite: Ranvier's reference semantics and ours.

Every rule of the upstream contract (reference section 3) and of this package's decisions
has one test here, run against every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import JsonValue

from ..codec import encode_envelope
from ..errors import (
    CircuitMismatch,
    EnvelopeTooLarge,
    InvalidEnvelope,
    InvalidInput,
    StoreClosed,
    TraceCompleted,
    TraceNotFound,
)
from ..models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
)
from ..protocol import ManagedPersistenceStore

StoreFactory = Callable[..., Awaitable[ManagedPersistenceStore]]

HOSTILE_IDS = ["{a}", "a", "a:b", "a%3Ab", "a%253Ab", "%", "}", "{", "🦀 trace", "x" * 1024]


def envelope(
    trace_id: str = "trace-1",
    step: int = 1,
    *,
    circuit: str = "Flow",
    kind: str = "Next",
    payload: JsonValue = None,
    version: str = "1.0",
    node_id: str | None = None,
) -> PersistenceEnvelope:
    """An envelope with defaults that tests override by keyword."""
    return PersistenceEnvelope(
        trace_id=trace_id,
        circuit=circuit,
        schematic_version=version,
        step=step,
        node_id=node_id,
        outcome_kind=kind,
        timestamp_ms=1_760_000_000_000 + step % 1000,
        payload=payload,
    )


def envelope_of_size(size: int, trace_id: str = "trace-1") -> PersistenceEnvelope:
    """An envelope whose encoded form is exactly `size` bytes (string payload padding)."""
    pad = size - len(encode_envelope(envelope(trace_id, payload="")))
    while True:  # the msgpack string header grows with the string; settle on the exact size
        env = envelope(trace_id, payload="p" * pad)
        excess = len(encode_envelope(env)) - size
        if excess == 0:
            return env
        pad -= excess


def steps(trace: PersistedTrace | None) -> list[tuple[int, str]]:
    assert trace is not None
    return [(e.step, e.outcome_kind) for e in trace.events]


class _Contract:
    """The PersistenceStore contract as Ranvier defines it."""

    #: How much longer than a TTL to wait before asserting expiry.
    expiry_margin = 0.15

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> ManagedPersistenceStore:
        return await make_store()

    # -- append and load --------------------------------------------------------------

    async def test_append_and_load_roundtrip(self, store: ManagedPersistenceStore) -> None:
        first = envelope(step=1, payload={"Next": {"order_id": "1001"}}, node_id="node-1")
        second = envelope(step=2, payload=[1, 2.5, "x", True, None])
        await store.append(first)
        await store.append(second)
        trace = await store.load("trace-1")
        assert trace is not None
        assert trace.events == [first, second]
        assert (trace.circuit, trace.schematic_version) == ("Flow", "1.0")
        assert trace.completion is None and trace.resumed_from_step is None
        assert trace.interventions == []

    async def test_load_unknown_trace_is_none(self, store: ManagedPersistenceStore) -> None:
        assert await store.load("never-written") is None

    async def test_events_sorted_by_step_ties_in_append_order(
        self, store: ManagedPersistenceStore
    ) -> None:
        for step, kind in [(3, "a"), (1, "b"), (3, "c"), (0, "d"), (1, "e"), (3, "f")]:
            await store.append(envelope(step=step, kind=kind))
        assert steps(await store.load("trace-1")) == [
            (0, "d"),
            (1, "b"),
            (1, "e"),
            (3, "a"),
            (3, "c"),
            (3, "f"),
        ]

    async def test_duplicate_and_out_of_order_steps_accepted(
        self, store: ManagedPersistenceStore
    ) -> None:
        # The runtime's own 1-node success: Enter@0, Next@1, final Next@1, then a gap.
        for step, kind in [(0, "Enter"), (1, "Next"), (1, "Next"), (7, "Jump"), (2, "Next")]:
            await store.append(envelope(step=step, kind=kind))
        assert steps(await store.load("trace-1")) == [
            (0, "Enter"),
            (1, "Next"),
            (1, "Next"),
            (2, "Next"),
            (7, "Jump"),
        ]

    async def test_extreme_steps_round_trip(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=U64_MAX))
        await store.append(envelope(step=0))
        assert [e.step for e in (await store.load("trace-1") or _absent()).events] == [0, U64_MAX]

    async def test_schematic_version_follows_last_append(
        self, store: ManagedPersistenceStore
    ) -> None:
        await store.append(envelope(step=1, version="1.0"))
        await store.append(envelope(step=2, version="1.1"))
        trace = await store.load("trace-1")
        assert trace is not None and trace.schematic_version == "1.1"
        assert [e.schematic_version for e in trace.events] == ["1.0", "1.1"]

    async def test_circuit_is_pinned_by_first_append(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1, circuit="Flow"))
        with pytest.raises(CircuitMismatch, match="already exists for circuit Flow, got Other"):
            await store.append(envelope(step=2, circuit="Other"))
        assert steps(await store.load("trace-1")) == [(1, "Next")]

    async def test_append_after_completion_rejected(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1))
        await store.complete("trace-1", CompletionState.SUCCESS)
        with pytest.raises(TraceCompleted, match="is already completed and cannot accept new"):
            await store.append(envelope(step=2))
        with pytest.raises(TraceCompleted):
            await store.append_many([envelope(step=3), envelope(step=4)])
        assert steps(await store.load("trace-1")) == [(1, "Next")]

    async def test_append_many_is_one_ordered_batch(self, store: ManagedPersistenceStore) -> None:
        batch = [envelope(step=s, kind=k) for s, k in [(2, "a"), (1, "b"), (2, "c")]]
        await store.append_many(batch)
        await store.append_many([])
        assert steps(await store.load("trace-1")) == [(1, "b"), (2, "a"), (2, "c")]

    @pytest.mark.parametrize("bad", ["other trace", "other circuit", "not an envelope", "huge"])
    async def test_append_many_with_one_invalid_envelope_writes_nothing(
        self, make_store: StoreFactory, bad: str
    ) -> None:
        store = await make_store(max_envelope_bytes=4096)
        await store.append(envelope(step=0))
        before = await store.load("trace-1")
        intruder: Any = {
            "other trace": envelope("trace-2", step=5),
            "other circuit": envelope(step=5, circuit="Other"),
            "not an envelope": {"trace_id": "trace-1", "step": 5},
            "huge": envelope_of_size(4097),
        }[bad]
        with pytest.raises(InvalidEnvelope):
            await store.append_many([envelope(step=1), intruder, envelope(step=2)])
        assert await store.load("trace-1") == before
        assert await store.load("trace-2") is None

    async def test_append_rejects_non_envelopes(self, store: ManagedPersistenceStore) -> None:
        bad: Any = {"trace_id": "trace-1"}
        with pytest.raises(InvalidEnvelope, match="PersistenceEnvelope"):
            await store.append(bad)
        assert await store.load("trace-1") is None

    async def test_payload_at_size_limit_accepted_one_byte_over_rejected(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store(max_envelope_bytes=2048)
        at_limit = envelope_of_size(2048)
        await store.append(at_limit)
        with pytest.raises(EnvelopeTooLarge, match="2049 bytes"):
            await store.append(envelope_of_size(2049))
        with pytest.raises(EnvelopeTooLarge):
            await store.append(envelope_of_size(2049, trace_id="fresh"))
        trace = await store.load("trace-1")
        assert trace is not None and trace.events == [at_limit]
        assert await store.load("fresh") is None

    # -- resume -----------------------------------------------------------------------

    async def test_resume_records_cursor(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=3))
        cursor = await store.resume("trace-1", 3)
        assert (cursor.trace_id, cursor.next_step) == ("trace-1", 4)
        trace = await store.load("trace-1")
        assert trace is not None and trace.resumed_from_step == 3
        assert steps(trace) == [(3, "Next")]  # resume appends nothing

    async def test_resume_is_not_range_checked_and_overwrites(
        self, store: ManagedPersistenceStore
    ) -> None:
        await store.append(envelope(step=1))
        assert (await store.resume("trace-1", 99)).next_step == 100
        assert (await store.resume("trace-1", 0)).next_step == 1
        assert (await store.resume("trace-1", U64_MAX)).next_step == U64_MAX  # saturates
        trace = await store.load("trace-1")
        assert trace is not None and trace.resumed_from_step == U64_MAX

    async def test_resume_unknown_trace(self, store: ManagedPersistenceStore) -> None:
        with pytest.raises(TraceNotFound, match="trace_id nope not found"):
            await store.resume("nope", 1)
        assert await store.load("nope") is None

    async def test_resume_completed_trace_rejected(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1))
        await store.resume("trace-1", 1)
        await store.complete("trace-1", CompletionState.FAULT)
        with pytest.raises(TraceCompleted, match="is already completed and cannot be resumed"):
            await store.resume("trace-1", 5)
        trace = await store.load("trace-1")
        assert trace is not None and trace.resumed_from_step == 1

    @pytest.mark.parametrize("step", [-1, 2**64, True, 1.0, "3", None])
    async def test_resume_rejects_bad_steps(
        self, store: ManagedPersistenceStore, step: Any
    ) -> None:
        await store.append(envelope(step=1))
        with pytest.raises(InvalidInput, match="resume_from_step"):
            await store.resume("trace-1", step)
        trace = await store.load("trace-1")
        assert trace is not None and trace.resumed_from_step is None

    # -- complete ---------------------------------------------------------------------

    async def test_complete_overwrites(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1))
        for state in [CompletionState.SUCCESS, CompletionState.SUCCESS, CompletionState.FAULT]:
            await store.complete("trace-1", state)
        await store.complete("trace-1", "Compensated")  # type: ignore[arg-type]
        trace = await store.load("trace-1")
        assert trace is not None and trace.completion is CompletionState.COMPENSATED
        assert steps(trace) == [(1, "Next")]

    async def test_complete_unknown_trace(self, store: ManagedPersistenceStore) -> None:
        with pytest.raises(TraceNotFound, match="not found"):
            await store.complete("nope", CompletionState.SUCCESS)
        assert await store.load("nope") is None

    async def test_complete_rejects_unknown_state(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1))
        with pytest.raises(InvalidInput, match="completion must be one of"):
            await store.complete("trace-1", "Done")  # type: ignore[arg-type]
        trace = await store.load("trace-1")
        assert trace is not None and trace.completion is None

    # -- interventions ----------------------------------------------------------------

    async def test_interventions_append_in_order(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1))
        items = [
            Intervention(target_node="node-2", payload_override=100, timestamp_ms=1),
            Intervention(target_node="Charge", payload_override={"a": [1]}, timestamp_ms=2),
            Intervention(target_node="node-2", timestamp_ms=3),
        ]
        for item in items:
            await store.save_intervention("trace-1", item)
        trace = await store.load("trace-1")
        assert trace is not None and trace.interventions == items

    async def test_interventions_allowed_on_completed_traces(
        self, store: ManagedPersistenceStore
    ) -> None:
        await store.append(envelope(step=1))
        await store.resume("trace-1", 1)
        await store.complete("trace-1", CompletionState.SUCCESS)
        item = Intervention(target_node="node-1", payload_override=None, timestamp_ms=9)
        await store.save_intervention("trace-1", item)
        trace = await store.load("trace-1")
        assert trace is not None and trace.interventions == [item]
        assert trace.completion is CompletionState.SUCCESS and trace.resumed_from_step == 1

    async def test_intervention_on_unknown_trace(self, store: ManagedPersistenceStore) -> None:
        with pytest.raises(TraceNotFound, match="not found"):
            await store.save_intervention("nope", Intervention(target_node="n", timestamp_ms=1))
        assert await store.load("nope") is None

    # -- a rejected operation changes nothing -----------------------------------------

    async def test_rejected_operations_change_nothing(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1, version="1.0"))
        await store.complete("trace-1", CompletionState.FAULT)
        before = await store.load("trace-1")
        attempts: list[tuple[type[Exception], Callable[[], Awaitable[object]]]] = [
            (TraceCompleted, lambda: store.append(envelope(step=2, version="2.0"))),
            (CircuitMismatch, lambda: store.append(envelope(step=2, circuit="Other"))),
            (TraceCompleted, lambda: store.append_many([envelope(step=2), envelope(step=3)])),
            (TraceCompleted, lambda: store.resume("trace-1", 1)),
            (InvalidInput, lambda: store.complete("trace-1", "Bogus")),  # type: ignore[arg-type]
        ]
        for error, attempt in attempts:
            with pytest.raises(error):
                await attempt()
            assert await store.load("trace-1") == before

    async def test_rejected_circuit_keeps_schematic_version(
        self, store: ManagedPersistenceStore
    ) -> None:
        # Upstream's in-memory store rewrote schematic_version on a rejected append; we do not.
        await store.append(envelope(step=1, version="1.0"))
        with pytest.raises(CircuitMismatch):
            await store.append(envelope(step=2, version="2.0", circuit="Other"))
        trace = await store.load("trace-1")
        assert trace is not None and trace.schematic_version == "1.0"

    # -- ids --------------------------------------------------------------------------

    async def test_hostile_and_unicode_ids_stay_isolated(
        self, store: ManagedPersistenceStore
    ) -> None:
        for n, trace_id in enumerate(HOSTILE_IDS):
            await store.append(envelope(trace_id, step=n, payload=trace_id))
        for n, trace_id in enumerate(HOSTILE_IDS):
            trace = await store.load(trace_id)
            assert trace is not None and trace.trace_id == trace_id
            assert [(e.step, e.payload, e.trace_id) for e in trace.events] == [
                (n, trace_id, trace_id)
            ]
        assert await store.delete("a:b")
        assert await store.load("a:b") is None
        assert await store.load("a%3Ab") is not None and await store.load("{a}") is not None
        listed = {s.trace_id async for s in store.iter_traces()}
        assert listed == set(HOSTILE_IDS) - {"a:b"}

    @pytest.mark.parametrize("trace_id", ["", "\ud800"])
    async def test_invalid_ids_rejected(
        self, store: ManagedPersistenceStore, trace_id: str
    ) -> None:
        with pytest.raises(InvalidInput, match="trace_id"):
            await store.resume(trace_id, 1)
        with pytest.raises(InvalidInput, match="trace_id"):
            await store.load(trace_id)

    # -- delete and listing -----------------------------------------------------------

    async def test_delete(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope("keep", step=1))
        await store.append(envelope("drop", step=1))
        await store.save_intervention("drop", Intervention(target_node="n", timestamp_ms=1))
        assert await store.delete("drop") is True
        assert await store.delete("drop") is False
        assert await store.load("drop") is None
        assert await store.load("keep") is not None
        await store.append(envelope("drop", step=5, circuit="Reborn"))  # the id is free again
        assert steps(await store.load("drop")) == [(5, "Next")]

    async def test_iter_traces_newest_first_with_filters(
        self, store: ManagedPersistenceStore
    ) -> None:
        for n in range(12):
            await store.append(envelope(f"t{n}", step=n, circuit="A" if n % 2 else "B"))
            await asyncio.sleep(0.002)  # distinct update times
        await store.complete("t3", CompletionState.SUCCESS)
        await asyncio.sleep(0.002)
        await store.save_intervention("t5", Intervention(target_node="x", timestamp_ms=1))
        everything = [s async for s in store.iter_traces()]
        assert [s.trace_id for s in everything][:2] == ["t5", "t3"]
        assert sorted(s.trace_id for s in everything) == sorted(f"t{n}" for n in range(12))
        by_id = {s.trace_id: s for s in everything}
        assert (by_id["t5"].events, by_id["t5"].interventions, by_id["t5"].circuit) == (1, 1, "A")
        assert [s.trace_id async for s in store.iter_traces(completed=True)] == ["t3"]
        only_b = [s.trace_id async for s in store.iter_traces(circuit="B", completed=False)]
        assert only_b == [f"t{n}" for n in (10, 8, 6, 4, 2, 0)]

    # -- concurrency ------------------------------------------------------------------

    async def test_concurrent_writers_lose_nothing(self, store: ManagedPersistenceStore) -> None:
        async def writer(w: int) -> None:
            for i in range(200):
                await store.append(envelope(step=i % 7, kind=f"w{w}", payload=i))

        await asyncio.gather(*(writer(w) for w in range(16)))
        trace = await store.load("trace-1")
        assert trace is not None and len(trace.events) == 3200
        for w in range(16):  # each writer's events, per step, in the order it wrote them
            mine = [e for e in trace.events if e.outcome_kind == f"w{w}"]
            assert [e.payload for e in mine] == sorted(range(200), key=lambda i: i % 7)

    async def test_append_racing_complete_never_stores_after_completion(
        self, store: ManagedPersistenceStore
    ) -> None:
        await store.append(envelope(step=0, kind="Enter"))
        accepted: list[str] = []

        async def writer(w: int) -> None:
            for i in range(10_000):
                try:
                    await store.append(envelope(step=1, payload=f"{w}:{i}"))
                except TraceCompleted:
                    return
                accepted.append(f"{w}:{i}")
                await asyncio.sleep(0)  # an in-process store never yields on its own
            raise AssertionError("the trace never completed")

        async def completer() -> None:
            await asyncio.sleep(0.05)
            await store.complete("trace-1", CompletionState.CANCELLED)

        await asyncio.gather(*(writer(w) for w in range(8)), completer())
        trace = await store.load("trace-1")
        assert trace is not None and trace.completion is CompletionState.CANCELLED
        stored = [e.payload for e in trace.events[1:]]
        assert sorted(stored) == sorted(accepted)  # type: ignore[type-var]
        assert len(accepted) > 0

    # -- retention --------------------------------------------------------------------

    async def test_ttl_expires_idle_traces(self, make_store: StoreFactory) -> None:
        store = await make_store(ttl=0.4)
        await store.append(envelope("idle", step=1))
        await store.append(envelope("busy", step=1))
        for step in range(2, 5):  # writes refresh the TTL of every key of the trace
            await asyncio.sleep(0.15)
            await store.append(envelope("busy", step=step))
        await store.save_intervention("busy", Intervention(target_node="n", timestamp_ms=1))
        assert await store.load("idle") is None
        assert [s.trace_id async for s in store.iter_traces()] == ["busy"]
        await asyncio.sleep(0.4 + self.expiry_margin)
        assert await store.load("busy") is None
        assert [s async for s in store.iter_traces()] == []

    async def test_completed_ttl_applies_on_complete(self, make_store: StoreFactory) -> None:
        store = await make_store(completed_ttl=0.2)
        await store.append(envelope("open", step=1))
        await store.append(envelope("done", step=1))
        await store.complete("done", CompletionState.SUCCESS)
        await asyncio.sleep(0.2 + self.expiry_margin)
        assert await store.load("done") is None
        assert await store.load("open") is not None
        assert [s.trace_id async for s in store.iter_traces()] == ["open"]
        with pytest.raises(TraceNotFound):
            await store.save_intervention("done", Intervention(target_node="n", timestamp_ms=1))

    async def test_wire_json_round_trip(self, store: ManagedPersistenceStore) -> None:
        await store.append(envelope(step=1, payload={"Next": {"ok": True}}, node_id="n1"))
        await store.save_intervention("trace-1", Intervention(target_node="n1", timestamp_ms=5))
        await store.complete("trace-1", CompletionState.SUCCESS)
        trace = await store.load("trace-1")
        assert trace is not None
        assert PersistedTrace.model_validate_json(trace.model_dump_json()) == trace


def _absent() -> PersistedTrace:
    raise AssertionError("trace missing")


class HardeningConformance:
    """Bad input fails alone and writes nothing; listings are exact; batches are bounded.
    Mixed into `CheckpointConformance`."""

    async def test_a_bad_call_fails_alone_among_concurrent_ones(
        self, store: ManagedPersistenceStore
    ) -> None:
        bad = envelope(step=99).model_copy(update={"circuit": "\ud800"})  # not validated
        results = await asyncio.gather(
            *(store.append(envelope(step=s)) for s in range(10)),
            store.append(bad),
            return_exceptions=True,
        )
        assert results[:10] == [None] * 10, results
        assert isinstance(results[10], InvalidInput) and "circuit" in str(results[10])
        assert [e.step for e in (await store.load("trace-1") or _absent()).events] == list(
            range(10)
        )

    @pytest.mark.parametrize(
        "fields",
        [
            {"step": -1},
            {"step": 2**64},
            {"timestamp_ms": "now"},
            {"outcome_kind": ""},
            {"payload": {1: "int key"}},
            {"payload": {"a set": {1}}},
            {"payload": float("nan")},
            {"payload": b"bytes"},
            {"payload": ("a", "tuple")},
        ],
    )
    async def test_envelopes_from_model_construct_are_checked(
        self, store: ManagedPersistenceStore, fields: dict[str, Any]
    ) -> None:
        values = envelope(step=2).model_dump() | fields
        await store.append(envelope(step=1))
        with pytest.raises(InvalidEnvelope):
            await store.append(PersistenceEnvelope.model_construct(**values))
        assert steps(await store.load("trace-1")) == [(1, "Next")]  # still loadable

    async def test_append_many_takes_any_iterable_and_bounds_the_batch(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store(max_batch_bytes=4 * 1024)
        await store.append_many(envelope(step=s) for s in range(3))
        with pytest.raises(InvalidInput, match="max_batch_bytes"):
            await store.append_many([envelope_of_size(1000, "trace-1") for _ in range(5)])
        for bad in (None, 5, envelope(step=9)):
            with pytest.raises(InvalidInput, match="envelopes"):
                await store.append_many(bad)  # type: ignore[arg-type]
        assert [e.step for e in (await store.load("trace-1") or _absent()).events] == [0, 1, 2]

    @pytest.mark.parametrize(
        "options", [{"page": -1}, {"page": 0}, {"completed": "yes"}, {"circuit": 123}]
    )
    async def test_listing_arguments_are_checked(
        self, store: ManagedPersistenceStore, options: dict[str, Any]
    ) -> None:
        await store.append(envelope())
        with pytest.raises(InvalidInput):
            [s async for s in store.iter_traces(**options)]

    async def test_listing_in_small_pages_is_the_same_listing(
        self, store: ManagedPersistenceStore
    ) -> None:
        for n in range(23):
            await store.append(envelope(f"t{n}", step=n))
        whole = [s.trace_id async for s in store.iter_traces(page=100)]
        assert [s.trace_id async for s in store.iter_traces(page=3)] == whole
        assert sorted(whole) == sorted(f"t{n}" for n in range(23))

    async def test_idempotency_key_applies_a_write_once(
        self, store: ManagedPersistenceStore
    ) -> None:
        first = envelope(step=1, payload="once")
        await store.append(first, idempotency_key="k1")
        await store.append(first, idempotency_key="k1")  # the application's retry
        await store.append_many([envelope(step=2), envelope(step=3)], idempotency_key="k2")
        await store.append_many([envelope(step=2), envelope(step=3)], idempotency_key="k2")
        item = Intervention(target_node="n", timestamp_ms=1)
        await store.save_intervention("trace-1", item, idempotency_key="k3")
        await store.save_intervention("trace-1", item, idempotency_key="k3")
        await store.append(first, idempotency_key="k4")  # another key is another write
        trace = await store.load("trace-1")
        assert trace is not None and [e.step for e in trace.events] == [1, 1, 2, 3]
        assert trace.interventions == [item]

    async def test_a_closed_store_refuses_calls(self, make_store: StoreFactory) -> None:
        store = await make_store()
        await store.append(envelope(step=1))
        await store.aclose()
        for call in (store.append(envelope(step=2)), store.load("trace-1")):
            with pytest.raises(StoreClosed):
                await call
        with pytest.raises(StoreClosed):
            [s async for s in store.iter_traces()]

    async def test_iter_events_streams_in_append_order(
        self, store: ManagedPersistenceStore
    ) -> None:
        written = [envelope(step=s % 5, payload=s) for s in range(12)]
        await store.append_many(written)
        assert [e async for e in store.iter_events("trace-1")] == written
        assert [e async for e in store.iter_events("unknown")] == []


class CheckpointConformance(_Contract, HardeningConformance):
    """The PersistenceStore contract and this package's hardening. Subclasses provide the
    `make_store` fixture."""
