"""Aion's conformance fixtures (reference §7.2), reproduced exactly, and the upstream cases.

`T(n)` is 2023-11-14T22:13:20Z + n seconds; `wid()` hands out workflow ids from one
process-global counter (UUID 1, 2, ...), so ids are unique across scenarios.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from ..events import (
    ActivityScheduled,
    EventBase,
    EventEnvelope,
    PackageRecord,
    PackageRouteRecord,
    Payload,
    RunSummary,
    SearchAttributeValue,
    SignalReceived,
    TimerEntry,
    TimerId,
    TimerStarted,
    VisibilityRecord,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowReopened,
    WorkflowStarted,
    WorkflowStatus,
    WriteToken,
)
from ..events import models as ev

UPSTREAM_CASES = (
    "append_and_read_history_round_trip",
    "range_read::middle_of_history_returns_ordered_suffix",
    "range_read::from_seq_one_matches_full_read",
    "range_read::beyond_head_returns_empty_not_error",
    "range_read::unknown_workflow_matches_full_read_semantics",
    "range_read::single_event_history_boundaries",
    "range_read::from_seq_at_head_returns_only_head_event",
    "multi_batch_append_advances_sequence",
    "stale_expected_sequence_writes_nothing",
    "list_active_reflects_projected_status",
    "reopen_returns_failed_workflow_to_active",
    "list_workflow_ids_includes_running_and_terminal_histories",
    "query_applies_all_filters",
    "read_run_chain_orders_continuations",
    "read_run_chain_single_and_multi_continuations",
    "expired_timers_include_due_boundary_and_exclude_future",
    "rescheduling_same_timer_replaces_prior_fire_at",
    "package::put_and_list_packages_round_trip_in_deploy_order",
    "package::put_package_replaces_existing_row",
    "package::put_package_points_route_at_persisted_version",
    "package::put_package_route_repoints_without_touching_archives",
    "package::delete_package_removes_only_target_and_is_idempotent",
    "package::routes_list_in_workflow_type_order",
    # added upstream after 0.6.x, valid against it (reference §7.4)
    "concurrent_appends_on_same_expected_sequence_has_one_winner",
    "large_history_round_trip",
    "continued_as_new_query_returns_correct_status_and_ended_at",
)


def pytest_name(case: str) -> str:
    """The pytest name of an upstream case."""
    return "test_" + case.replace("::", "__")


# -- fixtures of reference §7.2 --

TOKEN = WriteToken.recorder()
_ids = itertools.count(1)


def T(n: int) -> datetime:
    return datetime.fromtimestamp(1_700_000_000 + n, UTC)


def wid() -> UUID:
    """A fresh workflow id from a process-global counter: unique across scenarios."""
    return UUID(int=next(_ids))


def rid(n: int) -> UUID:
    return UUID(int=n)


def env(seq: int, wf: UUID, k: int | None = None) -> EventEnvelope:
    return EventEnvelope(seq=seq, recorded_at=T(seq if k is None else k), workflow_id=wf)


def payload(label: str) -> Payload:
    return Payload.from_json({"label": label})


def started(
    seq: int,
    wf: UUID,
    workflow_type: str = "checkout",
    *,
    run: UUID | None = None,
    parent: UUID | None = None,
    k: int | None = None,
) -> WorkflowStarted:
    """`started`, `started_with_run` (run=, parent=) and `started_at` (k=) in one."""
    return WorkflowStarted(
        envelope=env(seq, wf, k),
        workflow_type=workflow_type,
        input=payload("input"),
        run_id=rid(seq) if run is None else run,
        parent_run_id=parent,
        package_version="a" * 64,
    )


def completed(seq: int, wf: UUID, k: int | None = None) -> WorkflowCompleted:
    return WorkflowCompleted(envelope=env(seq, wf, k), result=payload("result"))


def failed_at(seq: int, wf: UUID, k: int) -> WorkflowFailed:
    return WorkflowFailed(envelope=env(seq, wf, k), error=WorkflowError(message="failed"))


def reopened(seq: int, wf: UUID) -> WorkflowReopened:
    return WorkflowReopened(envelope=env(seq, wf), run_id=rid(1), reopened=[2])


def can(
    seq: int, wf: UUID, parent: UUID | None = None, k: int | None = None
) -> WorkflowContinuedAsNew:
    """`can`, `can_with_parent` (parent=) and `can_at` (k=) in one."""
    return WorkflowContinuedAsNew(
        envelope=env(seq, wf, k),
        input=payload("continued-input"),
        workflow_type="continued-workflow",
        parent_run_id=rid(42) if parent is None else parent,
    )


def act(seq: int, wf: UUID, activity_type: str) -> ActivityScheduled:
    return ActivityScheduled(
        envelope=env(seq, wf),
        activity_id=seq,
        activity_type=activity_type,
        input=payload("activity-input"),
    )


def timer_started(seq: int, wf: UUID, timer: TimerId, fire_at: datetime) -> TimerStarted:
    return TimerStarted(envelope=env(seq, wf), timer_id=timer, fire_at=fire_at)


def signal(seq: int, wf: UUID, name: str) -> SignalReceived:
    return SignalReceived(envelope=env(seq, wf), name=name, payload=payload("signal"))


def f4(wf: UUID) -> list[EventBase]:
    """The 4-event range fixture F4."""
    return [
        started(1, wf),
        act(2, wf, "reserve-inventory"),
        signal(3, wf, "payment-authorized"),
        completed(4, wf),
    ]


def rec(workflow_type: str, content_hash: str, archive: bytes, k: int) -> PackageRecord:
    return PackageRecord(
        workflow_type=workflow_type, content_hash=content_hash, archive=archive, deployed_at=T(k)
    )


def route(workflow_type: str, content_hash: str) -> PackageRouteRecord:
    return PackageRouteRecord(workflow_type=workflow_type, content_hash=content_hash)


def timers(entries: list[TimerEntry]) -> list[TimerEntry]:
    """`expect_timer_entries`: compare order-insensitively."""
    return sorted(entries, key=TimerEntry.sort_key)


A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def run_summary(
    run: UUID, parent: UUID | None, status: WorkflowStatus, start: int, close: int | None
) -> RunSummary:
    return RunSummary(
        run_id=run,
        parent_run_id=parent,
        status=status,
        started_at=T(start),
        closed_at=None if close is None else T(close),
    )


def visibility(
    wf: UUID,
    k: int,
    *,
    workflow_type: str = "checkout",
    status: WorkflowStatus = WorkflowStatus.RUNNING,
    close: int | None = None,
    run: UUID | None = None,
    attributes: dict[str, SearchAttributeValue] | None = None,
) -> VisibilityRecord:
    return VisibilityRecord(
        workflow_id=wf,
        run_id=run or rid(1),
        workflow_type=workflow_type,
        status=status,
        start_time=T(k),
        close_time=None if close is None else T(close),
        search_attributes=attributes or {},
    )


def int_value(n: int) -> SearchAttributeValue:
    return SearchAttributeValue.of(n)


ATTRIBUTES = {
    "tier": SearchAttributeValue.of("gold"),
    "count": int_value(3),
    "tags": SearchAttributeValue.of(["vip", "eu"]),
    "score": SearchAttributeValue.of(0.5),
    "seen": SearchAttributeValue.of(T(5)),
    "beta": SearchAttributeValue.of(True),
}


def child_started(seq: int, wf: UUID, child: UUID) -> EventBase:
    return ev.ChildWorkflowStarted(
        envelope=env(seq, wf),
        child_workflow_id=child,
        workflow_type="child",
        input=payload("child-input"),
        package_version=A,
    )


def every_event_kind(wf: UUID) -> list[EventBase]:
    """One event of each of the 29 kinds, seqs 1..29, with every optional field set."""
    config = ev.ScheduleConfig(
        trigger=ev.IntervalTrigger(
            Interval=ev.IntervalSchedule(period=ev.Duration(secs=60, nanos=5))
        ),
        overlap_policy=ev.OverlapPolicy.BUFFER_ONE,
        workflow_type="report",
        input=payload("schedule"),
        search_attributes=ATTRIBUTES,
    )
    cron = ev.CronTrigger(Cron=ev.CronSchedule(expression="0 * * * *"))
    updated = config.model_copy(update={"trigger": cron})
    error = WorkflowError(message="boom", details=payload("details"))
    failure = ev.ActivityError(kind=ev.ActivityErrorKind.TERMINAL, message="no", details=None)
    named, schedule, signal = TimerId.named("deadline ⏰"), rid(77), payload("s")
    kinds: list[Callable[[EventEnvelope], EventBase]] = [
        lambda e: started(1, wf, "kinds", parent=rid(5)).model_copy(update={"envelope": e}),
        lambda e: WorkflowCompleted(envelope=e, result=payload("r")),
        lambda e: WorkflowFailed(envelope=e, error=error),
        lambda e: ev.WorkflowCancelled(envelope=e, reason="user"),
        lambda e: ev.WorkflowTimedOut(envelope=e, timeout="run 30s"),
        lambda e: WorkflowContinuedAsNew(envelope=e, input=payload("c"), parent_run_id=rid(1)),
        lambda e: WorkflowReopened(envelope=e, run_id=rid(1), reopened=[2, 3]),
        lambda e: ev.SearchAttributesUpdated(envelope=e, workflow_id=wf, attributes=ATTRIBUTES),
        lambda e: act(e.seq, wf, "charge").model_copy(update={"envelope": e}),
        lambda e: ev.ActivityStarted(envelope=e, activity_id=9),
        lambda e: ev.ActivityCompleted(envelope=e, activity_id=9, result=payload("ok")),
        lambda e: ev.ActivityFailed(envelope=e, activity_id=9, error=failure, attempt=2),
        lambda e: ev.ActivityCancelled(envelope=e, activity_id=9),
        lambda e: TimerStarted(envelope=e, timer_id=named, fire_at=T(99)),
        lambda e: ev.TimerFired(envelope=e, timer_id=named),
        lambda e: ev.TimerCancelled(envelope=e, timer_id=TimerId.anonymous(4)),
        lambda e: ev.WithTimeoutCompleted(
            envelope=e, timer_id=named, outcome=ev.WithTimeoutOutcome.TIMED_OUT, result=None
        ),
        lambda e: SignalReceived(envelope=e, name="go", payload=signal),
        lambda e: ev.SignalSent(
            envelope=e, target_workflow_id=rid(3), name="go", payload=payload("s")
        ),
        lambda e: child_started(e.seq, wf, rid(4)),
        lambda e: ev.ChildWorkflowCompleted(
            envelope=e, child_workflow_id=rid(4), result=payload("r")
        ),
        lambda e: ev.ChildWorkflowFailed(envelope=e, child_workflow_id=rid(4), error=error),
        lambda e: ev.ChildWorkflowCancelled(envelope=e, child_workflow_id=rid(4)),
        lambda e: ev.ScheduleCreated(envelope=e, schedule_id=schedule, config=config),
        lambda e: ev.ScheduleUpdated(envelope=e, schedule_id=schedule, config=updated),
        lambda e: ev.SchedulePaused(envelope=e, schedule_id=schedule),
        lambda e: ev.ScheduleResumed(envelope=e, schedule_id=schedule),
        lambda e: ev.ScheduleDeleted(envelope=e, schedule_id=schedule),
        lambda e: ev.ScheduleTriggered(
            envelope=e, schedule_id=schedule, workflow_id=wf, run_id=rid(8)
        ),
    ]
    return [make(env(seq, wf)) for seq, make in enumerate(kinds, start=1)]
