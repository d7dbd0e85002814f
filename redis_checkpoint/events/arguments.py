"""Checking an event-store call's arguments: both event stores check them here, with the
shared validators (`..checks`), so bad input gets the same InvalidArgument everywhere and
nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from .encoding import EXACT_MICROS, micros
from .errors import TREE
from .models import EventBase, TimerId
from .protocol import WriteToken
from .stored import encode_event

check = TREE.check


def workflow_id(value: Any, field: str = "workflow_id") -> UUID:
    return check.instance(value, UUID, field)


def seq(value: Any, field: str) -> int:
    return check.integer(value, field, 0)


def limit(value: Any) -> int:
    return check.integer(value, "limit", 1)


def instant(value: Any, field: str) -> datetime:
    """A timezone-aware datetime whose microseconds a sorted-set score holds exactly."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TREE.invalid(f"{field} must be a timezone-aware datetime, got {value!r}")
    if not -EXACT_MICROS <= micros(value) <= EXACT_MICROS:
        raise TREE.invalid(f"{field} {value} is outside years 1685..2255")
    return value.astimezone(UTC)


def timer_id(value: Any) -> TimerId:
    return check.instance(value, TimerId, "timer_id")


def append(
    token: Any, workflow: Any, events: Sequence[Any], expected_seq: Any
) -> tuple[UUID, list[EventBase], int]:
    """The arguments of `append`, checked; InvalidArgument names the first bad one."""
    if not isinstance(token, WriteToken):
        raise TREE.invalid(f"append needs WriteToken.recorder() as its token, got {token!r}")
    wf = workflow_id(workflow)
    expected = seq(expected_seq, "expected_seq")
    batch = check.items(events, "events")
    for i, event in enumerate(batch):
        if not isinstance(event, EventBase):
            raise TREE.invalid(f"events[{i}] is not an Aion event: {event!r}")
        if event.envelope.workflow_id != wf:
            raise TREE.invalid(
                f"events[{i}] belongs to workflow {event.envelope.workflow_id}, not {wf}"
            )
    return wf, batch, expected


def stored(event: EventBase) -> bytes:
    """The event's stored bytes (`stored.encode_event`): what both stores keep. An event
    built with `model_construct` holding a value its annotation refuses is InvalidArgument."""
    try:
        return encode_event(event)
    except ValueError as exc:
        raise TREE.invalid(f"{type(event).__name__} cannot be stored: {exc}") from None


def contiguity_error(events: Sequence[EventBase], expected_seq: int) -> str | None:
    """Upstream's message if the seqs are not `expected_seq + 1, + 2, ...`, else None."""
    for i, event in enumerate(events, start=expected_seq + 1):
        if event.seq != i:
            return f"event sequence must be contiguous: expected {i}, got {event.seq}"
    return None
