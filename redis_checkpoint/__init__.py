"""redis-checkpoint: an atomic checkpoint store on Redis for Python workflow runtimes."""

from .errors import (
    CircuitMismatch,
    ConfigMismatch,
    CorruptRecord,
    EnvelopeTooLarge,
    InvalidEnvelope,
    InvalidInput,
    NotReplicated,
    PermissionDenied,
    PersistenceError,
    StoreClosed,
    StoreUnavailable,
    TraceCompleted,
    TraceNotFound,
)
from .memory import InMemoryPersistenceStore
from .models import (
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
)
from .protocol import ManagedPersistenceStore, PersistenceStore
from .redis_store import RedisPersistenceStore

__all__ = [
    "CircuitMismatch",
    "CompletionState",
    "ConfigMismatch",
    "CorruptRecord",
    "EnvelopeTooLarge",
    "InMemoryPersistenceStore",
    "Intervention",
    "InvalidEnvelope",
    "InvalidInput",
    "ManagedPersistenceStore",
    "NotReplicated",
    "PermissionDenied",
    "PersistedTrace",
    "PersistenceEnvelope",
    "PersistenceError",
    "PersistenceStore",
    "RedisPersistenceStore",
    "ResumeCursor",
    "StoreClosed",
    "StoreUnavailable",
    "TraceCompleted",
    "TraceNotFound",
    "TraceSummary",
]
