"""The stored form of events: compact msgpack, checked on the way in, trusted on the way out.

A decoded event must be indistinguishable from the validated one it was encoded from; the
guard tests pin what trusted construction relies on, so a pydantic upgrade that changes it
fails here rather than in a store.
"""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import msgpack
import pytest
from pydantic import BaseModel, ValidationError

from redis_checkpoint import PersistenceEnvelope
from redis_checkpoint.codec import trusted
from redis_checkpoint.conformance.aion import ATTRIBUTES, T, every_event_kind, payload, rid
from redis_checkpoint.events import models as ev
from redis_checkpoint.events.models import (
    EventBase,
    EventEnvelope,
    Payload,
    SearchAttributeValue,
    TimerId,
    dump_event,
    parse_event,
)
from redis_checkpoint.events.stored import EVENT_CODES, decode_event, encode_event

E = TypeVar("E", bound=EventBase)
WF = rid(1)
EMPTY = Payload(bytes=b"")
BIG = Payload(bytes=bytes(range(256)) * 4096)  # 1 MiB, every byte value
MS, US = timedelta(milliseconds=250), timedelta(microseconds=123456)
TIMES = [
    T(1),  # no fraction
    T(1) + MS,  # 3 digits
    T(1) + US,  # 6 digits
    datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),  # before the epoch
    datetime(1, 1, 1, tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC),
]
EDGE_ATTRIBUTES = {
    "empty": SearchAttributeValue.of(""),
    "low": SearchAttributeValue.of(-(2**63)),
    "high": SearchAttributeValue.of(2**63 - 1),
    "whole": SearchAttributeValue(
        type=ev.SearchAttributeType.FLOAT, data=3
    ),  # validation makes it 3.0
    "tiny": SearchAttributeValue.of(-1e-300),
    "no": SearchAttributeValue.of(False),
    "when": SearchAttributeValue.of(T(5) + US),
    "none": SearchAttributeValue.of([]),
}


def at(seq: int = 2, when: datetime = TIMES[0]) -> EventEnvelope:
    return EventEnvelope(seq=seq, recorded_at=when, workflow_id=WF)


def variants() -> list[EventBase]:
    """Beyond `every_event_kind`: optional fields unset and set, extremes, both trigger
    kinds, every search-attribute type, both timer-id kinds, big and empty payloads."""
    cron = ev.CronTrigger(Cron=ev.CronSchedule(expression="* * * * *"))
    interval = ev.IntervalTrigger(
        Interval=ev.IntervalSchedule(period=ev.Duration(secs=2**64 - 1, nanos=999_999_999))
    )
    bare = ev.ScheduleConfig(trigger=cron, workflow_type="r", input=EMPTY)
    full = ev.ScheduleConfig(
        trigger=interval,
        overlap_policy=ev.OverlapPolicy.ALLOW_ALL,
        catch_up_policy=ev.CatchUpPolicy.ALL,
        workflow_type="r",
        input=BIG,
        search_attributes={**ATTRIBUTES, **EDGE_ATTRIBUTES},
    )
    retry = ev.ActivityError(kind=ev.ActivityErrorKind.RETRYABLE, message="", details=EMPTY)
    started = ev.WorkflowStarted(
        envelope=at(1), workflow_type="t", input=EMPTY, run_id=rid(2), package_version=""
    )
    return [
        started,  # parent_run_id unset
        started.model_copy(update={"envelope": at(2**64 - 1), "parent_run_id": rid(2**128 - 1)}),
        ev.WorkflowFailed(envelope=at(), error=ev.WorkflowError(message="x")),
        ev.WorkflowContinuedAsNew(
            envelope=at(), input=BIG, workflow_type="next", parent_run_id=rid(0)
        ),
        ev.WorkflowReopened(envelope=at(), run_id=rid(2), reopened=[]),
        ev.WorkflowReopened(envelope=at(), run_id=rid(2), reopened=[0, 2**64 - 1]),
        ev.SearchAttributesUpdated(envelope=at(), workflow_id=rid(0), attributes={}),
        ev.SearchAttributesUpdated(envelope=at(), workflow_id=WF, attributes=EDGE_ATTRIBUTES),
        ev.ActivityScheduled(envelope=at(), activity_id=2**64 - 1, activity_type="", input=BIG),
        ev.ActivityFailed(envelope=at(), activity_id=0, error=retry, attempt=2**32 - 1),
        ev.TimerStarted(envelope=at(), timer_id=TimerId.anonymous(0), fire_at=TIMES[4]),
        ev.TimerFired(envelope=at(), timer_id=TimerId.anonymous(2**64 - 1)),
        ev.WithTimeoutCompleted(
            envelope=at(),
            timer_id=TimerId.named("t"),
            outcome=ev.WithTimeoutOutcome.OPERATION_COMPLETED,
            result=payload("r"),
        ),
        ev.ScheduleCreated(envelope=at(), schedule_id=rid(5), config=bare),
        ev.ScheduleUpdated(envelope=at(), schedule_id=rid(5), config=full),
        *(ev.SignalReceived(envelope=at(when=when), name="n", payload=EMPTY) for when in TIMES),
    ]


CASES = every_event_kind(WF) + variants()


def decoded(event: E) -> E:
    got = decode_event(encode_event(event), event.seq, event.envelope.workflow_id)
    assert type(got) is type(event)
    return got


def state(value: Any) -> Any:
    """What an instance holds, recursively: classes, pydantic's slots, keys in order, types."""
    if isinstance(value, BaseModel):
        slots = [getattr(value, name) for name in BaseModel.__slots__[1:]]
        return type(value), slots, [(key, state(v)) for key, v in value.__dict__.items()]
    if isinstance(value, list):
        return [state(v) for v in value]
    if isinstance(value, dict):
        return [(key, state(v)) for key, v in value.items()]
    return type(value), getattr(value, "tzinfo", None)


@pytest.mark.parametrize("event", CASES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: EventBase) -> None:
    got = decoded(event)
    assert type(got) is type(event) and got == event
    assert dump_event(got) == dump_event(event)
    assert got.model_dump() == event.model_dump()
    assert got.model_dump_json() == event.model_dump_json()
    assert got.envelope.workflow_id is event.envelope.workflow_id  # the caller's, reused
    assert state(got) == state(parse_event(dump_event(event)))  # as validation leaves it


def test_event_codes_are_pinned() -> None:
    assert {cls.__name__: code for code, cls in enumerate(EVENT_CODES)} == {
        "WorkflowStarted": 0,
        "WorkflowCompleted": 1,
        "WorkflowFailed": 2,
        "WorkflowCancelled": 3,
        "WorkflowTimedOut": 4,
        "WorkflowContinuedAsNew": 5,
        "WorkflowReopened": 6,
        "SearchAttributesUpdated": 7,
        "ActivityScheduled": 8,
        "ActivityStarted": 9,
        "ActivityCompleted": 10,
        "ActivityFailed": 11,
        "ActivityCancelled": 12,
        "TimerStarted": 13,
        "TimerFired": 14,
        "TimerCancelled": 15,
        "WithTimeoutCompleted": 16,
        "SignalReceived": 17,
        "SignalSent": 18,
        "ChildWorkflowStarted": 19,
        "ChildWorkflowCompleted": 20,
        "ChildWorkflowFailed": 21,
        "ChildWorkflowCancelled": 22,
        "ScheduleCreated": 23,
        "ScheduleUpdated": 24,
        "SchedulePaused": 25,
        "ScheduleResumed": 26,
        "ScheduleDeleted": 27,
        "ScheduleTriggered": 28,
    }
    for event in every_event_kind(WF):
        assert msgpack.unpackb(encode_event(event))[0] == EVENT_CODES.index(type(event))


def test_stored_forms_are_pinned() -> None:
    """Stored histories outlive the code: a field moved or added in a model changes the
    form, and needs a new code (or a migration), not a silent change."""
    kinds = {type(e).__name__: e for e in every_event_kind(WF)}
    micros = 1_700_000_000_000_000
    forms = {name: msgpack.unpackb(encode_event(kinds[name])) for name in kinds}
    label = b'{"label":"activity-input"}'
    assert forms["ActivityScheduled"] == [8, micros + 9_000_000, 9, "charge", ["Json", label]]
    assert forms["WorkflowStarted"][2:] == [
        "kinds",
        ["Json", b'{"label":"input"}'],
        rid(1).bytes,
        rid(5).bytes,
        "a" * 64,
    ]
    assert forms["ActivityFailed"][2:] == [9, ["Terminal", "no", None], 2]
    assert forms["TimerStarted"][2:] == [["Named", "deadline ⏰"], micros + 99_000_000]
    assert forms["TimerCancelled"][2:] == [["Anonymous", 4]]
    assert forms["WithTimeoutCompleted"][2:] == [["Named", "deadline ⏰"], "TimedOut", None]
    config = forms["ScheduleCreated"][3]
    assert config[:5] == [
        [1, [[[60, 5]]]],
        "BufferOne",
        "One",
        "report",
        ["Json", b'{"label":"schedule"}'],
    ]
    assert config[5] == {
        "tier": ["String", "gold"],
        "count": ["Int", 3],
        "tags": ["KeywordList", ["vip", "eu"]],
        "score": ["Float", 0.5],
        "seen": ["Datetime", micros + 5_000_000],
        "beta": ["Bool", True],
    }
    assert forms["ScheduleUpdated"][3][0] == [0, [["0 * * * *"]]]


def test_the_stored_form_is_compact() -> None:
    data = bytes(range(256)) * 4  # 1,024 bytes
    event = ev.ActivityScheduled(
        envelope=at(2**32),
        activity_id=2**32,
        activity_type="charge-card",
        input=Payload(bytes=data),
    )
    blob = encode_event(event)
    assert len(blob) < 1024 + 120 and data in blob  # raw bin, not an array of integers
    assert len(blob) * 3 < len(dump_event(event))


def test_nan_is_stored_where_validation_allows_it() -> None:
    nan = SearchAttributeValue(type=ev.SearchAttributeType.FLOAT, data=float("nan"))
    event = ev.SearchAttributesUpdated(envelope=at(), workflow_id=WF, attributes={"x": nan})
    assert dump_event(decoded(event)) == dump_event(event)


# -- what trusted construction relies on --

MODELS: list[type[BaseModel]] = [
    *EVENT_CODES,
    EventEnvelope,
    Payload,
    ev.WorkflowError,
    ev.ActivityError,
    TimerId,
    SearchAttributeValue,
    ev.ScheduleConfig,
    ev.CronTrigger,
    ev.CronSchedule,
    ev.IntervalTrigger,
    ev.IntervalSchedule,
    ev.Duration,
]


def test_pydantic_keeps_an_instance_in_the_four_slots_trusted_sets() -> None:
    assert BaseModel.__slots__ == (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
    models: list[type[BaseModel]] = [*MODELS, PersistenceEnvelope]
    for model in models:
        assert all("__slots__" not in vars(cls) for cls in model.__mro__[:-2]), model
        assert model.__new__ is object.__new__


def test_trusted_leaves_what_model_construct_leaves() -> None:
    instances: list[BaseModel] = []

    def collect(value: Any) -> None:
        if isinstance(value, BaseModel):
            instances.append(value)
            value = value.__dict__
        for item in value.values() if isinstance(value, dict) else []:
            collect(item)

    for event in CASES:
        collect(event)
    assert {type(i) for i in instances} == set(MODELS)
    envelope = PersistenceEnvelope(
        trace_id="t", circuit="c", schematic_version="1", step=1, outcome_kind="k", timestamp_ms=0
    )
    for instance in [*instances, envelope]:
        model, values = type(instance), dict(instance.__dict__)
        built = trusted(model, dict(values), model.model_construct().__pydantic_private__)
        assert state(built) == state(model.model_construct(**values))


def test_trusted_refuses_a_model_with_its_own_new() -> None:
    class Odd(BaseModel):
        x: int

        def __new__(cls, *args: Any, **kwargs: Any) -> Odd:
            return super().__new__(cls)

    with pytest.raises(TypeError, match="__new__"):
        trusted(Odd, {"x": 1})


def test_decoded_events_validate_assignment_as_validated_ones_do() -> None:
    event = ev.ActivityScheduled(envelope=at(), activity_id=1, activity_type="a", input=BIG)
    got, other = decoded(event), decoded(event)
    got.activity_id = 7
    got.input.bytes = b"new"
    with pytest.raises(ValidationError):
        got.activity_id = -1
    with pytest.raises(ValidationError):
        got.input.bytes = 5  # type: ignore[assignment]
    with pytest.raises(ValidationError):
        got.envelope.recorded_at = datetime(2020, 1, 1)  # naive
    assert (got.activity_id, got.input.bytes) == (7, b"new")
    assert other == event and decoded(event) == event  # other instances untouched
    assert got.__pydantic_fields_set__ == set(ev.ActivityScheduled.model_fields)
    moved = got.model_copy(update={"activity_id": 9})
    assert moved.activity_id == 9 and got.activity_id == 7
    assert decoded(got) == got
    assert pickle.loads(pickle.dumps(got)) == got and copy.deepcopy(got) == got


def test_decoded_frozen_models_hash_and_compare() -> None:
    named = TimerId.named("deadline ⏰")
    timer = decoded(ev.TimerFired(envelope=at(), timer_id=named)).timer_id
    assert timer == named and hash(timer) == hash(named)
    assert len({timer, named, TimerId.anonymous(4)}) == 2
    with pytest.raises(ValidationError):
        timer.value = "other"
    event = ev.SearchAttributesUpdated(envelope=at(), workflow_id=WF, attributes=ATTRIBUTES)
    attributes = decoded(event).attributes
    for name in ("tier", "count", "score", "seen", "beta"):  # a list does not hash
        assert hash(attributes[name]) == hash(ATTRIBUTES[name])
    with pytest.raises(ValidationError):
        attributes["count"].data = 4


@pytest.mark.parametrize("n", [0, 1, 2**128 - 1, 0x2A5F1C3E9B7D4E60A1F2B3C4D5E6F708])
def test_decoded_uuids_are_uuids(n: int) -> None:
    assert UUID.__slots__ == ("int", "is_safe", "__weakref__")  # what decoding sets
    want = UUID(int=n)
    got = decoded(ev.ScheduleDeleted(envelope=at(), schedule_id=want)).schedule_id
    assert type(got) is UUID and got == want and hash(got) == hash(want)
    assert (str(got), got.bytes, got.version, got.is_safe) == (
        str(want),
        want.bytes,
        want.version,
        want.is_safe,
    )
    assert pickle.loads(pickle.dumps(got)) == want and copy.deepcopy(got) == want


# -- what is refused --

ENVELOPE = at()
GOOD = ev.ActivityScheduled(envelope=ENVELOPE, activity_id=1, activity_type="a", input=EMPTY)
NAIVE = datetime(2023, 1, 1)


INT = SearchAttributeValue.of(1)


def built(model: type[BaseModel], **values: Any) -> Any:
    return model.model_construct(**values)


def fired(kind: str, value: Any) -> Any:
    return built(ev.TimerFired, envelope=ENVELOPE, timer_id=built(TimerId, kind=kind, value=value))


def attribute(kind: Any, data: Any) -> Any:
    value = built(SearchAttributeValue, type=kind, data=data)
    return built(
        ev.SearchAttributesUpdated, envelope=ENVELOPE, workflow_id=WF, attributes={"a": value}
    )


REFUSED: dict[str, Any] = {
    "str for bytes": GOOD.model_copy(update={"input": built(Payload, bytes="x")}),
    "str for enum": GOOD.model_copy(
        update={"input": built(Payload, content_type="Json", bytes=b"")}
    ),
    "bool for int": GOOD.model_copy(update={"activity_id": True}),
    "int over u64": GOOD.model_copy(update={"activity_id": 2**64}),
    "negative u64": GOOD.model_copy(update={"activity_id": -1}),
    "bytes for str": GOOD.model_copy(update={"activity_type": b"a"}),
    "lone surrogate": GOOD.model_copy(update={"activity_type": "\ud800"}),
    "missing field": built(ev.ActivityScheduled, envelope=ENVELOPE, activity_id=1, input=EMPTY),
    "no envelope": built(ev.ActivityStarted, activity_id=1),
    "naive recorded_at": GOOD.model_copy(
        update={"envelope": built(EventEnvelope, seq=1, recorded_at=NAIVE, workflow_id=WF)}
    ),
    "str for seq": GOOD.model_copy(
        update={"envelope": built(EventEnvelope, seq="1", recorded_at=T(1), workflow_id=WF)}
    ),
    "naive fire_at": built(
        ev.TimerStarted, envelope=ENVELOPE, timer_id=TimerId.anonymous(1), fire_at=NAIVE
    ),
    "int for UUID": built(ev.ScheduleDeleted, envelope=ENVELOPE, schedule_id=5),
    "str for UUID": built(ev.ScheduleDeleted, envelope=ENVELOPE, schedule_id=str(WF)),
    "wrong nested model": built(
        ev.WorkflowFailed,
        envelope=ENVELOPE,
        error=built(
            ev.ActivityError, kind=ev.ActivityErrorKind.TERMINAL, message="m", details=None
        ),
    ),
    "dict for model": built(ev.WorkflowCompleted, envelope=ENVELOPE, result={"bytes": b""}),
    "named timer, int": fired("Named", 3),
    "empty timer name": fired("Named", ""),
    "unknown timer kind": fired("Other", 3),
    "str in list of ids": built(ev.WorkflowReopened, envelope=ENVELOPE, run_id=WF, reopened=["2"]),
    "tuple for list": built(ev.WorkflowReopened, envelope=ENVELOPE, run_id=WF, reopened=(2,)),
    "int key": built(
        ev.SearchAttributesUpdated, envelope=ENVELOPE, workflow_id=WF, attributes={1: INT}
    ),
    "str for Int data": attribute(ev.SearchAttributeType.INT, "3"),
    "int for Float data": attribute(ev.SearchAttributeType.FLOAT, 3),
    "naive Datetime data": attribute(ev.SearchAttributeType.DATETIME, NAIVE),
    "tuple for KeywordList": attribute(ev.SearchAttributeType.KEYWORD_LIST, ("a",)),
    "str for type": attribute("Int", 3),
    "not an event": EMPTY,
    "the base class": built(EventBase, envelope=ENVELOPE),
}


@pytest.mark.parametrize("event", REFUSED.values(), ids=REFUSED)
def test_encoding_refuses_values_validation_would_not_allow(event: Any) -> None:
    with pytest.raises(ValueError):
        encode_event(event)


BLOB = encode_event(GOOD)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        BLOB[:-1],
        BLOB + b"\x00",
        b"not msgpack at all",
        msgpack.packb({"type": "ActivityScheduled"}),
        msgpack.packb("text"),
        msgpack.packb([]),
        msgpack.packb([99, 0]),
        msgpack.packb([-1, 0]),
        msgpack.packb([True, 0]),
        msgpack.packb(["8", 0, 1, "a", ["Json", b""]]),
        msgpack.packb([8]),
        msgpack.packb([8, 0, 1, "a"]),
        msgpack.packb([8, 0, 1, "a", ["Json", b""], None]),
        msgpack.packb([8, "later", 1, "a", ["Json", b""]]),
        msgpack.packb([8, 2**63 - 1, 1, "a", ["Json", b""]]),
        msgpack.packb([8, 0, 1, "a", ["Xml", b""]]),
        msgpack.packb([8, 0, 1, "a", ["Json"]]),
        msgpack.packb([8, 0, 1, "a", 5]),
        msgpack.packb([7, 0, WF.bytes, {"a": ["Integer", 3]}]),
        msgpack.packb([7, 0, WF.bytes, [["Int", 3]]]),  # an array for a map
    ],
)
def test_decoding_refuses_what_encoding_did_not_write(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_event(data, 1, WF)
