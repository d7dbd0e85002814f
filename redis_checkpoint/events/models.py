"""Aion's 29 events on Aion's exact JSON wire form, and the value types they carry
(re-exported from `values`). No I/O here.

Field names, field order and encodings follow the serde output of `aion-core` 0.6.2:
events are adjacently tagged (`{"type": "WorkflowStarted", "data": {...}}`), payload bytes
are arrays of integers, timer ids are `{"Named": ...}` / `{"Anonymous": ...}`, timestamps
are RFC 3339 in UTC with a `Z`. `parse_event` and `dump_event` read and write one event.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)

from ..models import U64
from .errors import SerializationError
from .values import (
    U32,
    ActivityError,
    ActivityErrorKind,
    ActivityId,
    Bytes,
    CatchUpPolicy,
    ContentType,
    CronSchedule,
    CronTrigger,
    Duration,
    IntervalSchedule,
    IntervalTrigger,
    Model,
    OverlapPolicy,
    PackageVersion,
    Payload,
    RunId,
    ScheduleConfig,
    ScheduleId,
    SearchAttributeType,
    SearchAttributeValue,
    TimerId,
    Timestamp,
    WorkflowError,
    WorkflowId,
    WorkflowStatus,
    rfc3339,
)


class EventEnvelope(Model):
    """Where an event sits: its 1-based `seq`, when it was recorded, and its workflow."""

    seq: U64
    recorded_at: Timestamp
    workflow_id: WorkflowId


class EventBase(Model):
    """Every event has its envelope first; `seq` and `recorded_at` read it."""

    envelope: EventEnvelope
    sets_status: ClassVar[WorkflowStatus | None] = None  # lifecycle events only

    @property
    def seq(self) -> int:
        return self.envelope.seq

    @property
    def recorded_at(self) -> datetime:
        return self.envelope.recorded_at


# -- lifecycle --


class WorkflowStarted(EventBase):
    sets_status = WorkflowStatus.RUNNING
    workflow_type: StrictStr
    input: Payload
    run_id: RunId
    parent_run_id: RunId | None = None  # set when this start continues a previous run
    package_version: PackageVersion


class WorkflowCompleted(EventBase):
    sets_status = WorkflowStatus.COMPLETED
    result: Payload


class WorkflowFailed(EventBase):
    sets_status = WorkflowStatus.FAILED
    error: WorkflowError


class WorkflowCancelled(EventBase):
    sets_status = WorkflowStatus.CANCELLED
    reason: StrictStr


class WorkflowTimedOut(EventBase):
    sets_status = WorkflowStatus.TIMED_OUT
    timeout: StrictStr


class WorkflowContinuedAsNew(EventBase):
    sets_status = WorkflowStatus.CONTINUED_AS_NEW
    input: Payload
    workflow_type: StrictStr | None = None  # override for the next run
    parent_run_id: RunId  # the run being continued, i.e. the one ending


class WorkflowReopened(EventBase):
    sets_status = WorkflowStatus.RUNNING
    run_id: RunId
    reopened: list[ActivityId]


class SearchAttributesUpdated(EventBase):
    workflow_id: WorkflowId
    attributes: dict[str, SearchAttributeValue]


# -- activities --


class ActivityScheduled(EventBase):
    activity_id: ActivityId
    activity_type: StrictStr
    input: Payload


class ActivityStarted(EventBase):
    activity_id: ActivityId


class ActivityCompleted(EventBase):
    activity_id: ActivityId
    result: Payload


class ActivityFailed(EventBase):
    activity_id: ActivityId
    error: ActivityError
    attempt: U32  # 1-based


class ActivityCancelled(EventBase):
    activity_id: ActivityId


# -- timers --


class TimerStarted(EventBase):
    timer_id: TimerId
    fire_at: Timestamp


class TimerFired(EventBase):
    timer_id: TimerId


class TimerCancelled(EventBase):
    timer_id: TimerId


class WithTimeoutOutcome(StrEnum):
    OPERATION_COMPLETED = "OperationCompleted"
    TIMED_OUT = "TimedOut"


class WithTimeoutCompleted(EventBase):
    timer_id: TimerId
    outcome: WithTimeoutOutcome
    result: Payload | None = None


# -- signals --


class SignalReceived(EventBase):
    name: StrictStr
    payload: Payload


class SignalSent(EventBase):
    target_workflow_id: WorkflowId
    name: StrictStr
    payload: Payload


# -- child workflows --


class ChildWorkflowStarted(EventBase):
    child_workflow_id: WorkflowId
    workflow_type: StrictStr
    input: Payload
    package_version: PackageVersion


class ChildWorkflowCompleted(EventBase):
    child_workflow_id: WorkflowId
    result: Payload


class ChildWorkflowFailed(EventBase):
    child_workflow_id: WorkflowId
    error: WorkflowError


class ChildWorkflowCancelled(EventBase):
    child_workflow_id: WorkflowId


# -- schedules --


class ScheduleCreated(EventBase):
    schedule_id: ScheduleId
    config: ScheduleConfig


class ScheduleUpdated(EventBase):
    schedule_id: ScheduleId
    config: ScheduleConfig


class SchedulePaused(EventBase):
    schedule_id: ScheduleId


class ScheduleResumed(EventBase):
    schedule_id: ScheduleId


class ScheduleDeleted(EventBase):
    schedule_id: ScheduleId


class ScheduleTriggered(EventBase):
    schedule_id: ScheduleId
    workflow_id: WorkflowId
    run_id: RunId


Event = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowTimedOut
    | WorkflowContinuedAsNew
    | WorkflowReopened
    | SearchAttributesUpdated
    | ActivityScheduled
    | ActivityStarted
    | ActivityCompleted
    | ActivityFailed
    | ActivityCancelled
    | TimerStarted
    | TimerFired
    | TimerCancelled
    | WithTimeoutCompleted
    | SignalReceived
    | SignalSent
    | ChildWorkflowStarted
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | ChildWorkflowCancelled
    | ScheduleCreated
    | ScheduleUpdated
    | SchedulePaused
    | ScheduleResumed
    | ScheduleDeleted
    | ScheduleTriggered
)
"""Any of the 29 event variants; the class name is the wire `type`."""

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.__name__: cls
    for cls in EventBase.__subclasses__()  # every variant, in declaration order
}


def dump_event(event: EventBase) -> str:
    """Aion's JSON for one event: `{"type": "<Variant>", "data": {...}}`."""
    return f'{{"type":"{type(event).__name__}","data":{event.model_dump_json()}}}'


def _tagged(cls: type[EventBase]) -> type[BaseModel]:
    """The wire form of one variant, `{"type": "<Variant>", "data": {...}}`, as a model."""
    tag: Any = Literal[cls.__name__]  # a Literal of a runtime value: mypy cannot check it
    return create_model(f"Tagged{cls.__name__}", type=(tag, ...), data=(cls, ...))


# One validator for every variant: pydantic reads the JSON and picks the variant by its
# `type` in one pass, without the intermediate dicts of json.loads.
_TAGGED: Any = Annotated[
    Union[tuple(_tagged(cls) for cls in EVENT_TYPES.values())],  # noqa: UP007 (built at run time)
    Field(discriminator="type"),
]
_WIRE: TypeAdapter[Any] = TypeAdapter(_TAGGED)


def parse_event(raw: str | bytes) -> Event:
    """Read one event from Aion's JSON.

    Raises:
        SerializationError: `raw` is not JSON, or not a valid Aion event.
    """
    try:
        event: Event = _WIRE.validate_json(raw).data
    except ValidationError as exc:
        raise SerializationError(f"not an Aion event: {exc}") from None
    return event


__all__ = [
    *EVENT_TYPES,
    "ActivityError",
    "ActivityErrorKind",
    "ActivityId",
    "Bytes",
    "CatchUpPolicy",
    "ContentType",
    "CronSchedule",
    "CronTrigger",
    "Duration",
    "EVENT_TYPES",
    "Event",
    "EventBase",
    "EventEnvelope",
    "IntervalSchedule",
    "IntervalTrigger",
    "OverlapPolicy",
    "PackageVersion",
    "Payload",
    "RunId",
    "ScheduleConfig",
    "ScheduleId",
    "SearchAttributeType",
    "SearchAttributeValue",
    "TimerId",
    "Timestamp",
    "WithTimeoutOutcome",
    "WorkflowError",
    "WorkflowId",
    "WorkflowStatus",
    "dump_event",
    "parse_event",
    "rfc3339",
]
