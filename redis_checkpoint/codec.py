"""msgpack encoding of envelopes and interventions, the bytes every backend stores.

An envelope is stored without its `trace_id` and `circuit`: both are the trace's own (the
circuit is pinned by the first append), so repeating them in every entry would only cost
memory. Decoding puts them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel

from .errors import TREE, EnvelopeTooLarge, InvalidEnvelope, InvalidInput
from .models import U64_MAX, Intervention, PersistenceEnvelope

DEFAULT_MAX_ENVELOPE_BYTES = 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024

_ENVELOPE_FIELDS = 7
_INTERVENTION_FIELDS = 3


def _pack(value: list[Any], what: str) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        # Pydantic already vetted the shape; what is left is what msgpack cannot carry
        # (integers beyond 64 bits) or an instance built with model_construct.
        raise InvalidEnvelope(f"{what} cannot be encoded: {exc}") from None


def envelope(value: object) -> PersistenceEnvelope:
    """`value`, if it is an envelope (InvalidEnvelope if not)."""
    if not isinstance(value, PersistenceEnvelope):
        raise InvalidEnvelope(f"expected a PersistenceEnvelope, got {type(value).__name__}")
    return value


def encode_envelope(env: PersistenceEnvelope) -> bytes:
    """The stored bytes of one envelope. One built with `model_construct` is validated first,
    as construction would have; the fields are checked as decoding checks them, so nothing
    that `decode_envelope` would refuse is written."""
    env = envelope(env)
    if not (env.__pydantic_private__ or _UNVALIDATED)["_validated"]:  # 30x `env._validated`
        try:
            env = PersistenceEnvelope.model_validate(env.__dict__)
        except ValueError as exc:
            raise InvalidEnvelope(f"envelope cannot be stored: {exc}") from None
    fields = [env.step, env.node_id, env.outcome_kind, env.timestamp_ms, env.payload_hash]
    try:
        _envelope_fields([*fields, None, env.schematic_version])
    except ValueError as exc:  # model_copy(update=...) skips validation as well
        raise InvalidEnvelope(f"envelope cannot be stored: {exc}") from None
    return _pack([*fields, env.payload, env.schematic_version], "envelope")


def decode_envelope(data: bytes, trace_id: str, circuit: str) -> PersistenceEnvelope:
    """Rebuild an envelope from its stored bytes; raises ValueError on anything else.

    The bytes were written from a validated model, so the fields are type-checked here
    and the model is built without a second validation pass: it is the cost that
    dominates reading a long trace.
    """
    fields = _envelope_fields(_unpack(data, _ENVELOPE_FIELDS))
    step, node_id, outcome_kind, timestamp_ms, payload_hash, payload, version = fields
    return trusted(
        PersistenceEnvelope,
        {
            "trace_id": trace_id,
            "circuit": circuit,
            "schematic_version": version,
            "step": step,
            "node_id": node_id,
            "outcome_kind": outcome_kind,
            "timestamp_ms": timestamp_ms,
            "payload_hash": payload_hash,
            "payload": payload,
        },
        {"_validated": True},  # a dict per envelope: pydantic writes to it on assignment
    )


def _envelope_fields(fields: list[Any]) -> list[Any]:
    """The stored fields of an envelope, type-checked; ValueError names what is wrong."""
    step, node_id, outcome_kind, timestamp_ms, payload_hash, _, version = fields
    if not (
        type(step) is int
        and type(timestamp_ms) is int
        and 0 <= step <= U64_MAX
        and 0 <= timestamp_ms <= U64_MAX
        and type(outcome_kind) is str
        and outcome_kind
        and type(version) is str
        and (node_id is None or type(node_id) is str)
        and (payload_hash is None or type(payload_hash) is str)
    ):
        raise ValueError(f"envelope fields of the wrong types: {fields[:5]!r}")
    return fields


M = TypeVar("M", bound=BaseModel)

# Pydantic's per-instance state is these four slots; setting them through their descriptors
# skips pydantic's __setattr__ (which validates) and is faster than object.__setattr__.
_new = object.__new__
_slot = vars(BaseModel)
_set_dict = _slot["__dict__"].__set__
_set_fields = _slot["__pydantic_fields_set__"].__set__
_set_extra = _slot["__pydantic_extra__"].__set__
_set_private = _slot["__pydantic_private__"].__set__


class _FieldNames(dict[type[BaseModel], set[str]]):
    """Per model class, the one set of all its field names that its trusted instances share.

    Pydantic's only write to an instance's set is adding a field's name on assignment, which
    never changes a set that names every field; a set per instance was a third of the cost
    of reading a long trace.
    """

    def __missing__(self, model: type[BaseModel]) -> set[str]:
        if model.__new__ is not object.__new__:  # trusted() calls object.__new__ itself
            raise TypeError(f"{model.__name__} has its own __new__")
        names = self[model] = set(model.model_fields)
        return names


_FIELD_NAMES = _FieldNames()
_UNVALIDATED = {"_validated": False}  # the private state model_construct leaves


def trusted(model: type[M], values: dict[str, Any], private: dict[str, Any] | None = None) -> M:
    """An instance of `model` holding `values`, built without validation.

    What `model.model_construct(**values)` leaves, minus its per-field loop: for bytes this
    package wrote itself from a validated model, where a second validation only costs time.

    Args:
        model: a pydantic model class without its own `__new__`; its `model_post_init`
            is not run.
        values: a value for every field, in declaration order, of the types validation
            gives; the instance keeps this dict as its `__dict__`.
        private: the private attributes' values (a dict of its own per instance, as
            pydantic writes to it), or None for a model without private attributes.

    Returns:
        The instance; assignment to it is validated as usual.

    Raises:
        TypeError: `model` has its own `__new__`.
    """
    fields = _FIELD_NAMES[model]
    instance = _new(model)
    _set_dict(instance, values)
    _set_fields(instance, fields)
    _set_extra(instance, None)
    _set_private(instance, private)
    return instance


def encode_intervention(item: Intervention) -> bytes:
    """The stored bytes of one intervention."""
    if not isinstance(item, Intervention):
        raise InvalidEnvelope(f"expected an Intervention, got {type(item).__name__}")
    blob = _pack([item.target_node, item.payload_override, item.timestamp_ms], "intervention")
    try:
        decode_intervention(blob)
    except ValueError as exc:
        raise InvalidEnvelope(f"intervention cannot be stored: {exc}") from None
    return blob


def decode_intervention(data: bytes) -> Intervention:
    """Rebuild an intervention from its stored bytes; raises ValueError on anything else."""
    target, override, timestamp_ms = _unpack(data, _INTERVENTION_FIELDS)
    return Intervention(target_node=target, payload_override=override, timestamp_ms=timestamp_ms)


def _unpack(data: bytes, length: int) -> list[Any]:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"expected a msgpack array of {length} fields, got {value!r:.60}")
    return value


class Batch:
    """Envelopes for one trace, checked and encoded before anything is sent."""

    __slots__ = ("blobs", "circuit", "schematic_version", "trace_id")

    def __init__(
        self, envelopes: Iterable[PersistenceEnvelope], max_bytes: int, max_batch_bytes: int
    ) -> None:
        items = list(envelopes)
        if not items:
            raise InvalidEnvelope("a batch needs at least one envelope")
        self.blobs = [encode_envelope(env) for env in items]
        first, last = items[0], items[-1]
        for env, blob in zip(items, self.blobs, strict=True):
            if len(blob) > max_bytes:
                raise EnvelopeTooLarge(len(blob), max_bytes)
            if env.trace_id != first.trace_id or env.circuit != first.circuit:
                raise InvalidEnvelope("all envelopes of a batch must share trace_id and circuit")
        size = sum(map(len, self.blobs))
        if size > max_batch_bytes:
            raise InvalidInput(
                f"batch is {size} bytes encoded, over max_batch_bytes={max_batch_bytes}"
            )
        self.trace_id: str = TREE.check.text(first.trace_id, "trace_id", empty=False)
        self.circuit = TREE.check.utf8(first.circuit, "circuit")
        # As upstream: the trace takes the schematic version of the last appended envelope.
        self.schematic_version = TREE.check.utf8(
            last.schematic_version, "schematic_version", empty=True
        )
