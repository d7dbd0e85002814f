"""The neutral bases of both exception trees, and `ErrorTree`, the table of one contract's
classes that shared plumbing raises through.

Validation, the client, the script runner and the listings are shared by both stores. They
raise `store.errors.unavailable(...)` and the like, so one failure surfaces as the calling
contract's class, and a caller can also catch the neutral base (or the builtin beside it):

    kind         neutral base                  checkpoints              events
    invalid      BadArgument (ValueError)      InvalidInput             InvalidArgument
    unavailable  Unavailable (ConnectionError) StoreUnavailable         StoreUnavailableError
    denied       Denied                        PermissionDenied         PermissionDenied
    closed       Closed                        StoreClosed              StoreClosed
    corrupt      Corrupt                       CorruptRecord            CorruptRecord
    mismatch     Misconfigured                 ConfigMismatch           ConfigMismatch
    unreplicated Unreplicated                  NotReplicated            NotReplicated
    backpressure Overloaded                    Backpressure             Backpressure
    refused      (the tree's own base)         PersistenceError         BackendError
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .checks import Checks

OUTCOME_UNKNOWN = "a write may or may not have been applied"


class BadArgument(ValueError):
    """An argument the store cannot take; nothing was written."""


class Unavailable(ConnectionError):
    """The server could not be reached, or did not answer within the call's deadline."""


class Denied(Exception):
    """The server refused the credentials or a command (ACL): never retried."""


class Closed(Exception):
    """The store was closed with `aclose()`; it writes and reads nothing more."""


class Corrupt(Exception):
    """A key holds data the store did not write (a wrong type, undecodable bytes)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"corrupt record at key {key!r}: {detail or 'no detail'}")
        self.key = key


class Misconfigured(Exception):
    """The prefix was set up with another shard count; opening it would misplace keys."""


class Unreplicated(Exception):
    """A write applied on the primary that fewer replicas (or disks, with `fsync`) than the
    store asks for confirmed in time. It is not lost there, so it needs no blind retry (a
    retry is a new call: pass an idempotency key to make it safe)."""


class Overloaded(Exception):
    """A write-behind cache holds as many unflushed changes as it may (`max_backlog`): the
    write was not applied. It can be retried once the flusher has caught up."""


@dataclass(frozen=True)
class ErrorTree:
    """One contract's class for each kind of failure, and validators raising its `invalid`."""

    invalid: type[BadArgument]
    unavailable: type[Unavailable]
    denied: type[Denied]
    closed: type[Closed]
    corrupt: type[Corrupt]
    mismatch: type[Misconfigured]
    unreplicated: type[Unreplicated]
    backpressure: type[Overloaded]
    refused: type[Exception]
    base: type[Exception]
    check: Checks = field(init=False)

    def __post_init__(self) -> None:
        from .checks import Checks

        object.__setattr__(self, "check", Checks(self.invalid))
