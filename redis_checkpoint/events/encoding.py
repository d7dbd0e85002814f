"""The forms times and projection fields take in Redis: times that Redis must compare are
integer microseconds. The stored form of events themselves is in `stored.py`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .models import ChildWorkflowStarted, EventBase, WorkflowReopened, WorkflowStarted

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
EXACT_MICROS = 2**53  # sorted-set scores are doubles: exact up to here (years 1685..2255)


def micros(at: datetime) -> int:
    """`at` as integer microseconds since the epoch."""
    return (at - EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + value * _MICROSECOND


def projection_fields(event: EventBase) -> tuple[str, str]:
    """What the append script needs to keep the projection: a kind and one extra field.

    Kinds: `Started` (extra: workflow type), `Reopened`, a terminal status name, `Child`
    (extra: the child's workflow id), or empty for events that change no projection.
    """
    if isinstance(event, WorkflowStarted):
        return "Started", event.workflow_type
    if isinstance(event, WorkflowReopened):
        return "Reopened", ""
    if event.sets_status is not None:
        return event.sets_status.value, ""
    if isinstance(event, ChildWorkflowStarted):
        return "Child", str(event.child_workflow_id)
    return "", ""
