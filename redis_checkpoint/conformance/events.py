"""The event-store conformance suite: Aion's `run_event_store_suite`, ported case by case.

Cases keep their upstream names (`range_read::x` becomes `test_range_read__x`, see
`aion.UPSTREAM_CASES`) and fixtures (reference §7.2). After them come the expectations of
Aion's backend unit tests (§7.5) and this package's own additions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from .. import events as ev
from ..events import (
    BackendError,
    EventBase,
    InvalidArgument,
    Payload,
    SequenceConflict,
    TimerEntry,
    TimerId,
    WorkflowFilter,
    WorkflowStatus,
)
from .aion import (
    TOKEN,
    A,
    B,
    C,
    D,
    T,
    act,
    can,
    child_started,
    completed,
    every_event_kind,
    f4,
    failed_at,
    rec,
    reopened,
    rid,
    route,
    run_summary,
    signal,
    started,
    timer_started,
    timers,
    wid,
)

EventStoreFactory = Callable[..., Awaitable[Any]]


class EventStoreConformance:
    """Aion's EventStore and VisibilityStore contracts. Subclasses provide `make_store`:
    an async factory of fresh, empty stores; stores made within one test share data."""

    @pytest.fixture
    async def store(self, make_store: EventStoreFactory) -> Any:
        return await make_store()

    # -- reference §7.3, in upstream run order --

    async def test_append_and_read_history_round_trip(self, store: Any) -> None:
        wf = wid()
        assert await store.read_history(wf) == []
        events = [
            started(1, wf),
            act(2, wf, "reserve-inventory"),
            timer_started(3, wf, TimerId.anonymous(3), T(30)),
            signal(4, wf, "payment-authorized"),
        ]
        await store.append(TOKEN, wf, events, 0)
        assert await store.read_history(wf) == events

    async def test_range_read__middle_of_history_returns_ordered_suffix(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, f4(wf), 0)
        assert await store.read_history_from(wf, 3) == f4(wf)[2:]

    async def test_range_read__from_seq_one_matches_full_read(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, f4(wf), 0)
        assert await store.read_history_from(wf, 1) == await store.read_history(wf) == f4(wf)

    async def test_range_read__beyond_head_returns_empty_not_error(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, f4(wf), 0)
        assert await store.read_history_from(wf, 5) == []
        assert await store.read_history_from(wf, 104) == []

    async def test_range_read__unknown_workflow_matches_full_read_semantics(
        self, store: Any
    ) -> None:
        wf = wid()
        assert await store.read_history_from(wf, 1) == await store.read_history(wf) == []
        assert await store.read_history_from(wf, 5) == []

    async def test_range_read__single_event_history_boundaries(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        assert await store.read_history_from(wf, 1) == [started(1, wf)]
        assert await store.read_history_from(wf, 2) == []

    async def test_range_read__from_seq_at_head_returns_only_head_event(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, f4(wf), 0)
        assert await store.read_history_from(wf, 4) == [completed(4, wf)]

    async def test_multi_batch_append_advances_sequence(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        await store.append(TOKEN, wf, [act(2, wf, "charge-card"), completed(3, wf)], 1)
        history = [started(1, wf), act(2, wf, "charge-card"), completed(3, wf)]
        assert await store.read_history(wf) == history

    async def test_stale_expected_sequence_writes_nothing(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        with pytest.raises(SequenceConflict) as raised:
            await store.append(TOKEN, wf, [completed(2, wf)], 0)
        assert (raised.value.expected, raised.value.found) == (0, 1)
        assert await store.read_history(wf) == [started(1, wf)]

    async def test_list_active_reflects_projected_status(self, store: Any) -> None:
        assert await store.list_active() == []
        running, completing, continuing = wid(), wid(), wid()
        await store.append(TOKEN, running, [started(1, running, "checkout")], 0)
        await store.append(TOKEN, completing, [started(1, completing, "billing")], 0)
        await store.append(TOKEN, continuing, [started(1, continuing, "fulfillment")], 0)
        assert set(await store.list_active()) == {running, completing, continuing}
        await store.append(TOKEN, completing, [completed(2, completing)], 1)
        await store.append(TOKEN, continuing, [can(2, continuing)], 1)
        assert set(await store.list_active()) == {running}

    async def test_reopen_returns_failed_workflow_to_active(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        await store.append(TOKEN, wf, [failed_at(2, wf, 2)], 1)
        assert await store.list_active() == []
        await store.append(TOKEN, wf, [reopened(3, wf)], 2)
        assert await store.list_active() == [wf]
        running = await store.query(WorkflowFilter(status=WorkflowStatus.RUNNING))
        assert any(s.workflow_id == wf and s.status is WorkflowStatus.RUNNING for s in running)

    async def test_list_workflow_ids_includes_running_and_terminal_histories(
        self, store: Any
    ) -> None:
        a, b = wid(), wid()
        await store.append(TOKEN, a, [started(1, a, "checkout")], 0)
        await store.append(TOKEN, b, [started(1, b, "billing"), completed(2, b)], 0)
        assert set(await store.list_workflow_ids()) == {a, b}

    async def test_query_applies_all_filters(self, store: Any) -> None:
        a, b, c = wid(), wid(), wid()
        await store.append(TOKEN, a, [started(1, a, "checkout", k=1)], 0)
        await store.append(TOKEN, b, [started(1, b, "checkout", k=10), completed(2, b, k=11)], 0)
        await store.append(TOKEN, c, [started(1, c, "billing", k=20), failed_at(2, c, 21)], 0)
        assert {s.workflow_id for s in await store.query(WorkflowFilter())} == {a, b, c}
        exact = WorkflowFilter(
            workflow_type="checkout",
            status=WorkflowStatus.COMPLETED,
            started_after=T(10),
            started_before=T(10),
        )
        [found] = await store.query(exact)
        assert (found.workflow_id, found.workflow_type, found.status) == (
            b,
            "checkout",
            WorkflowStatus.COMPLETED,
        )
        assert (found.started_at, found.ended_at) == (T(10), T(11))
        assert await store.query(WorkflowFilter(parent=wid())) == []

    async def test_read_run_chain_orders_continuations(self, store: Any) -> None:
        wf = wid()
        assert await store.read_run_chain(wf) == []
        events = [
            started(1, wf, run=rid(101)),
            can(2, wf, parent=rid(101)),
            started(3, wf, "checkout-v2", run=rid(102), parent=rid(101)),
        ]
        await store.append(TOKEN, wf, events, 0)
        assert await store.read_run_chain(wf) == [
            run_summary(rid(101), None, WorkflowStatus.CONTINUED_AS_NEW, 1, 2),
            run_summary(rid(102), rid(101), WorkflowStatus.RUNNING, 3, None),
        ]

    async def test_read_run_chain_single_and_multi_continuations(self, store: Any) -> None:
        single, multi = wid(), wid()
        await store.append(TOKEN, single, [started(1, single, run=rid(1))], 0)
        assert await store.read_run_chain(single) == [
            run_summary(rid(1), None, WorkflowStatus.RUNNING, 1, None)
        ]
        events = [
            started(1, multi, run=rid(11)),
            can(2, multi, parent=rid(11)),
            started(3, multi, "checkout-v2", run=rid(12), parent=rid(11)),
            can(4, multi, parent=rid(12)),
            started(5, multi, "checkout-v3", run=rid(13), parent=rid(12)),
            completed(6, multi),
        ]
        await store.append(TOKEN, multi, events, 0)
        assert await store.read_run_chain(multi) == [
            run_summary(rid(11), None, WorkflowStatus.CONTINUED_AS_NEW, 1, 2),
            run_summary(rid(12), rid(11), WorkflowStatus.CONTINUED_AS_NEW, 3, 4),
            run_summary(rid(13), rid(12), WorkflowStatus.COMPLETED, 5, 6),
        ]

    async def test_expired_timers_include_due_boundary_and_exclude_future(self, store: Any) -> None:
        wf = wid()
        for n in (3, 2, 1):
            await store.schedule_timer(wf, TimerId.anonymous(n), T(10 * n))
        assert timers(await store.expired_timers(T(20))) == [
            TimerEntry(workflow_id=wf, timer_id=TimerId.anonymous(1), fire_at=T(10)),
            TimerEntry(workflow_id=wf, timer_id=TimerId.anonymous(2), fire_at=T(20)),
        ]

    async def test_rescheduling_same_timer_replaces_prior_fire_at(self, store: Any) -> None:
        wf = wid()
        await store.schedule_timer(wf, TimerId.anonymous(1), T(10))
        await store.schedule_timer(wf, TimerId.anonymous(1), T(30))
        assert await store.expired_timers(T(10)) == []
        assert await store.expired_timers(T(30)) == [
            TimerEntry(workflow_id=wf, timer_id=TimerId.anonymous(1), fire_at=T(30))
        ]

    async def test_package__put_and_list_packages_round_trip_in_deploy_order(
        self, store: Any
    ) -> None:
        checkout = rec("checkout", B, b"archive-b", 20)
        billing = rec("billing", A, b"archive-a", 10)
        await store.put_package(checkout)
        await store.put_package(billing)
        assert await store.list_packages() == [billing, checkout]

    async def test_package__put_package_replaces_existing_row(self, store: Any) -> None:
        await store.put_package(rec("checkout", C, b"first", 10))
        await store.put_package(rec("checkout", C, b"second", 30))
        assert await store.list_packages() == [rec("checkout", C, b"second", 30)]

    async def test_package__put_package_points_route_at_persisted_version(self, store: Any) -> None:
        await store.put_package(rec("checkout", A, b"v1", 10))
        await store.put_package(rec("checkout", B, b"v2", 20))
        assert await store.list_package_routes() == [route("checkout", B)]

    async def test_package__put_package_route_repoints_without_touching_archives(
        self, store: Any
    ) -> None:
        v1, v2 = rec("checkout", A, b"v1", 10), rec("checkout", B, b"v2", 20)
        await store.put_package(v1)
        await store.put_package(v2)
        await store.put_package_route("checkout", A)
        assert await store.list_package_routes() == [route("checkout", A)]
        assert await store.list_packages() == [v1, v2]

    async def test_package__delete_package_removes_only_target_and_is_idempotent(
        self, store: Any
    ) -> None:
        v2 = rec("checkout", B, b"v2", 20)
        await store.put_package(rec("checkout", A, b"v1", 10))
        await store.put_package(v2)
        await store.delete_package("checkout", A)
        assert await store.list_packages() == [v2]
        await store.delete_package("checkout", A)
        await store.delete_package("never-persisted", B)
        assert await store.list_packages() == [v2]

    async def test_package__routes_list_in_workflow_type_order(self, store: Any) -> None:
        await store.put_package_route("zeta", D)
        await store.put_package_route("alpha", D)
        assert await store.list_package_routes() == [route("alpha", D), route("zeta", D)]

    # -- reference §7.4 --

    async def test_concurrent_appends_on_same_expected_sequence_has_one_winner(
        self, make_store: EventStoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        wf = wid()
        batches = [[started(1, wf, "checkout")], [started(1, wf, "billing")]]
        results = await asyncio.gather(
            first.append(TOKEN, wf, batches[0], 0),
            second.append(TOKEN, wf, batches[1], 0),
            return_exceptions=True,
        )
        winners = [i for i, result in enumerate(results) if result is None]
        assert len(winners) == 1
        [loser] = [r for r in results if r is not None]
        assert isinstance(loser, SequenceConflict)
        assert (loser.expected, loser.found) == (0, 1)
        assert await first.read_history(wf) == batches[winners[0]]

    async def test_large_history_round_trip(self, store: Any) -> None:
        wf = wid()
        history: list[EventBase] = [started(1, wf, "large-history")]
        history += [act(seq, wf, f"activity-{seq}") for seq in range(2, 126)]
        for i in range(5):
            await store.append(TOKEN, wf, history[25 * i : 25 * i + 25], 25 * i)
        stored = await store.read_history(wf)
        assert [e.seq for e in stored] == list(range(1, 126))
        assert stored == history

    async def test_continued_as_new_query_returns_correct_status_and_ended_at(
        self, store: Any
    ) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf, k=10), can(2, wf, k=12)], 0)
        [summary] = await store.query(WorkflowFilter())
        assert (summary.workflow_id, summary.status, summary.ended_at) == (
            wf,
            WorkflowStatus.CONTINUED_AS_NEW,
            T(12),
        )
        only = await store.query(WorkflowFilter(status=WorkflowStatus.CONTINUED_AS_NEW))
        assert only == [summary]

    # -- reference §7.5: the backends' own unit tests --

    async def test_list_workflow_ids_sorted_by_id_text(self, store: Any) -> None:
        done, running = UUID(int=1), UUID(int=2)
        await store.append(TOKEN, running, [started(1, running)], 0)
        await store.append(TOKEN, done, [started(1, done), completed(2, done)], 0)
        assert await store.list_workflow_ids() == [done, running]
        assert await store.list_active() == [running]

    async def test_run_chain_projects_run_id_and_closed_at(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf, run=rid(7)), completed(2, wf)], 0)
        assert await store.read_run_chain(wf) == [
            run_summary(rid(7), None, WorkflowStatus.COMPLETED, 1, 2)
        ]

    async def test_malformed_run_chain_is_a_backend_error(self, store: Any) -> None:
        wf = wid()
        two_roots = [started(1, wf, run=rid(1)), started(2, wf, run=rid(2))]
        await store.append(TOKEN, wf, two_roots, 0)
        with pytest.raises(BackendError, match="exactly one root, found 2"):
            await store.read_run_chain(wf)

    async def test_non_contiguous_batch_is_a_backend_error_and_writes_nothing(
        self, store: Any
    ) -> None:
        wf = wid()
        with pytest.raises(BackendError, match="contiguous: expected 2, got 5"):
            await store.append(TOKEN, wf, [started(1, wf), completed(5, wf)], 0)
        assert await store.read_history(wf) == []
        assert await store.list_workflow_ids() == []
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        with pytest.raises(BackendError):
            await store.append(TOKEN, wf, [act(2, wf, "a"), act(4, wf, "b")], 1)
        assert await store.read_history(wf) == [started(1, wf)]

    async def test_stale_and_non_contiguous_reports_the_conflict_first(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        with pytest.raises(SequenceConflict) as raised:
            await store.append(TOKEN, wf, [act(7, wf, "a"), act(9, wf, "b")], 0)
        assert (raised.value.expected, raised.value.found) == (0, 1)

    async def test_expired_timers_in_fire_at_order(self, store: Any) -> None:
        wf, other = wid(), wid()
        await store.schedule_timer(other, TimerId.named("late"), T(20))
        await store.schedule_timer(wf, TimerId.named("early"), T(10))
        await store.schedule_timer(wf, TimerId.named("future"), T(21))
        assert await store.expired_timers(T(20)) == [
            TimerEntry(workflow_id=wf, timer_id=TimerId.named("early"), fire_at=T(10)),
            TimerEntry(workflow_id=other, timer_id=TimerId.named("late"), fire_at=T(20)),
        ]

    async def test_empty_batch_at_the_head_changes_nothing(self, store: Any) -> None:
        wf = wid()
        await store.append(TOKEN, wf, [], 0)
        assert await store.list_workflow_ids() == []
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        await store.append(TOKEN, wf, [], 1)
        assert await store.read_history(wf) == [started(1, wf)]
        with pytest.raises(SequenceConflict):
            await store.append(TOKEN, wf, [], 0)

    async def test_ahead_expected_sequence_writes_nothing(self, store: Any) -> None:
        wf = wid()
        with pytest.raises(SequenceConflict) as raised:
            await store.append(TOKEN, wf, [act(3, wf, "a")], 2)
        assert (raised.value.expected, raised.value.found) == (2, 0)
        assert await store.read_history(wf) == []
        assert await store.list_workflow_ids() == []

    # -- this package's additions --

    async def test_concurrent_loser_sees_the_winners_head(
        self, make_store: EventStoreFactory
    ) -> None:
        stores = [await make_store() for _ in range(4)]
        wf = wid()
        batches = [
            [started(1, wf, f"type-{n}"), *[act(s, wf, "a") for s in range(2, n + 2)]]
            for n in range(1, 5)
        ]
        results = await asyncio.gather(
            *(s.append(TOKEN, wf, b, 0) for s, b in zip(stores, batches, strict=True)),
            return_exceptions=True,
        )
        [winner] = [batch for batch, r in zip(batches, results, strict=True) if r is None]
        losers = [r for r in results if r is not None]
        assert losers == [SequenceConflict(0, len(winner))] * 3
        assert await stores[0].read_history(wf) == winner

    async def test_thousand_event_history_reads_back_in_pages(self, store: Any) -> None:
        wf = wid()
        history = [started(1, wf)] + [act(seq, wf, "step") for seq in range(2, 1001)]
        await store.append(TOKEN, wf, history[:400], 0)
        await store.append(TOKEN, wf, history[400:], 400)
        for size in (1, 7, 100, 999, 1000, 1001):  # edges of the page and of the history
            cursor, read = 1, []
            while batch := await store.read_history_from(wf, cursor, limit=size):
                assert len(batch) == min(size, 1001 - cursor)
                read += batch
                cursor = batch[-1].seq + 1
            assert read == history, f"batch size {size}"

    async def test_parent_filter_finds_children(self, store: Any) -> None:
        parent, child, stranger = wid(), wid(), wid()
        await store.append(TOKEN, parent, [started(1, parent), child_started(2, parent, child)], 0)
        await store.append(TOKEN, child, [started(1, child, "child")], 0)
        await store.append(TOKEN, stranger, [started(1, stranger)], 0)
        [found] = await store.query(WorkflowFilter(parent=parent))
        assert (found.workflow_id, found.parent, found.workflow_type) == (child, parent, "child")
        summaries = {s.workflow_id: s.parent for s in await store.query(WorkflowFilter())}
        assert summaries == {parent: None, child: parent, stranger: None}

    async def test_retire_timer_only_deletes_the_same_arming(self, store: Any) -> None:
        wf, timer = wid(), TimerId.named("reminder")
        await store.schedule_timer(wf, timer, T(10))
        await store.schedule_timer(wf, timer, T(15))  # re-armed after the T(10) fire
        assert await store.retire_timer(wf, timer, T(10)) is False
        assert [e.fire_at for e in await store.expired_timers(T(20))] == [T(15)]
        assert await store.retire_timer(wf, timer, T(15)) is True
        assert await store.expired_timers(T(20)) == []
        assert await store.retire_timer(wf, timer, T(15)) is False

    async def test_timers_are_keyed_per_workflow(self, store: Any) -> None:
        first, second, timer = wid(), wid(), TimerId.anonymous(1)
        await store.schedule_timer(first, timer, T(10))
        await store.schedule_timer(second, timer, T(10))
        due = await store.expired_timers(T(10))
        assert {e.workflow_id for e in due} == {first, second}

    async def test_bad_arguments_are_refused_and_write_nothing(self, store: Any) -> None:
        wf = wid()
        for token, workflow, events, expected in [
            (object(), wf, [started(1, wf)], 0),
            (TOKEN, str(wf), [started(1, wf)], 0),
            (TOKEN, wf, [started(1, wf).model_dump()], 0),
            (TOKEN, wf, [started(1, wf)], -1),
            (TOKEN, wf, [started(1, wf)], True),
            (TOKEN, wf, [started(1, wid())], 0),  # an event of another workflow
            (TOKEN, wf, None, 0),
        ]:
            with pytest.raises(InvalidArgument):
                await store.append(token, workflow, events, expected)
        with pytest.raises(InvalidArgument):
            await store.schedule_timer(wf, TimerId.anonymous(1), datetime(2030, 1, 1))
        with pytest.raises(InvalidArgument):
            await store.schedule_timer(wf, "timer:anonymous:1", T(1))
        assert await store.read_history(wf) == []
        assert await store.expired_timers(T(10**9)) == []

    async def test_events_from_model_construct_are_checked_and_fail_alone(self, store: Any) -> None:
        wf, other = wid(), wid()
        good = started(1, wf)
        bent = [  # what validation would refuse, built without it
            good.model_construct(**{**good.__dict__, "workflow_type": 7}),
            good.model_construct(**{**good.__dict__, "input": Payload.model_construct(bytes="x")}),
            good.model_construct(**{**good.__dict__, "run_id": str(good.run_id)}),
        ]
        for event in bent:
            with pytest.raises(InvalidArgument):
                await store.append(TOKEN, wf, [event], 0)
        results = await asyncio.gather(
            store.append(TOKEN, wf, [bent[0]], 0),
            store.append(TOKEN, other, [started(1, other)], 0),
            return_exceptions=True,
        )
        assert isinstance(results[0], InvalidArgument) and results[1] is None
        assert await store.read_history(wf) == []
        assert await store.read_history(other) == [started(1, other)]

    async def test_events_of_every_kind_round_trip(self, store: Any) -> None:
        wf = wid()
        samples = every_event_kind(wf)
        assert {type(e).__name__ for e in samples} == set(ev.EVENT_TYPES)
        await store.append(TOKEN, wf, samples, 0)
        assert await store.read_history(wf) == samples
