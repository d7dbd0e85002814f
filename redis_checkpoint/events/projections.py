"""Projections of a history: pure functions of its events, in seq order. No I/O here.

History is the single source of truth; status, close times and search attributes are
derived from it by these functions, which every backend shares (the Redis store keeps an
incremental copy of the same fold in its append script, and tests hold the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast
from uuid import UUID

from .models import (
    EventBase,
    SearchAttributesUpdated,
    SearchAttributeValue,
    WorkflowReopened,
    WorkflowStarted,
    WorkflowStatus,
)

RESETS = (WorkflowStarted, WorkflowReopened)
"""Events that reopen a workflow: a start (or continuation start) and a reopen."""


def status_from_events(events: Sequence[EventBase]) -> WorkflowStatus:
    """The last lifecycle event wins; a history without one is Running. Does not sort."""
    for event in reversed(events):
        if event.sets_status is not None:
            return event.sets_status
    return WorkflowStatus.RUNNING


def current_lease_terminal(events: Sequence[EventBase]) -> EventBase | None:
    """The terminal event that closed the current run, or None if it is open."""
    for event in reversed(events):
        if isinstance(event, RESETS):
            return None
        if event.sets_status is not None:
            return event
    return None


def run_segment(events: Sequence[EventBase], run_id: UUID) -> Sequence[EventBase]:
    """The events from `run_id`'s WorkflowStarted up to the next one; empty if absent."""
    for run in split_runs(events):
        if cast(WorkflowStarted, run[0]).run_id == run_id:
            return run
    return []


def split_runs(events: Sequence[EventBase]) -> list[Sequence[EventBase]]:
    """The history cut at every WorkflowStarted; events before the first are dropped."""
    starts = [i for i, e in enumerate(events) if isinstance(e, WorkflowStarted)]
    ends = [*starts[1:], len(events)]
    return [events[i:j] for i, j in zip(starts, ends, strict=False)]  # no starts: no runs


def search_attributes_from_events(events: Sequence[EventBase]) -> dict[str, SearchAttributeValue]:
    """Every SearchAttributesUpdated folded in order; later values win per key."""
    attributes: dict[str, SearchAttributeValue] = {}
    for event in events:
        if isinstance(event, SearchAttributesUpdated):
            attributes.update(event.attributes)
    return attributes
