"""Aion's JSON wire form: documents written out from the reference, read and written exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from redis_checkpoint.conformance.aion import ATTRIBUTES, T, every_event_kind, rid, started
from redis_checkpoint.events import (
    ListWorkflowsFilter,
    PackageRecord,
    Payload,
    SearchAttributePredicate,
    SearchAttributeValue,
    SerializationError,
    TimerEntry,
    TimerId,
    VisibilityRecord,
    WorkflowStatus,
    dump_event,
    parse_event,
)

WF1 = "00000000-0000-0000-0000-000000000001"

# Reference §3.5, the example event, with the 64-char package version spelled out.
STARTED = (
    '{"type":"WorkflowStarted","data":{"envelope":{"seq":1,"recorded_at":"2023-11-14T22:13:21Z",'
    f'"workflow_id":"{WF1}"}},"workflow_type":"checkout",'
    '"input":{"content_type":"Json","bytes":[123,34,108,97,98,101,108,34,58,34,105,110,112,117,'
    "116,34,125]},"
    f'"run_id":"{WF1}","parent_run_id":null,"package_version":"{"a" * 64}"}}}}'
)

RECORDS: list[tuple[type[BaseModel], str]] = [
    (
        TimerEntry,
        f'{{"workflow_id":"{WF1}","timer_id":{{"Named":"reminder"}},'
        '"fire_at":"2023-11-14T22:13:50Z"}',
    ),
    (
        TimerEntry,
        f'{{"workflow_id":"{WF1}","timer_id":{{"Anonymous":3}},'
        '"fire_at":"2023-11-14T22:13:50.250Z"}',
    ),
    (
        PackageRecord,
        '{"workflow_type":"checkout","content_hash":"' + "b" * 64 + '",'
        '"archive":[97,114,99,104,105,118,101,45,98],"deployed_at":"2023-11-14T22:13:40Z"}',
    ),
    (
        VisibilityRecord,
        f'{{"workflow_id":"{WF1}","run_id":"{WF1}","workflow_type":"checkout",'
        '"status":"Completed","start_time":"2023-11-14T22:13:21Z",'
        '"close_time":"2023-11-14T22:13:22.000001Z","search_attributes":{'
        '"count":{"type":"Int","data":3},"tags":{"type":"KeywordList","data":["vip"]},'
        '"seen":{"type":"Datetime","data":"2023-11-14T22:13:25Z"},'
        '"score":{"type":"Float","data":0.5},"beta":{"type":"Bool","data":true},'
        '"tier":{"type":"String","data":"gold"}}}',
    ),
    (
        ListWorkflowsFilter,
        '{"workflow_type":null,"status":"Running","started_after":null,"started_before":null,'
        '"closed_after":null,"closed_before":null,"search_attributes":['
        '{"Equals":{"name":"count","value":{"type":"Int","data":3}}},'
        '{"GreaterThan":{"name":"score","value":{"type":"Float","data":0.25}}},'
        '{"Contains":{"name":"tags","keyword":"vip"}}],"limit":10,"offset":null}',
    ),
]


def test_reference_example_event_round_trips_exactly() -> None:
    event = parse_event(STARTED)
    assert event == started(1, rid(1)).model_copy(
        update={"envelope": started(1, rid(1)).envelope.model_copy(update={"recorded_at": T(1)})}
    )
    assert event.input.to_json() == {"label": "input"}
    assert dump_event(event) == STARTED


def test_every_event_kind_round_trips_through_json() -> None:
    for event in every_event_kind(rid(1)):
        text = dump_event(event)
        assert json.loads(text)["type"] == type(event).__name__
        assert parse_event(text) == event
        assert dump_event(parse_event(text)) == text


def test_event_json_uses_aion_encodings() -> None:
    by_type = {
        type(e).__name__: json.loads(dump_event(e))["data"] for e in every_event_kind(rid(1))
    }
    assert by_type["TimerStarted"]["timer_id"] == {"Named": "deadline ⏰"}
    assert by_type["TimerCancelled"]["timer_id"] == {"Anonymous": 4}
    assert by_type["WorkflowCompleted"]["result"]["bytes"] == list(b'{"label":"r"}')
    assert by_type["ActivityFailed"]["error"] == {
        "kind": "Terminal",
        "message": "no",
        "details": None,
    }
    assert by_type["ScheduleCreated"]["config"]["trigger"] == {
        "Interval": {"period": {"secs": 60, "nanos": 5}}
    }
    assert by_type["ScheduleUpdated"]["config"]["trigger"] == {"Cron": {"expression": "0 * * * *"}}
    assert by_type["SearchAttributesUpdated"]["attributes"]["count"] == {"type": "Int", "data": 3}


@pytest.mark.parametrize(("model", "document"), RECORDS)
def test_records_round_trip_exactly(model: type[BaseModel], document: str) -> None:
    assert model.model_validate_json(document).model_dump_json() == document


def test_timestamps_are_utc_with_microsecond_precision() -> None:
    entry = TimerEntry.model_validate_json(
        f'{{"workflow_id":"{WF1}","timer_id":{{"Anonymous":1}},'
        '"fire_at":"2023-11-14T23:13:50.123456789+01:00"}'
    )
    assert entry.fire_at == datetime(2023, 11, 14, 22, 13, 50, 123456, tzinfo=UTC)
    assert entry.fire_at.tzinfo is UTC
    assert '"fire_at":"2023-11-14T22:13:50.123456Z"' in entry.model_dump_json()
    east = datetime(2023, 11, 15, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert TimerEntry(workflow_id=rid(1), timer_id=TimerId.anonymous(1), fire_at=east).fire_at == (
        datetime(2023, 11, 14, 22, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"fire_at": datetime(2023, 1, 1)},  # naive
        {"timer_id": {"Named": ""}},  # IdError::EmptyTimerName
        {"timer_id": {"Anonymous": -1}},
        {"timer_id": {"Named": 3}},
        {"workflow_id": "not-a-uuid"},
    ],
)
def test_bad_values_are_refused(bad: dict[str, Any]) -> None:
    good: dict[str, Any] = {"workflow_id": WF1, "timer_id": {"Anonymous": 1}, "fire_at": T(1)}
    with pytest.raises(ValidationError):
        TimerEntry.model_validate({**good, **bad})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type":"NoSuchEvent","data":{}}',
        '{"type":"TimerFired","data":{"envelope":{"seq":1}}}',
        STARTED.replace('"bytes":[123', '"bytes":[999'),
        STARTED.replace('"seq":1', '"seq":-1'),
    ],
)
def test_undecodable_events_are_serialization_errors(text: str) -> None:
    with pytest.raises(SerializationError):
        parse_event(text)


def test_timer_ids_have_aion_text_forms_and_are_hashable() -> None:
    assert str(TimerId.named("reminder")) == "timer:named:reminder"
    assert str(TimerId.anonymous(3)) == "timer:anonymous:3"
    assert len({TimerId.anonymous(3), TimerId.anonymous(3), TimerId.named("3")}) == 2


def test_search_attribute_values_are_typed() -> None:
    assert SearchAttributeValue.of(True).type == "Bool"
    assert SearchAttributeValue.of(3) != SearchAttributeValue.of(3.0)  # Int vs Float
    assert SearchAttributeValue.model_validate_json('{"type":"Float","data":3}').data == 3.0
    for bad in ('{"type":"Int","data":true}', '{"type":"Int","data":"3"}', '{"type":"X","data":1}'):
        with pytest.raises(ValidationError):
            SearchAttributeValue.model_validate_json(bad)
    with pytest.raises(ValidationError):
        SearchAttributePredicate(kind="Contains", name="tags")  # Contains needs a keyword
    assert set(ATTRIBUTES) == {"tier", "count", "tags", "score", "seen", "beta"}


def test_payload_helpers() -> None:
    payload = Payload.from_json({"a": [1, 2]})
    assert payload.bytes == b'{"a":[1,2]}'
    assert payload.to_json() == {"a": [1, 2]}
    assert WorkflowStatus("TimedOut").is_terminal and not WorkflowStatus.RUNNING.is_terminal
