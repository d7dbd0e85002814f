"""The wire format: Ranvier's JSON, byte for byte, and validation at the edge."""

import json
from typing import Any

import pytest
from pydantic import ValidationError

from redis_checkpoint import (
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
)
from redis_checkpoint.codec import decode_envelope, encode_envelope

# The document Ranvier's Rust RedisPersistenceStore writes (reference section 4.4).
RANVIER_TRACE = (
    '{"trace_id":"order-1001","circuit":"OrderRecoveryFlow","schematic_version":"1.0",'
    '"events":[{"trace_id":"order-1001","circuit":"OrderRecoveryFlow","schematic_version":"1.0",'
    '"step":0,"node_id":"3f1c","outcome_kind":"Enter","timestamp_ms":1760000000000,'
    '"payload_hash":null,"payload":null},'
    '{"trace_id":"order-1001","circuit":"OrderRecoveryFlow","schematic_version":"1.0","step":1,'
    '"node_id":"9a2e","outcome_kind":"Next","timestamp_ms":1760000000003,"payload_hash":null,'
    '"payload":{"Next":{"order_id":"1001","validated":true}}}],'
    '"interventions":[{"target_node":"ChargePayment","payload_override":100,'
    '"timestamp_ms":1760000001000}],'
    '"resumed_from_step":1,"completion":"Success"}'
)


def test_reads_and_writes_ranvier_json_exactly() -> None:
    trace = PersistedTrace.model_validate_json(RANVIER_TRACE)
    assert trace.completion is CompletionState.SUCCESS
    assert trace.events[1].payload == {"Next": {"order_id": "1001", "validated": True}}
    assert trace.interventions[0].payload_override == 100
    assert trace.model_dump_json() == RANVIER_TRACE


def test_open_trace_writes_nulls() -> None:
    doc = json.loads(RANVIER_TRACE)
    doc.update(resumed_from_step=None, completion=None, interventions=[])
    text = json.dumps(doc, separators=(",", ":"))
    assert PersistedTrace.model_validate_json(text).model_dump_json() == text


def test_absent_options_read_as_none_and_unknown_fields_are_ignored() -> None:
    doc = json.loads(RANVIER_TRACE)
    for event in doc["events"]:
        for field in ("node_id", "payload", "payload_hash"):
            del event[field]
        event["future_field"] = 1
    del doc["resumed_from_step"], doc["completion"]
    trace = PersistedTrace.model_validate_json(json.dumps(doc))
    assert trace.resumed_from_step is None and trace.completion is None
    assert all(e.node_id is None and e.payload is None for e in trace.events)


@pytest.mark.parametrize("field", ["schematic_version", "interventions", "events", "circuit"])
def test_absent_required_fields_are_errors_as_in_serde(field: str) -> None:
    doc = json.loads(RANVIER_TRACE)
    del doc[field]
    with pytest.raises(ValidationError, match=field):
        PersistedTrace.model_validate_json(json.dumps(doc))


def test_u64_extremes_round_trip_through_json() -> None:
    cursor = ResumeCursor(trace_id="t", next_step=2**64 - 1)
    assert cursor.model_dump_json() == '{"trace_id":"t","next_step":18446744073709551615}'
    assert ResumeCursor.model_validate_json(cursor.model_dump_json()) == cursor


GOOD: dict[str, Any] = dict(
    trace_id="t", circuit="c", schematic_version="1", step=1, outcome_kind="Next", timestamp_ms=0
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_id", ""),
        ("trace_id", 5),
        ("step", -1),
        ("step", 2**64),
        ("step", True),
        ("step", "3"),
        ("step", 1.0),
        ("timestamp_ms", -5),
        ("payload", float("nan")),
        ("payload", {"a": [float("inf")]}),
        ("payload", b"bytes"),
        ("payload", {1: "non-string key"}),
        ("payload", (1, 2)),
        ("outcome_kind", None),
    ],
)
def test_envelope_validation_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        PersistenceEnvelope(**{**GOOD, field: value})


def test_assignment_is_validated_too() -> None:
    env = PersistenceEnvelope(**GOOD)
    with pytest.raises(ValidationError, match="step"):
        env.step = -1


def test_intervention_validation() -> None:
    with pytest.raises(ValidationError, match="timestamp_ms"):
        Intervention(target_node="n", timestamp_ms=-1)


def test_codec_round_trip_keeps_every_field() -> None:
    env = PersistenceEnvelope(
        **{**GOOD, "node_id": "n", "payload_hash": "h", "payload": {"k": [1, 2.5, None, "é"]}}
    )
    assert decode_envelope(encode_envelope(env), "t", "c") == env


def test_decoded_envelopes_behave_like_validated_ones() -> None:
    env = PersistenceEnvelope(**{**GOOD, "payload": {"a": 1}})
    decoded = decode_envelope(encode_envelope(env), "t", "c")
    assert decoded == env and decoded.model_dump_json() == env.model_dump_json()
    decoded.step = 7  # assignment still validates, and leaves other instances alone
    with pytest.raises(ValidationError):
        decoded.step = -1
    assert env.step == 1 and decode_envelope(encode_envelope(env), "t", "c").step == 1
    assert decoded.model_copy(update={"step": 9}).step == 9
    other = decode_envelope(encode_envelope(env), "t", "c")
    decoded._validated = False  # private state is the instance's own too
    assert other._validated and encode_envelope(other) == encode_envelope(env)


@pytest.mark.parametrize(
    "fields",
    [[-1, None, "k", 0, None, None, "1"], [1, None, 5, 0, None, None, "1"], [1, 2, 3], "text"],
)
def test_decoding_foreign_bytes_fails(fields: object) -> None:
    import msgpack

    with pytest.raises(ValueError):
        decode_envelope(msgpack.packb(fields), "t", "c")


@pytest.mark.parametrize("field", ["circuit", "outcome_kind", "trace_id"])
def test_empty_circuit_outcome_and_trace_id_are_refused(field: str) -> None:
    from redis_checkpoint.conformance import envelope

    values = envelope().model_dump() | {field: ""}
    with pytest.raises(ValueError, match=field):
        PersistenceEnvelope(**values)


def test_both_trees_export_the_same_shared_failures() -> None:
    import redis_checkpoint
    import redis_checkpoint.events as events
    from redis_checkpoint import failures

    shared = ("PermissionDenied", "StoreClosed", "CorruptRecord", "ConfigMismatch", "Backpressure")
    for name in shared:
        assert name in redis_checkpoint.__all__ and name in events.__all__
    pairs = [
        (redis_checkpoint.InvalidInput, events.InvalidArgument, failures.BadArgument),
        (redis_checkpoint.StoreUnavailable, events.StoreUnavailableError, failures.Unavailable),
        (redis_checkpoint.PermissionDenied, events.PermissionDenied, failures.Denied),
        (redis_checkpoint.StoreClosed, events.StoreClosed, failures.Closed),
        (redis_checkpoint.CorruptRecord, events.CorruptRecord, failures.Corrupt),
        (redis_checkpoint.Backpressure, events.Backpressure, failures.Overloaded),
    ]
    for ours, theirs, neutral in pairs:
        assert issubclass(ours, neutral) and issubclass(theirs, neutral)
        assert issubclass(ours, redis_checkpoint.PersistenceError)
        assert issubclass(theirs, events.StoreError)
        assert not issubclass(ours, events.StoreError)
        assert not issubclass(theirs, redis_checkpoint.PersistenceError)
