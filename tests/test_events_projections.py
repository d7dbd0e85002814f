"""Projections and filters as pure functions (reference §3.7-3.9, §5.3-5.6)."""

from __future__ import annotations

import pytest

from redis_checkpoint.conformance.aion import (
    ATTRIBUTES,
    T,
    act,
    can,
    completed,
    failed_at,
    int_value,
    reopened,
    rid,
    started,
    visibility,
)
from redis_checkpoint.events import (
    BackendError,
    EventBase,
    ListWorkflowsFilter,
    SearchAttributePredicate,
    SearchAttributesUpdated,
    SearchAttributeValue,
    VisibilityRecord,
    WorkflowFilter,
    WorkflowStatus,
    WorkflowSummary,
    WorkflowTimedOut,
    current_lease_terminal,
    run_chain_from_history,
    run_segment,
    search_attributes_from_events,
    status_from_events,
)

WF = rid(1)
S = WorkflowStatus


def timed_out(seq: int) -> WorkflowTimedOut:
    return WorkflowTimedOut(envelope=started(seq, WF).envelope, timeout="run")


@pytest.mark.parametrize(
    ("history", "status"),
    [
        ([], S.RUNNING),
        ([act(1, WF, "a")], S.RUNNING),
        ([started(1, WF), completed(2, WF), timed_out(3)], S.TIMED_OUT),
        ([started(1, WF), can(2, WF), started(3, WF)], S.RUNNING),
        ([started(1, WF), failed_at(2, WF, 2), reopened(3, WF)], S.RUNNING),
        ([started(1, WF), reopened(2, WF), completed(3, WF)], S.COMPLETED),
        ([started(1, WF), can(2, WF), act(3, WF, "late")], S.CONTINUED_AS_NEW),
    ],
)
def test_status_from_events_last_lifecycle_event_wins(
    history: list[EventBase], status: WorkflowStatus
) -> None:
    assert status_from_events(history) is status


def test_current_lease_terminal_resets_on_start_and_reopen() -> None:
    failed = failed_at(2, WF, 2)
    assert current_lease_terminal([started(1, WF), failed, act(3, WF, "a")]) == failed
    assert current_lease_terminal([started(1, WF), failed, reopened(3, WF)]) is None
    assert current_lease_terminal([started(1, WF), can(2, WF), started(3, WF)]) is None
    assert current_lease_terminal([]) is None


def test_run_segment_is_one_run_of_the_history() -> None:
    history = [started(1, WF, run=rid(7)), can(2, WF), started(3, WF, run=rid(8)), act(4, WF, "a")]
    assert run_segment(history, rid(7)) == history[:2]
    assert run_segment(history, rid(8)) == history[2:]
    assert run_segment(history, rid(9)) == []


def test_summary_uses_the_last_start_and_visibility_the_first() -> None:
    history = [
        started(1, WF, "v1", run=rid(7), k=1),
        can(2, WF, parent=rid(7)),
        started(3, WF, "v2", run=rid(8), parent=rid(7), k=3),
        completed(4, WF),
    ]
    summary = WorkflowSummary.from_history(history)
    assert summary == WorkflowSummary(
        workflow_id=WF, workflow_type="v2", status=S.COMPLETED, started_at=T(3), ended_at=T(4)
    )
    row = VisibilityRecord.from_history(history)
    assert row is not None
    assert (row.workflow_type, row.run_id, row.start_time, row.close_time) == (
        "v1",
        rid(7),
        T(1),
        T(4),
    )
    assert VisibilityRecord.from_history(history, run_id=rid(8)).run_id == rid(8)  # type: ignore[union-attr]
    assert WorkflowSummary.from_history([act(1, WF, "a")]) is None


def test_search_attributes_fold_later_values_win() -> None:
    def update(seq: int, **values: SearchAttributeValue) -> SearchAttributesUpdated:
        return SearchAttributesUpdated(
            envelope=started(seq, WF).envelope, workflow_id=WF, attributes=values
        )

    folded = search_attributes_from_events(
        [update(1, a=int_value(1), b=int_value(2)), act(2, WF, "x"), update(3, a=int_value(5))]
    )
    assert folded == {"a": int_value(5), "b": int_value(2)}


@pytest.mark.parametrize(
    ("history", "error"),
    [
        ([started(1, WF, run=rid(1)), started(2, WF, run=rid(2))], "exactly one root, found 2"),
        (
            [started(1, WF, run=rid(1), parent=rid(2)), started(2, WF, run=rid(2), parent=rid(1))],
            "exactly one root, found 0",
        ),
        (
            [
                started(1, WF, run=rid(1)),
                started(2, WF, run=rid(2), parent=rid(1)),
                started(3, WF, run=rid(3), parent=rid(1)),
            ],
            "continued twice",
        ),
        (
            [
                started(1, WF, run=rid(1)),
                started(2, WF, run=rid(2), parent=rid(3)),
                started(3, WF, run=rid(3), parent=rid(2)),
            ],
            "unreachable",
        ),
        (
            [started(1, WF, run=rid(1)), started(2, WF, run=rid(1), parent=rid(1))],
            "cycle",
        ),
    ],
)
def test_malformed_run_chains_are_backend_errors(history: list[EventBase], error: str) -> None:
    with pytest.raises(BackendError, match=error):
        run_chain_from_history(history)


def test_run_chain_sorts_by_seq_and_ignores_events_before_the_first_start() -> None:
    history = [act(1, WF, "early"), started(2, WF, run=rid(1)), completed(3, WF)]
    [run] = run_chain_from_history(list(reversed(history)))
    assert (run.run_id, run.status, run.started_at, run.closed_at) == (
        rid(1),
        S.COMPLETED,
        T(2),
        T(3),
    )
    assert run_chain_from_history([act(1, WF, "a")]) == []


def test_workflow_filter_bounds_are_inclusive() -> None:
    summary = WorkflowSummary(
        workflow_id=WF, workflow_type="checkout", status=S.RUNNING, started_at=T(10), parent=rid(2)
    )
    assert WorkflowFilter().matches(summary)
    assert WorkflowFilter(started_after=T(10), started_before=T(10)).matches(summary)
    assert not WorkflowFilter(started_after=T(11)).matches(summary)
    assert not WorkflowFilter(started_before=T(9)).matches(summary)
    assert WorkflowFilter(parent=rid(2), workflow_type="checkout").matches(summary)
    assert not WorkflowFilter(parent=rid(3)).matches(summary)
    assert not WorkflowFilter(status=S.COMPLETED).matches(summary)


def test_predicates_follow_the_type_rules() -> None:
    def matches(predicate: SearchAttributePredicate) -> bool:
        return predicate.matches(ATTRIBUTES)

    P, of = SearchAttributePredicate, SearchAttributeValue.of
    assert matches(P.equals("tier", of("gold")))
    assert not matches(P.equals("count", of(3.0)))  # the type tag is part of the value
    assert matches(P.greater_than("count", of(2))) and matches(P.less_than("count", of(4)))
    assert not matches(P.greater_than("count", of(3)))
    assert matches(P.greater_than("score", of(0.25)))
    assert matches(P.less_than("seen", of(T(6))))
    assert not matches(P.greater_than("count", of(2.0)))  # mixed types never compare
    assert not matches(P.greater_than("tier", of("a")))  # String is not ordered
    assert not matches(P.greater_than("beta", of(False)))  # nor is Bool
    assert matches(P.contains("tags", "vip")) and not matches(P.contains("tags", "us"))
    assert not matches(P.contains("tier", "gold"))  # Contains needs a KeywordList
    for predicate in (P.equals("x", of(1)), P.less_than("x", of(1)), P.contains("x", "k")):
        assert not matches(predicate)  # a missing attribute never matches


def test_list_filter_matches_and_selects() -> None:
    running = visibility(rid(1), 1)
    closed = visibility(rid(2), 2, status=S.FAILED, close=4, attributes=ATTRIBUTES)
    assert ListWorkflowsFilter().matches(running)
    assert not ListWorkflowsFilter(closed_before=T(9)).matches(running)
    assert ListWorkflowsFilter(closed_after=T(4), closed_before=T(4)).matches(closed)
    vip = SearchAttributePredicate.contains("tags", "vip")
    assert ListWorkflowsFilter(search_attributes=[vip], limit=0).matches(closed)
    tie = visibility(rid(3), 2)
    assert ListWorkflowsFilter().select([running, tie, closed]) == [closed, tie, running]
    assert ListWorkflowsFilter(offset=1, limit=1).select([running, tie, closed]) == [tie]
