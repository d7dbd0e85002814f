"""Aion's core value types on their exact JSON wire form: ids, timestamps, payloads, timer
ids, statuses, errors, search-attribute values and schedule configs. No I/O here.

Timestamps are timezone-aware UTC datetimes, written as chrono writes them (RFC 3339, `Z`,
no fraction or 3 or 6 digits). Python keeps microseconds, so that is the canonical
precision: reading Aion JSON with nanoseconds drops the last three digits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from ..models import U64

U32 = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]
I64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


def rfc3339(value: datetime) -> str:
    """chrono's AutoSi form: no fraction, or 3 or 6 digits as needed, and a `Z`."""
    value = value.astimezone(UTC)
    text = value.replace(tzinfo=None, microsecond=0).isoformat()
    micros = value.microsecond
    if micros:
        text += f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
    return text + "Z"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[
    AwareDatetime, AfterValidator(_utc), PlainSerializer(rfc3339, when_used="json")
]
"""A timezone-aware instant, held in UTC; naive datetimes are refused."""

WorkflowId = UUID
RunId = UUID
ScheduleId = UUID
ActivityId = U64
"""An activity's id: the sequence position that scheduled it (`activity:{n}`)."""
PackageVersion = StrictStr


def _bytes_from_ints(value: Any) -> Any:
    if isinstance(value, list):
        try:
            return bytes(value)
        except (TypeError, ValueError):
            raise ValueError("bytes must be an array of integers 0..255") from None
    return value


Bytes = Annotated[bytes, BeforeValidator(_bytes_from_ints), PlainSerializer(list, when_used="json")]
"""Raw bytes; serde's JSON form is an array of integers, not base64."""


class Model(BaseModel):
    """Base of every Aion value: validated on assignment, no NaN or infinities."""

    model_config = ConfigDict(validate_assignment=True, allow_inf_nan=False)


class ContentType(StrEnum):
    JSON = "Json"


class Payload(Model):
    """An opaque payload; nothing is validated at construction (`to_json` checks on read)."""

    content_type: ContentType = ContentType.JSON
    bytes: Bytes

    @classmethod
    def from_json(cls, value: Any) -> Payload:
        """A `Json` payload holding `value` as compact JSON."""
        return cls(bytes=json.dumps(value, separators=(",", ":"), allow_nan=False).encode())

    def to_json(self) -> Any:
        """The decoded JSON value; ValueError if the bytes are not JSON."""
        return json.loads(self.bytes)


class WorkflowStatus(StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"
    CONTINUED_AS_NEW = "ContinuedAsNew"

    @property
    def is_terminal(self) -> bool:
        return self is not WorkflowStatus.RUNNING


class TimerId(BaseModel):
    """A timer's id within its workflow: `Named(name)` or `Anonymous(n)`.

    JSON form `{"Named": "reminder"}` / `{"Anonymous": 3}`; text form `timer:named:reminder`.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["Named", "Anonymous"]
    value: Annotated[StrictStr, Field(min_length=1)] | U64

    @classmethod
    def named(cls, name: str) -> TimerId:
        return cls(kind="Named", value=name)

    @classmethod
    def anonymous(cls, n: int) -> TimerId:
        return cls(kind="Anonymous", value=n)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1 and "kind" not in data:
            [(kind, value)] = data.items()
            return {"kind": kind, "value": value}
        return data

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Self:
        if isinstance(self.value, str) != (self.kind == "Named"):
            raise ValueError(f"a {self.kind} timer id cannot hold {self.value!r}")
        return self

    @model_serializer
    def _to_wire(self) -> dict[str, str | int]:
        return {self.kind: self.value}

    def __str__(self) -> str:
        return f"timer:{self.kind.lower()}:{self.value}"


class WorkflowError(Model):
    message: StrictStr
    details: Payload | None = None


class ActivityErrorKind(StrEnum):
    RETRYABLE = "Retryable"
    TERMINAL = "Terminal"


class ActivityError(Model):
    kind: ActivityErrorKind
    message: StrictStr
    details: Payload | None = None


class SearchAttributeType(StrEnum):
    STRING = "String"
    INT = "Int"
    FLOAT = "Float"
    BOOL = "Bool"
    DATETIME = "Datetime"
    KEYWORD_LIST = "KeywordList"


_ATTRIBUTE_DATA: dict[str, TypeAdapter[Any]] = {
    "String": TypeAdapter(StrictStr),
    "Int": TypeAdapter(I64),
    "Float": TypeAdapter(StrictFloat | StrictInt),
    "Bool": TypeAdapter(StrictBool),
    "Datetime": TypeAdapter(Timestamp),
    "KeywordList": TypeAdapter(list[StrictStr]),
}


_ATTRIBUTE_TYPES: list[tuple[SearchAttributeType, type]] = [  # bool before int: a bool is an int
    (SearchAttributeType.BOOL, bool),
    (SearchAttributeType.INT, int),
    (SearchAttributeType.FLOAT, float),
    (SearchAttributeType.STRING, str),
    (SearchAttributeType.DATETIME, datetime),
    (SearchAttributeType.KEYWORD_LIST, list),
]


class SearchAttributeValue(BaseModel):
    """A typed search-attribute value, adjacently tagged: `{"type": "Int", "data": 3}`."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    type: SearchAttributeType
    data: Any

    @classmethod
    def of(cls, data: str | int | float | bool | datetime | list[str]) -> SearchAttributeValue:
        """The value tagged by its Python type: str is String, list is KeywordList, ..."""
        for kind, python_type in _ATTRIBUTE_TYPES:
            if isinstance(data, python_type):
                return cls(type=kind, data=data)
        raise TypeError(f"no search-attribute type holds {data!r}")

    @model_validator(mode="after")
    def _data_fits_type(self) -> Self:
        data = _ATTRIBUTE_DATA[self.type].validate_python(self.data)
        if self.type is SearchAttributeType.FLOAT:
            data = float(data)
        object.__setattr__(self, "data", data)
        return self

    @model_serializer(mode="wrap")
    def _to_wire(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        if info.mode_is_json() and isinstance(self.data, datetime):
            return {"type": self.type.value, "data": rfc3339(self.data)}
        return handler(self)


class CronSchedule(Model):
    expression: StrictStr


class CronTrigger(Model):
    Cron: CronSchedule


class Duration(Model):
    secs: U64
    nanos: U32


class IntervalSchedule(Model):
    period: Duration


class IntervalTrigger(Model):
    Interval: IntervalSchedule


class OverlapPolicy(StrEnum):
    SKIP = "Skip"
    BUFFER_ONE = "BufferOne"
    CANCEL_PREVIOUS = "CancelPrevious"
    ALLOW_ALL = "AllowAll"


class CatchUpPolicy(StrEnum):
    ALL = "All"
    ONE = "One"
    SKIP = "Skip"


class ScheduleConfig(Model):
    trigger: CronTrigger | IntervalTrigger
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catch_up_policy: CatchUpPolicy = CatchUpPolicy.ONE
    workflow_type: StrictStr
    input: Payload
    search_attributes: dict[str, SearchAttributeValue] = Field(default_factory=dict)
