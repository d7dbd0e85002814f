"""The exception tree. Messages keep Ranvier's wording, so code matching on it still works.

PersistenceError
├── InvalidInput (also ValueError)        bad argument; nothing was written
│   └── InvalidEnvelope                   an envelope that cannot be stored
│       └── EnvelopeTooLarge              encoded envelope over max_envelope_bytes
├── TraceNotFound (also LookupError)      "trace_id … not found"
├── TraceCompleted                        "… is already completed and cannot …"
├── CircuitMismatch                       "… already exists for circuit …, got …"
├── ConfigMismatch                        a store opened with another shard count
├── StoreUnavailable (also ConnectionError)  the server could not be reached
└── CorruptRecord                         data in Redis that this store did not write
"""

from __future__ import annotations


class PersistenceError(Exception):
    """Base class of every error a checkpoint store raises."""


class InvalidInput(PersistenceError, ValueError):
    """An argument is not acceptable; the store wrote nothing."""


class InvalidEnvelope(InvalidInput):
    """An envelope cannot be stored (wrong type, a value outside the wire format)."""


class EnvelopeTooLarge(InvalidEnvelope):
    """An encoded envelope is larger than the store's `max_envelope_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"envelope is {size} bytes encoded, over max_envelope_bytes={limit}")
        self.size = size
        self.limit = limit


class TraceNotFound(PersistenceError, LookupError):
    """The trace does not exist (or has expired)."""

    def __init__(self, trace_id: str) -> None:
        super().__init__(f"trace_id {trace_id} not found")
        self.trace_id = trace_id


class TraceCompleted(PersistenceError):
    """The trace is completed: it takes no more events and cannot be resumed."""

    def __init__(self, trace_id: str, action: str) -> None:
        super().__init__(f"trace_id {trace_id} is already completed and cannot {action}")
        self.trace_id = trace_id


class CircuitMismatch(PersistenceError):
    """The trace id is already pinned to another circuit."""

    def __init__(self, trace_id: str, existing: str, given: str) -> None:
        super().__init__(f"trace_id {trace_id} already exists for circuit {existing}, got {given}")
        self.trace_id = trace_id
        self.existing = existing
        self.given = given


class ConfigMismatch(PersistenceError):
    """The prefix was set up with another shard count; opening it would misplace keys."""


class StoreUnavailable(PersistenceError, ConnectionError):
    """The server could not be reached after the client's bounded retries."""


class CorruptRecord(PersistenceError):
    """A key holds data this store did not write (wrong type, undecodable bytes)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"corrupt record at key {key!r}: {detail}")
        self.key = key
