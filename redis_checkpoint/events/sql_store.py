"""Aion's event store on PostgreSQL or SQLite: `SqlEventStore` holds the logic, every call
one transaction of `sql.Database`; `PostgresEventStore` and `SqliteEventStore` are the
public names for each database. The parts, one per concern: `sql_histories` (appends,
reads, listings, the write-behind mirror) and `sql_records` (timers, packages, visibility);
the tables, Aion's libSQL layout, are in `sql_tables`.

The SQL is written once with `$1` placeholders (`sql.py` turns them into SQLite's). The
semantics are `InMemoryEventStore`'s, checked by the same conformance suites.
"""

from __future__ import annotations

from typing import Self, TypedDict, Unpack

from .sql_histories import SqlHistories
from .sql_records import SqlPackages, SqlTimers, SqlVisibility


class Options(TypedDict, total=False):
    """The store keywords `from_url` passes on."""

    timeout: float


class PostgresOptions(Options, total=False):
    pool_size: int


class SqlEventStore(SqlHistories, SqlTimers, SqlPackages, SqlVisibility):
    """An `EventStore` and `VisibilityStore` (and `outbox.DurableHistories`) on a SQL
    database, with the in-memory store's choices: one visibility row per workflow, newest
    first; a workflow's parent is the workflow whose history started it
    (ChildWorkflowStarted; of several, the lowest id).

    Args:
        database: the database (`sql.Database.open`); the store closes it with itself.
    """


class PostgresEventStore(SqlEventStore):
    """The event store on PostgreSQL (asyncpg: `pip install 'redis-checkpoint[postgres]'`).

    An append locks its workflow's row, so any number of processes may share the database.
    """

    schemes = ("postgresql", "postgres")
    dialects = ("postgres",)

    @classmethod
    def from_url(cls, url: str, **options: Unpack[PostgresOptions]) -> Self:
        """A store on `postgresql://user:password@host:port/database` (or `postgres://`);
        `timeout` is seconds per call, `pool_size` the most connections it opens."""
        return cls.open(url, dict(options))


class SqliteEventStore(SqlEventStore):
    """The event store on a SQLite file (aiosqlite: `pip install 'redis-checkpoint[sqlite]'`)
    in WAL mode, one writer at a time; it reads and writes the files of Aion's libSQL store.
    """

    schemes = ("sqlite",)
    dialects = ("sqlite",)

    @classmethod
    def from_url(cls, url: str, **options: Unpack[Options]) -> Self:
        """A store on `sqlite:///relative.db`, `sqlite:////absolute.db` or
        `sqlite:///:memory:`; `timeout` is seconds per call (a lock wait included)."""
        return cls.open(url, dict(options))
