"""Aion's `StoreError` set, plus one addition for bad arguments.

StoreError
├── SequenceConflict      the stored head is not `expected_seq` (stale or ahead); nothing written
├── NotFoundError         reserved upstream; no 0.6.x method raises it
├── BackendError          the server failed or refused; non-contiguous seqs; a malformed run chain
│   └── StoreUnavailableError (also ConnectionError)   the server could not be reached
├── SerializationError    data that does not decode (stored JSON, ids, timestamps)
└── InvalidArgument (also ValueError)   an argument the store cannot take; nothing written
"""

from __future__ import annotations

from uuid import UUID


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


class StoreUnavailableError(BackendError, ConnectionError):
    """The server could not be reached after the client's bounded retries."""


class SerializationError(StoreError):
    """Encoding or decoding across the store boundary failed."""


class InvalidArgument(StoreError, ValueError):
    """An argument the store cannot take (wrong type, out of range); nothing was written."""
