"""The checkpoint store's exception tree. Messages keep Ranvier's wording, so code matching
on it still works. Each class also derives from the neutral base in `failures.py` that the
event store's tree shares (and from the builtin named beside it).

PersistenceError
├── InvalidInput (BadArgument, ValueError)  bad argument; nothing was written
│   └── InvalidEnvelope                     an envelope that cannot be stored
│       └── EnvelopeTooLarge                encoded envelope over max_envelope_bytes
├── TraceNotFound (also LookupError)        "trace_id … not found"
├── TraceCompleted                          "… is already completed and cannot …"
├── CircuitMismatch                         "… already exists for circuit …, got …"
├── ConfigMismatch (Misconfigured)          another shard count, a newer schema, no driver
├── StoreUnavailable (Unavailable, ConnectionError)  unreachable, or no reply in time
├── PermissionDenied (Denied)               wrong credentials, or an ACL refused a command
├── StoreClosed (Closed)                    the store was closed
├── NotReplicated (Unreplicated)            applied, but not confirmed by `replicas` in time
├── Backpressure (Overloaded)               a write-behind backlog is full; nothing written
└── CorruptRecord (Corrupt)                 data in Redis that this store did not write

A server's other refusals (out of memory, a script error) raise `PersistenceError` itself.
"""

from __future__ import annotations

from .failures import (
    BadArgument,
    Closed,
    Corrupt,
    Denied,
    ErrorTree,
    Misconfigured,
    Overloaded,
    Unavailable,
    Unreplicated,
)


class PersistenceError(Exception):
    """Base class of every error a checkpoint store raises."""


class InvalidInput(PersistenceError, BadArgument):
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


class ConfigMismatch(PersistenceError, Misconfigured):
    """The store cannot work as configured: a prefix set up with another shard count, a
    database schema newer than this package, a database driver not installed."""


class StoreUnavailable(PersistenceError, Unavailable):
    """The server could not be reached, or did not answer within the call's deadline.

    For a write the message says that its outcome is unknown: retry it with the same
    `idempotency_key` to apply it at most once.
    """


class PermissionDenied(PersistenceError, Denied):
    """Authentication failed, or an ACL refused a command (named in the message)."""


class StoreClosed(PersistenceError, Closed):
    """The store was closed with `aclose()`."""


class CorruptRecord(PersistenceError, Corrupt):
    """A key holds data this store did not write (wrong type, undecodable bytes)."""


class NotReplicated(PersistenceError, Unreplicated):
    """The write is applied on the primary, but fewer replicas than `replicas` (or, with
    `fsync`, not the disks) confirmed it within `replica_timeout`."""


class Backpressure(PersistenceError, Overloaded):
    """A tiered store's outbox holds `max_backlog` unflushed changes (the durable store is
    down or slow): the write was not applied; retry it once the backlog drains."""


TREE = ErrorTree(
    invalid=InvalidInput,
    unavailable=StoreUnavailable,
    denied=PermissionDenied,
    closed=StoreClosed,
    corrupt=CorruptRecord,
    mismatch=ConfigMismatch,
    unreplicated=NotReplicated,
    backpressure=Backpressure,
    refused=PersistenceError,
    base=PersistenceError,
)
