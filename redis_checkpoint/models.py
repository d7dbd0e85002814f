"""Pydantic models of Ranvier's persistence contract, on its exact JSON wire form.

Field names, field order and encodings match the serde output of Ranvier's Rust types, so
`PersistedTrace.model_dump_json()` writes the document Ranvier's Redis adapter stores and
`PersistedTrace.model_validate_json()` reads one back. No I/O here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    StrictInt,
    StrictStr,
    model_validator,
)

from .checks import U64_MAX as U64_MAX

U64 = Annotated[StrictInt, Field(ge=0, le=U64_MAX)]
"""An unsigned 64-bit integer, as Rust's `u64`: no bools, floats or numeric strings."""

Id = Annotated[StrictStr, Field(min_length=1)]
"""A non-empty identifier; any other Unicode string is valid."""


class _Model(BaseModel):
    # Assignment is validated too, so an envelope cannot be bent out of shape after
    # construction; NaN and infinities are not JSON and are refused inside payloads.
    model_config = ConfigDict(validate_assignment=True, allow_inf_nan=False)


class CompletionState(StrEnum):
    """How a trace ended; serialized as Ranvier's PascalCase strings."""

    SUCCESS = "Success"
    FAULT = "Fault"
    CANCELLED = "Cancelled"
    COMPENSATED = "Compensated"


class PersistenceEnvelope(_Model):
    """One checkpoint event of a trace, as the runtime appends it.

    `step` need not be unique or increasing: the runtime writes duplicate steps as a
    matter of course, and `load` returns events sorted by step, ties in append order.
    """

    trace_id: Id
    circuit: Id
    schematic_version: StrictStr
    step: U64
    node_id: StrictStr | None = None
    outcome_kind: Id
    timestamp_ms: U64
    payload_hash: StrictStr | None = None
    payload: JsonValue = None
    # Set by validation, which `model_construct` skips: the codec validates those when
    # they are appended, and trusts the rest (validating a payload twice costs time).
    _validated: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _mark_validated(self) -> Self:
        self._validated = True
        return self


class Intervention(_Model):
    """A human-in-the-loop "force resume" request: jump to `target_node` with a new input."""

    target_node: StrictStr
    payload_override: JsonValue = None
    timestamp_ms: U64


class PersistedTrace(_Model):
    """A whole trace as `load` returns it: events sorted by step, ties in append order."""

    trace_id: Id
    circuit: StrictStr
    schematic_version: StrictStr
    events: list[PersistenceEnvelope]
    interventions: list[Intervention]
    resumed_from_step: U64 | None = None
    completion: CompletionState | None = None


class ResumeCursor(_Model):
    """Where a resumed run continues: `next_step` is the resumed step plus one (saturating)."""

    trace_id: Id
    next_step: U64


class TraceSummary(_Model):
    """One row of `iter_traces`: a trace's metadata without its events."""

    trace_id: Id
    circuit: StrictStr
    schematic_version: StrictStr
    events: int
    interventions: int
    resumed_from_step: U64 | None = None
    completion: CompletionState | None = None
    updated_ms: int
