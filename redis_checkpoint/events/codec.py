"""Checking a store call's arguments, and the forms events and times take in Redis.

Both stores check arguments here, so bad input gets the same InvalidArgument everywhere and
nothing is written. Events are kept as Aion's JSON (`dump_event`), so a stored history is
readable by any Aion tool; times that Redis must compare are integer microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from .errors import InvalidArgument
from .models import (
    ChildWorkflowStarted,
    EventBase,
    TimerId,
    WorkflowReopened,
    WorkflowStarted,
)
from .protocol import WriteToken

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
EXACT_MICROS = 2**53  # sorted-set scores are doubles: exact up to here (years 1685..2255)


def micros(at: datetime) -> int:
    """`at` as integer microseconds since the epoch."""
    return (at - EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + value * _MICROSECOND


def as_workflow_id(value: Any, field: str = "workflow_id") -> UUID:
    if not isinstance(value, UUID):
        raise InvalidArgument(f"{field} must be a uuid.UUID, got {value!r}")
    return value


def as_seq(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise InvalidArgument(f"{field} must be an integer in 0..2**64-1, got {value!r}")
    return value


def as_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"limit must be a positive integer, got {value!r}")
    return value


def as_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string, got {value!r}")
    return value


def as_instant(value: Any, field: str) -> datetime:
    """A timezone-aware datetime whose microseconds a sorted-set score holds exactly."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgument(f"{field} must be a timezone-aware datetime, got {value!r}")
    if not -EXACT_MICROS <= micros(value) <= EXACT_MICROS:
        raise InvalidArgument(f"{field} {value} is outside years 1685..2255")
    return value.astimezone(UTC)


def as_timer_id(value: Any) -> TimerId:
    if not isinstance(value, TimerId):
        raise InvalidArgument(f"timer_id must be a TimerId, got {value!r}")
    return value


def check_instance(value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise InvalidArgument(f"expected a {kind.__name__}, got {value!r}")


def check_append(
    token: Any, workflow_id: Any, events: Sequence[Any], expected_seq: Any
) -> tuple[UUID, list[EventBase], int]:
    """The arguments of `append`, checked; InvalidArgument names the first bad one."""
    if not isinstance(token, WriteToken):
        raise InvalidArgument(f"append needs WriteToken.recorder() as its token, got {token!r}")
    wf = as_workflow_id(workflow_id)
    expected = as_seq(expected_seq, "expected_seq")
    batch = list(events)
    for i, event in enumerate(batch):
        if not isinstance(event, EventBase):
            raise InvalidArgument(f"events[{i}] is not an Aion event: {event!r}")
    return wf, batch, expected


def contiguity_error(events: Sequence[EventBase], expected_seq: int) -> str | None:
    """Upstream's message if the seqs are not `expected_seq + 1, + 2, ...`, else None."""
    for i, event in enumerate(events, start=expected_seq + 1):
        if event.seq != i:
            return f"event sequence must be contiguous: expected {i}, got {event.seq}"
    return None


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
