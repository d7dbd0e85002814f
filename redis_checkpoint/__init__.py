"""redis-checkpoint: an atomic checkpoint store on Redis for Python workflow runtimes."""

from .errors import (
    Backpressure,
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
from .sql_store import PostgresPersistenceStore, SqlitePersistenceStore
from .tiered import TieredPersistenceStore

__all__ = [
    "Backpressure",
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
    "PostgresPersistenceStore",
    "RedisPersistenceStore",
    "ResumeCursor",
    "SqlitePersistenceStore",
    "StoreClosed",
    "StoreUnavailable",
    "TieredPersistenceStore",
    "TraceCompleted",
    "TraceNotFound",
    "TraceSummary",
]
