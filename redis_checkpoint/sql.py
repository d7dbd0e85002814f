"""What the PostgreSQL and SQLite stores of both contracts share: a database opened from its
URL (the driver an optional extra), one transaction (or one statement: `call`) per call with
its errors mapped to the calling contract's tree, the versioned schema, and the outbox
progress that makes a batch a write-behind flusher applies take effect exactly once.

SQL is written once, for PostgreSQL, with `$1` placeholders; on SQLite they become `?1`.
Both speak `INSERT ... ON CONFLICT`. PostgreSQL serializes writers of one record with row
locks (`tx.lock` is " FOR UPDATE"); SQLite with `BEGIN IMMEDIATE`, one writer at a time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

from .failures import OUTCOME_UNKNOWN, ErrorTree

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

SCHEMA_VERSION = 1  # the newest schema this package reads and writes; see `Database.start`
Row = Sequence[Any]

SCHEMA_DDL = (
    "CREATE TABLE IF NOT EXISTS rc_schema (part TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    # A write-behind flusher's position in each Redis outbox it applies: the last change
    # applied, as (epoch, n). Written in the transaction that applies the changes.
    "CREATE TABLE IF NOT EXISTS rc_outbox_progress (outbox TEXT PRIMARY KEY, "
    "epoch BIGINT NOT NULL, n BIGINT NOT NULL)",
)


class Tx(ABC):
    """One transaction; every statement of a store's call runs inside one."""

    lock: str  # appended to a SELECT that must lock the rows it reads

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class OutboxGap(Exception):
    """A batch does not follow the last change applied from its outbox (an earlier batch is
    still in another flusher's hands): nothing was applied; take it again later."""


class OutboxRewound(Exception):
    """An outbox hands out changes for the first time under numbers the database applied
    already: Redis went back to an older state (a restart from an older snapshot, a
    failover to a lagging replica) and numbers new changes again. Applying them would skip
    them as applied; nothing was applied, and the outbox waits for an operator."""


class Database(ABC):
    """A PostgreSQL pool or a SQLite file, for one store.

    Args:
        url: the database's URL (see `open`).
        errors: the calling contract's exception tree.
        timeout: seconds one call may take, waiting for a connection or a lock included.
    """

    dialect: str

    def __init__(self, url: str, errors: ErrorTree, timeout: float) -> None:
        self.url = url
        self.errors = errors
        self.timeout = timeout
        self._closed = False
        self._started = False
        self._starting = asyncio.Lock()

    @staticmethod
    def open(url: str, errors: ErrorTree, *, timeout: float, pool_size: int = 10) -> Database:
        """A database of `url`: `postgresql://user@host:port/db` (also `postgres://`), or
        `sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:`."""
        scheme = urlsplit(errors.check.text(url, "url")).scheme
        if scheme in ("postgresql", "postgres"):
            try:
                urlsplit(url).port  # noqa: B018 - it parses the port
            except ValueError:  # the URL may hold a password: not repeated
                raise errors.invalid("url: the port is not a number in 0..65535") from None
            return _Postgres(url, errors, timeout, errors.check.integer(pool_size, "pool_size", 1))
        if scheme == "sqlite":
            return _Sqlite(url, errors, timeout)
        raise errors.invalid(f"url must be postgresql://... or sqlite:///..., got {scheme}:...")

    @property
    def where(self) -> str:
        """The database, for messages, without credentials."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{':' if parts.port else ''}" + (
            f"{parts.port or ''}{parts.path}"
        )

    async def start(self, part: str, ddl: Sequence[str]) -> None:
        """Connect, and create the schema of `part` ("checkpoints", "events") if it is not
        there: idempotent, and safe when many stores start at once. A database whose `part`
        has a newer schema than this package knows is refused (ConfigMismatch)."""
        if self._started:
            return
        async with self._starting:
            if self._started:
                return
            if self._closed:  # else a store closed before its first call would connect
                raise self.errors.closed(f"the store on {self.where} is closed")
            await self._connect()
            try:
                await self._create(part, ddl)
            except BaseException:  # the next call connects again: this pool must not leak
                await self._disconnect()
                raise
            self._started = True

    async def _create(self, part: str, ddl: Sequence[str]) -> None:
        async with self.transaction(write=True) as tx:
            await self._serialize_ddl(tx)
            for statement in SCHEMA_DDL:
                await tx.execute(statement)
            row = await tx.fetchrow("SELECT version FROM rc_schema WHERE part = $1", part)
            if row is not None and row[0] > SCHEMA_VERSION:
                raise self.errors.mismatch(
                    f"the {part} schema in {self.where} is version {row[0]}; this package "
                    f"reads up to version {SCHEMA_VERSION}: upgrade redis-checkpoint"
                )
            if row is None:
                for statement in ddl:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO rc_schema (part, version) VALUES ($1, $2)",
                    part,
                    SCHEMA_VERSION,
                )

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[Tx]:
        """One transaction within `timeout`: committed if the block returns, rolled back if
        it raises. The driver's errors come out as the contract's (a lost commit of a write
        says that its outcome is unknown)."""
        if self._closed:
            raise self.errors.closed(f"the store on {self.where} is closed")
        try:
            async with asyncio.timeout(self.timeout), self._transaction(write) as tx:
                yield tx
        except (self.errors.base, OutboxGap, OutboxRewound):
            raise
        except Exception as exc:
            raise self._translate(exc, write) from exc

    async def call(self, sql: str, *args: Any) -> Row | None:
        """One write statement (a function call: see `pg_traces`) in a transaction of its
        own, as `transaction` runs a block: its first row, or None."""
        if self._closed:
            raise self.errors.closed(f"the store on {self.where} is closed")
        try:
            return await self._call(sql, *args)
        except self.errors.base:
            raise
        except Exception as exc:
            raise self._translate(exc, write=True) from exc

    async def _call(self, sql: str, *args: Any) -> Row | None:
        async with asyncio.timeout(self.timeout), self._transaction(write=True) as tx:
            row: Row | None = await tx.fetchrow(sql, *args)
            return row

    async def apply_outbox(
        self,
        outbox: str,
        epoch: int,
        first: int,
        changes: Sequence[Any],
        apply: Any,
        fresh: bool = False,
    ) -> int:
        """Apply a batch of changes numbered `first`, `first + 1`, ... from `outbox` (epoch
        `epoch`) with `await apply(tx, changes)`, in one transaction with the outbox's
        progress: the changes applied before are skipped, so a batch applied twice changes
        nothing. Returns how many were applied.

        Raises:
            OutboxGap: the batch starts after a change not yet applied.
            OutboxRewound: `fresh` changes (delivered for the first time) numbered as
                applied already.
        """
        async with self.transaction(write=True) as tx:
            if self.dialect == "postgres":  # a flusher stopped mid-batch holds no lock for long
                ms = round(self.timeout * 1000)
                await tx.execute(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")
            await tx.execute(
                "INSERT INTO rc_outbox_progress (outbox, epoch, n) VALUES ($1, 0, 0) "
                "ON CONFLICT (outbox) DO NOTHING",
                outbox,
            )
            row = await tx.fetchrow(
                f"SELECT epoch, n FROM rc_outbox_progress WHERE outbox = $1{tx.lock}", outbox
            )
            assert row is not None
            done = row[1] if row[0] == epoch else 0
            if epoch < row[0]:  # an outbox of an epoch that ended: applied, or lost before
                return 0
            if first > done + 1:
                raise OutboxGap(f"{outbox}: batch starts at {first}, {done} applied")
            if fresh and first <= done:
                raise OutboxRewound(
                    f"{outbox}: new changes numbered from {first} in epoch {epoch}, which "
                    f"the database applied up to {done}: Redis lost changes (an older snapshot "
                    "or a lagging replica); flushing this outbox stopped"
                )
            todo = changes[done + 1 - first :]
            if todo:
                await apply(tx, todo)
                await tx.execute(
                    "UPDATE rc_outbox_progress SET epoch = $2, n = $3 WHERE outbox = $1",
                    outbox,
                    epoch,
                    first + len(changes) - 1,
                )
            return len(todo)

    async def close(self) -> None:
        """Close the pool or file; later calls raise the closed error."""
        if not self._closed:
            self._closed = True
            await self._disconnect()

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    def _transaction(self, write: bool) -> Any: ...

    @abstractmethod
    async def _serialize_ddl(self, tx: Tx) -> None: ...

    @abstractmethod
    def _translate(self, exc: Exception, write: bool) -> Exception: ...

    def _unavailable(self, detail: str, write: bool) -> Exception:
        outcome = f" ({OUTCOME_UNKNOWN})" if write else ""
        return self.errors.unavailable(f"{self.where} unreachable: {detail}{outcome}")


class SqlBacked:
    """What the SQL stores of both contracts share: their database, started by the first
    call (or `async with`), each call one transaction, closed with the store.

    Subclasses set `errors` (their contract's tree) and `part` (their schema's name).
    """

    errors: ClassVar[ErrorTree]
    part: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres", "sqlite")
    dialects: ClassVar[tuple[str, ...]] = ("postgres", "sqlite")

    def __init__(self, database: Database, schema: Callable[[str], Sequence[str]]) -> None:
        if not isinstance(database, Database) or database.dialect not in self.dialects:
            raise self.errors.invalid(f"{type(self).__name__} needs a database of {self.dialects}")
        self.database = database
        self._ddl = schema(database.dialect)

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> Self:
        """A store on `url`, of one of `schemes`, with the constructor's `options`, and
        `timeout` (seconds per call) and `pool_size` (PostgreSQL's most connections)."""
        check = cls.errors.check
        scheme = urlsplit(check.text(url, "url")).scheme
        if scheme not in cls.schemes:  # the URL itself may hold a password: not repeated
            wanted = " or ".join(f"{s}://" for s in cls.schemes)
            raise cls.errors.invalid(f"{cls.__name__} takes a {wanted} url, got {scheme}://...")
        timeout = check.seconds(options.pop("timeout", 10.0), "timeout")
        pool_size = options.pop("pool_size", 10)
        unknown = [key for key in options if key not in inspect.signature(cls).parameters]
        if unknown:
            raise cls.errors.invalid(f"unknown options for {cls.__name__}: {', '.join(unknown)}")
        return cls(Database.open(url, cls.errors, timeout=timeout, pool_size=pool_size), **options)

    async def start(self) -> None:
        """Connect, and create the tables if needed; the first call does it anyway.

        Raises:
            ConfigMismatch: the database holds a newer schema, or the driver is missing.
        """
        await self.database.start(self.part, self._ddl)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the database's connections; later calls raise StoreClosed."""
        await self.database.close()

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[Tx]:
        await self.start()
        async with self.database.transaction(write) as tx:
            yield tx


def _missing(extra: str, driver: str, errors: ErrorTree) -> Exception:
    return errors.mismatch(
        f"this store needs the {driver} driver: pip install 'redis-checkpoint[{extra}]'"
    )


# -- PostgreSQL (asyncpg) ---------------------------------------------------------------


class _PgTx(Tx):
    lock = " FOR UPDATE"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection, after asyncpg rolls back a transaction
    left open: nothing more. The stores leave no session state (no SET, LISTEN, cursor or
    session advisory lock), and the default reset (RESET ALL, UNLISTEN *, ...) is one round
    trip more per call."""


class _Postgres(Database):
    """PostgreSQL through asyncpg's pool (see the README for why asyncpg)."""

    dialect = "postgres"

    def __init__(self, url: str, errors: ErrorTree, timeout: float, pool_size: int) -> None:
        super().__init__(url, errors, timeout)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def _connect(self) -> None:
        try:
            import asyncpg
        except ImportError:
            raise _missing("postgres", "asyncpg", self.errors) from None
        try:
            async with asyncio.timeout(self.timeout):
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=0,  # no connection kept up in the background: no log noise
                    max_size=self._pool_size,
                    timeout=self.timeout,
                    reset=_keep_session,
                )
        except Exception as exc:
            raise self._translate(exc, write=False) from exc

    async def _disconnect(self) -> None:
        if self._pool is not None:
            self._pool.terminate()  # close() waits for calls in flight; they are abandoned

    async def _call(self, sql: str, *args: Any) -> Row | None:
        # asyncpg's own timeouts: asyncio.timeout costs a few percent of a one-statement call.
        if self._pool is None:
            raise self.errors.closed(f"the store on {self.where} is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        async with self._pool.acquire(timeout=self.timeout) as conn:  # no BEGIN: one statement
            row: Row | None = await conn.fetchrow(sql, *args, timeout=deadline - loop.time())
        return row

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[Tx]:
        if self._pool is None:
            raise self.errors.closed(f"the store on {self.where} is not started")
        # A read sees one snapshot through all its statements (the trace row, then its
        # envelopes); a read-only repeatable-read transaction never fails to serialize.
        isolation = "read_committed" if write else "repeatable_read"
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation=isolation, readonly=not write),
        ):
            yield _PgTx(conn)

    async def _serialize_ddl(self, tx: Tx) -> None:
        # CREATE TABLE IF NOT EXISTS races with itself; stores starting at once take turns.
        await tx.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(b"redis-checkpoint"))

    def _translate(self, exc: Exception, write: bool) -> Exception:
        import asyncpg

        if isinstance(exc, asyncpg.InsufficientPrivilegeError | asyncpg.InvalidPasswordError):
            return self.errors.denied(f"{self.where} denied the call: {exc}")
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return self.errors.denied(f"{self.where} denied the call: {exc}")
        if isinstance(exc, TimeoutError):
            return self._unavailable(f"no reply within {self.timeout:g}s", write)
        if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
            return self._unavailable(str(exc) or type(exc).__name__, write)
        if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
            return self._unavailable(str(exc), write)
        if isinstance(exc, asyncpg.PostgresError):
            return self.errors.refused(f"{self.where} refused the call: {exc}")
        return self.errors.base(f"unexpected {type(exc).__name__}: {exc}")


# -- SQLite (aiosqlite) ------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _qmarks(sql: str) -> str:
    """PostgreSQL's `$1` placeholders as SQLite's `?1`."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


class _LiteTx(Tx):
    lock = ""  # BEGIN IMMEDIATE holds the database's one write lock already

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(_qmarks(sql), args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(_qmarks(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_qmarks(sql), args) as cursor:
            return list(await cursor.fetchall())


class _Sqlite(Database):
    """A SQLite file in WAL mode through aiosqlite: one connection, one call at a time
    (SQLite has one writer anyway); other processes wait up to `timeout` for the lock."""

    dialect = "sqlite"

    def __init__(self, url: str, errors: ErrorTree, timeout: float) -> None:
        super().__init__(url, errors, timeout)
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") and path:
            raise errors.invalid(f"a sqlite URL is sqlite:///path.db, got {url!r}")
        self.path = path[1:] or ":memory:"  # sqlite:///x.db is x.db; sqlite:////x.db is /x.db
        self._conn: aiosqlite.Connection | None = None
        self._turn = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"sqlite:///{self.path}"

    async def _connect(self) -> None:
        try:
            import aiosqlite
        except ImportError:
            raise _missing("sqlite", "aiosqlite", self.errors) from None
        try:
            conn = await aiosqlite.connect(self.path, timeout=self.timeout, isolation_level=None)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        except Exception as exc:
            raise self._translate(exc, write=False) from exc

    async def _disconnect(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[Tx]:
        conn = self._conn
        if conn is None:
            raise self.errors.closed(f"the store on {self.where} is not started")
        async with self._turn:
            await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _LiteTx(conn)
            except BaseException:
                await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            await conn.execute("COMMIT")

    async def _serialize_ddl(self, tx: Tx) -> None:
        return None  # BEGIN IMMEDIATE already

    def _translate(self, exc: Exception, write: bool) -> Exception:
        import sqlite3

        if isinstance(exc, TimeoutError):
            return self._unavailable(f"no reply within {self.timeout:g}s", write)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return self._unavailable(f"the database stayed locked: {exc}", write)
        if isinstance(exc, sqlite3.Error | OSError):
            return self.errors.refused(f"{self.where} refused the call: {exc}")
        return self.errors.base(f"unexpected {type(exc).__name__}: {exc}")
