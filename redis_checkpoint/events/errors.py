"""Aion's `StoreError` set, plus the failures both stores of this package share. Each class
also derives from the neutral base in `..failures` that the checkpoint tree shares.

StoreError
├── SequenceConflict      the stored head is not `expected_seq` (stale or ahead); nothing written
├── NotFoundError         reserved upstream; no 0.6.x method raises it
├── BackendError          the server failed or refused; non-contiguous seqs; a malformed run chain
│   ├── StoreUnavailableError (Unavailable, ConnectionError)   unreachable, or no reply in time
│   ├── PermissionDenied (Denied)          wrong credentials, or an ACL refused a command
│   ├── CorruptRecord (Corrupt)            a key of the wrong type, entries the store did not write
│   ├── ConfigMismatch (Misconfigured)     another shard count, a newer schema, no driver
│   ├── NotReplicated (Unreplicated)       applied, but not confirmed by `replicas` in time
│   └── Backpressure (Overloaded)          a write-behind backlog is full; nothing written
├── SerializationError    stored data that does not decode (events, ids, timestamps)
├── InvalidArgument (BadArgument, ValueError)   an argument the store cannot take; nothing written
└── StoreClosed (Closed)  the store was closed
"""

from __future__ import annotations

from uuid import UUID

from ..failures import (
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


class StoreError(Exception):
    """Base class of every error an event store raises."""


class SequenceConflict(StoreError):
    """The workflow's head is `found`, not the `expected` seq: a double-writer bug indicator."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(
            f"sequence conflict: expected head {expected}, found {found} "
            "(double-writer bug indicator)"
        )
        self.expected = expected
        self.found = found

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SequenceConflict) and (self.expected, self.found) == (
            other.expected,
            other.found,
        )

    def __hash__(self) -> int:
        return hash((self.expected, self.found))


class NotFoundError(StoreError, LookupError):
    """Reserved for must-exist operations; reads of unknown workflows return empty results."""

    def __init__(self, workflow_id: UUID) -> None:
        super().__init__(f"workflow {workflow_id} not found")
        self.workflow_id = workflow_id


class BackendError(StoreError):
    """The backend failed, or the stored data breaks an invariant (e.g. the run chain)."""


class StoreUnavailableError(BackendError, Unavailable):
    """The server could not be reached, or did not answer within the call's deadline."""


class PermissionDenied(BackendError, Denied):
    """Authentication failed, or an ACL refused a command (named in the message)."""


class CorruptRecord(BackendError, Corrupt):
    """A key holds data this store did not write (a wrong type, foreign stream entries)."""


class ConfigMismatch(BackendError, Misconfigured):
    """The store cannot work as configured: a prefix set up with another shard count, a
    database schema newer than this package, a database driver not installed."""


class NotReplicated(BackendError, Unreplicated):
    """The append is applied on the primary, but fewer replicas than `replicas` (or, with
    `fsync`, not the disks) confirmed it within `replica_timeout`."""


class Backpressure(BackendError, Overloaded):
    """A tiered store's outbox holds `max_backlog` unflushed changes (the durable store is
    down or slow): the append was not applied; retry it once the backlog drains."""


class SerializationError(StoreError):
    """Encoding or decoding across the store boundary failed."""


class InvalidArgument(StoreError, BadArgument):
    """An argument the store cannot take (wrong type, out of range); nothing was written."""


class StoreClosed(StoreError, Closed):
    """The store was closed with `aclose()`."""


TREE = ErrorTree(
    invalid=InvalidArgument,
    unavailable=StoreUnavailableError,
    denied=PermissionDenied,
    closed=StoreClosed,
    corrupt=CorruptRecord,
    mismatch=ConfigMismatch,
    unreplicated=NotReplicated,
    backpressure=Backpressure,
    refused=BackendError,
    base=StoreError,
)
