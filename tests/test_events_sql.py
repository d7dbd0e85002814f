"""What only the SQL event stores can show: a file that Aion's libSQL store wrote, racing
appends on PostgreSQL, the schema version, the write-behind mirror and the drivers."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from redis_checkpoint.conformance.aion import (
    TOKEN,
    act,
    child_started,
    completed,
    started,
    wid,
)
from redis_checkpoint.events import (
    ConfigMismatch,
    EventBase,
    InvalidArgument,
    ListWorkflowsFilter,
    PackageRecord,
    PackageRouteRecord,
    Payload,
    PostgresEventStore,
    SearchAttributePredicate,
    SearchAttributeValue,
    SequenceConflict,
    SqliteEventStore,
    StoreClosed,
    TimerEntry,
    TimerId,
    TimerStarted,
    VisibilityRecord,
    WorkflowCompleted,
    WorkflowFilter,
    WorkflowStarted,
    WorkflowStatus,
    dump_event,
)
from redis_checkpoint.events.models import ChildWorkflowStarted, EventEnvelope
from redis_checkpoint.events.sql_store import SqlEventStore
from redis_checkpoint.outbox import EventsAppended

# -- a database as Aion's libSQL store (0.6.x, with reopen) leaves it --------------------

AION_DDL = """
CREATE TABLE events (workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,
    recorded_at TEXT NOT NULL, event_kind TEXT NOT NULL, is_queryable_event INTEGER NOT NULL,
    workflow_type TEXT, child_workflow_id TEXT, PRIMARY KEY (workflow_id, seq));
CREATE INDEX idx_events_queryable_filter ON events (is_queryable_event, workflow_id, seq,
    event_kind, workflow_type, recorded_at, child_workflow_id);
CREATE TABLE timers (workflow_id TEXT NOT NULL, timer_id TEXT NOT NULL, fire_at TEXT NOT NULL,
    PRIMARY KEY (workflow_id, timer_id));
CREATE INDEX idx_timers_fire_at ON timers (fire_at);
CREATE TABLE packages (workflow_type TEXT NOT NULL, content_hash TEXT NOT NULL,
    archive BLOB NOT NULL, deployed_at TEXT NOT NULL, PRIMARY KEY (workflow_type, content_hash));
CREATE TABLE package_routes (workflow_type TEXT PRIMARY KEY, content_hash TEXT NOT NULL);
CREATE TABLE visibility (workflow_id TEXT PRIMARY KEY, run_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL, status TEXT NOT NULL, start_time TEXT NOT NULL,
    close_time TEXT, search_attributes TEXT NOT NULL CHECK (json_valid(search_attributes)));
CREATE INDEX idx_visibility_workflow_type ON visibility (workflow_type);
CREATE INDEX idx_visibility_status ON visibility (status);
CREATE INDEX idx_visibility_start_time ON visibility (start_time);
CREATE INDEX idx_visibility_close_time ON visibility (close_time);
"""

PARENT = "11111111-1111-4111-8111-111111111111"
CHILD = "22222222-2222-4222-8222-222222222222"
RUN, CHILD_RUN = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
HASH = "a" * 64
INPUT = '{"content_type":"Json","bytes":[123,125]}'  # serde's Payload: bytes as integers


def aion_event(kind: str, seq: int, wf: str, at: str, fields: str) -> str:
    """An event as serde_json writes Aion's Event: `fields` after the envelope, in order."""
    envelope = f'"envelope":{{"seq":{seq},"recorded_at":"{at}","workflow_id":"{wf}"}}'
    return f'{{"type":"{kind}","data":{{{envelope},{fields}}}}}'


def started_fields(workflow_type: str, run: str) -> str:
    return (
        f'"workflow_type":"{workflow_type}","input":{INPUT},"run_id":"{run}",'
        f'"parent_run_id":null,"package_version":"{HASH}"'
    )


# (workflow_id, seq, event, recorded_at as chrono's to_rfc3339(), event_kind,
#  is_queryable_event, workflow_type, child_workflow_id): the rows libSQL's append writes.
AION_EVENTS: list[tuple[Any, ...]] = [
    (PARENT, 1, aion_event("WorkflowStarted", 1, PARENT, "2026-06-12T09:30:00Z",
                           started_fields("checkout", RUN)),
     "2026-06-12T09:30:00+00:00", "WorkflowStarted", 1, "checkout", None),
    (PARENT, 2, aion_event("TimerStarted", 2, PARENT, "2026-06-12T09:30:01.250Z",
                           '"timer_id":{"Named":"reminder"},"fire_at":"2026-06-12T10:00:00Z"'),
     "2026-06-12T09:30:01.250+00:00", "TimerStarted", 0, None, None),
    (PARENT, 3, aion_event("ChildWorkflowStarted", 3, PARENT, "2026-06-12T09:30:02Z",
                           f'"child_workflow_id":"{CHILD}","workflow_type":"billing",'
                           f'"input":{INPUT},"package_version":"{HASH}"'),
     "2026-06-12T09:30:02+00:00", "ChildWorkflowStarted", 1, "billing", CHILD),
    (PARENT, 4, aion_event("WorkflowCompleted", 4, PARENT, "2026-06-12T09:45:00Z",
                           f'"result":{INPUT}'),
     "2026-06-12T09:45:00+00:00", "WorkflowCompleted", 1, None, None),
    (CHILD, 1, aion_event("WorkflowStarted", 1, CHILD, "2026-06-12T09:30:03Z",
                          started_fields("billing", CHILD_RUN)),
     "2026-06-12T09:30:03+00:00", "WorkflowStarted", 1, "billing", None),
]  # fmt: skip
AION_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "timers": [  # workflow and timer ids as their JSON text; fire_at with 9 digits and Z
        (f'"{PARENT}"', '{"Named":"reminder"}', "2026-06-12T10:00:00.000000000Z"),
        (f'"{CHILD}"', '{"Anonymous":7}', "2026-06-12T11:00:00.123456789Z"),
    ],
    "packages": [("checkout", HASH, b"PK\x03\x04archive", "2026-06-12T09:00:00.000000000Z")],
    "package_routes": [("checkout", HASH)],
    "visibility": [  # the status as its JSON text
        (PARENT, RUN, "checkout", '"Completed"', "2026-06-12T09:30:00.000000000Z",
         "2026-06-12T09:45:00.000000000Z",
         '{"tier":{"type":"String","data":"gold"},"count":{"type":"Int","data":3}}'),
        (CHILD, CHILD_RUN, "billing", '"Running"', "2026-06-12T09:30:03.000000000Z", None, "{}"),
    ],
}  # fmt: skip


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def aion_file(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(AION_DDL)
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[0], r[1], r[2].encode(), *r[3:]) for r in AION_EVENTS],
        )
        for table, rows in AION_ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    db.close()


def raw(path: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(sql, args).fetchall()
    db.close()
    return rows


def envelope(seq: int, wf: str, when: str) -> EventEnvelope:
    return EventEnvelope(seq=seq, recorded_at=at(when), workflow_id=UUID(wf))


EMPTY = Payload(bytes=b"{}")
PARENT_HISTORY: list[EventBase] = [
    WorkflowStarted(
        envelope=envelope(1, PARENT, "2026-06-12T09:30:00Z"),
        workflow_type="checkout",
        input=EMPTY,
        run_id=UUID(RUN),
        package_version=HASH,
    ),
    TimerStarted(
        envelope=envelope(2, PARENT, "2026-06-12T09:30:01.250Z"),
        timer_id=TimerId.named("reminder"),
        fire_at=at("2026-06-12T10:00:00Z"),
    ),
    ChildWorkflowStarted(
        envelope=envelope(3, PARENT, "2026-06-12T09:30:02Z"),
        child_workflow_id=UUID(CHILD),
        workflow_type="billing",
        input=EMPTY,
        package_version=HASH,
    ),
    WorkflowCompleted(envelope=envelope(4, PARENT, "2026-06-12T09:45:00Z"), result=EMPTY),
]


@pytest.fixture
async def aion(tmp_path: Any) -> AsyncIterator[tuple[str, SqliteEventStore]]:
    """A file as Aion's libSQL store leaves it, and a store on it."""
    path = f"{tmp_path}/aion.db"
    aion_file(path)
    async with SqliteEventStore.from_url(f"sqlite:///{path}") as store:
        yield path, store


async def test_histories_written_by_aions_libsql_store_read_back(
    aion: tuple[str, SqliteEventStore],
) -> None:
    _, store = aion
    parent, child = UUID(PARENT), UUID(CHILD)
    assert await store.read_history(parent) == PARENT_HISTORY
    assert await store.read_history_from(parent, 3, limit=1) == PARENT_HISTORY[2:3]
    assert await store.list_workflow_ids() == [parent, child]
    assert await store.list_active() == [child]
    [summary] = await store.query(WorkflowFilter(parent=parent))
    assert (summary.workflow_id, summary.workflow_type, summary.parent) == (
        child,
        "billing",
        parent,
    )
    [chain] = await store.read_run_chain(parent)
    assert (chain.run_id, chain.status, chain.closed_at) == (
        UUID(RUN),
        WorkflowStatus.COMPLETED,
        at("2026-06-12T09:45:00Z"),
    )


async def test_timers_packages_and_visibility_of_aions_libsql_store_read_back(
    aion: tuple[str, SqliteEventStore],
) -> None:
    _, store = aion
    parent, child = UUID(PARENT), UUID(CHILD)
    reminder = TimerEntry(
        workflow_id=parent, timer_id=TimerId.named("reminder"), fire_at=at("2026-06-12T10:00Z")
    )
    assert await store.expired_timers(at("2026-06-12T10:30:00Z")) == [reminder]
    [_, late] = await store.expired_timers(at("2026-06-12T12:00:00Z"))
    assert late.fire_at == at("2026-06-12T11:00:00.123456Z")  # nanoseconds truncated
    assert await store.retire_timer(child, TimerId.anonymous(7), late.fire_at) is True
    archive = PackageRecord(
        workflow_type="checkout",
        content_hash=HASH,
        archive=b"PK\x03\x04archive",
        deployed_at=at("2026-06-12T09:00:00Z"),
    )
    assert await store.list_packages() == [archive]
    assert await store.list_package_routes() == [
        PackageRouteRecord(workflow_type="checkout", content_hash=HASH)
    ]
    rows = await store.list_workflows(ListWorkflowsFilter())
    assert [(r.workflow_id, r.status, r.close_time) for r in rows] == [
        (child, WorkflowStatus.RUNNING, None),  # newest start first
        (parent, WorkflowStatus.COMPLETED, at("2026-06-12T09:45:00Z")),
    ]
    gold = SearchAttributePredicate.equals("tier", SearchAttributeValue.of("gold"))
    found = await store.list_workflows(ListWorkflowsFilter(search_attributes=[gold]))
    assert [r.workflow_id for r in found] == [parent]
    assert found[0].search_attributes["count"] == SearchAttributeValue.of(3)
    done = ListWorkflowsFilter(status=WorkflowStatus.COMPLETED)
    assert await store.count_workflows(done) == 1


async def test_writes_what_aions_libsql_store_reads(aion: tuple[str, SqliteEventStore]) -> None:
    path, store = aion
    child = UUID(CHILD)
    timer = TimerStarted(
        envelope=envelope(2, CHILD, "2026-06-12T09:31:00.5Z"),
        timer_id=TimerId.anonymous(2),
        fire_at=at("2026-06-12T09:40:00Z"),
    )
    with pytest.raises(SequenceConflict) as raised:  # the head of libSQL's rows
        await store.append(TOKEN, child, [timer], 0)
    assert (raised.value.expected, raised.value.found) == (0, 1)
    await store.append(TOKEN, child, [timer], 1)
    await store.schedule_timer(child, timer.timer_id, timer.fire_at)
    failed = VisibilityRecord(
        workflow_id=child,
        run_id=UUID(CHILD_RUN),
        workflow_type="billing",
        status=WorkflowStatus.FAILED,
        start_time=at("2026-06-12T09:30:03Z"),
        close_time=at("2026-06-12T09:50:00.25Z"),
    )
    await store.record_visibility(failed)
    assert raw(path, "SELECT * FROM events WHERE workflow_id = ? AND seq = 2", CHILD) == [
        (CHILD, 2, dump_event(timer).encode(), "2026-06-12T09:31:00.500+00:00", "TimerStarted",
         0, None, None)
    ]  # fmt: skip
    assert (f'"{CHILD}"', '{"Anonymous":2}', "2026-06-12T09:40:00.000000000Z") in raw(
        path, "SELECT * FROM timers"
    )
    assert raw(path, "SELECT status, close_time FROM visibility WHERE workflow_id = ?", CHILD) == [
        ('"Failed"', "2026-06-12T09:50:00.250000000Z")
    ]
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
    assert sorted(name for (name,) in raw(path, indexes)) == [  # libSQL's, none added twice
        "idx_events_queryable_filter",
        "sqlite_autoindex_events_1",
    ]


async def test_sixteen_racing_appends_on_postgres_have_one_winner(postgres_url: str) -> None:
    stores = [PostgresEventStore.from_url(postgres_url, pool_size=4) for _ in range(4)]
    wf, head = wid(), 0
    try:
        for round_ in range(2):  # from no history (no lock row yet), then from a head
            batches = [
                [
                    started(head + 1, wf, f"type-{round_}-{i}"),
                    *[act(seq, wf, "a") for seq in range(head + 2, head + 2 + i % 3)],
                ]
                for i in range(16)
            ]
            results = await asyncio.gather(
                *(stores[i % 4].append(TOKEN, wf, b, head) for i, b in enumerate(batches)),
                return_exceptions=True,
            )
            [winner] = [b for b, r in zip(batches, results, strict=True) if r is None]
            losers = [r for r in results if r is not None]
            assert losers == [SequenceConflict(head, head + len(winner))] * 15
            head += len(winner)
            assert (await stores[1].read_history(wf))[-len(winner) :] == winner
        assert [e.seq for e in await stores[2].read_history(wf)] == list(range(1, head + 1))
    finally:
        for store in stores:
            await store.aclose()


async def execute(backend: str, url: str, sql: str) -> None:
    """Run `sql` on the database of `url` behind the store's back."""
    if backend == "sqlite":
        raw(url.removeprefix("sqlite:///"), sql)
        return
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_a_newer_schema_is_refused(request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    async with SqlEventStore.open(url, {}) as store:
        assert (await store.check())["schema_version"] == 1
    await execute(backend, url, "UPDATE rc_schema SET version = 99 WHERE part = 'events'")
    newer = SqlEventStore.open(url, {})
    with pytest.raises(ConfigMismatch, match=r"events schema .* is version 99"):
        await newer.read_history(wid())
    with pytest.raises(ConfigMismatch):
        async with newer:
            pass
    await newer.aclose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_applying_changes_twice_gives_the_history_append_gives(
    request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    appended, mirrored, child = wid(), wid(), wid()

    def history(wf: UUID) -> list[EventBase]:
        return [started(1, wf), act(2, wf, "a"), child_started(3, wf, child), completed(4, wf)]

    changes = [
        EventsAppended(mirrored, tuple(history(mirrored)[:2])),
        EventsAppended(mirrored, tuple(history(mirrored)[2:])),
        EventsAppended(child, (started(1, child, "child"),)),
    ]
    async with SqlEventStore.open(url, {}) as store:
        await store.append(TOKEN, appended, history(appended), 0)
        for _ in range(2):
            async with store.database.transaction(write=True) as tx:
                await store.apply_changes(tx, changes)
        assert await store.database.apply_outbox("o", 1, 1, changes, store.apply_changes) == 3
        assert await store.database.apply_outbox("o", 1, 1, changes, store.apply_changes) == 0
        assert await store.read_history(mirrored) == history(mirrored)
        [summary] = await store.query(WorkflowFilter(parent=appended))
        assert (summary.workflow_id, summary.parent) == (child, appended)  # the lower of two
        with pytest.raises(SequenceConflict):  # the mirrored head fences appends
            await store.append(TOKEN, mirrored, [act(4, mirrored, "late")], 3)
        await store.append(TOKEN, mirrored, [act(5, mirrored, "next")], 4)
        async with store.database.transaction(write=False) as tx:
            rows = await tx.fetch(
                "SELECT workflow_id, seq, recorded_at, event_kind, is_queryable_event,"
                " workflow_type, child_workflow_id FROM events ORDER BY seq, workflow_id"
            )

    def derived(wf: UUID) -> list[Any]:  # the columns but the id, of the first 4 events
        return [row[1:] for row in rows if row[0] == str(wf) and row[1] <= 4]

    assert derived(mirrored) == derived(appended)


@pytest.mark.parametrize(
    ("store_class", "url", "module", "extra"),
    [
        (PostgresEventStore, "postgresql://127.0.0.1:1/none", "asyncpg", "postgres"),
        (SqliteEventStore, "sqlite:///:memory:", "aiosqlite", "sqlite"),
    ],
)
async def test_a_missing_driver_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, store_class: Any, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it raises ImportError
    store = store_class.from_url(url)
    with pytest.raises(ConfigMismatch, match=rf"pip install 'redis-checkpoint\[{extra}\]'"):
        await store.list_workflow_ids()
    await store.aclose()


def test_the_drivers_are_imported_only_when_a_store_starts() -> None:
    drivers = "{'asyncpg', 'aiosqlite'}"
    code = f"import sys, redis_checkpoint.events; print(sorted({drivers} & {{*sys.modules}}))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


async def test_urls_options_closing_and_the_report(sqlite_url: str) -> None:
    with pytest.raises(InvalidArgument, match="postgresql://"):
        PostgresEventStore.from_url(sqlite_url)
    with pytest.raises(InvalidArgument, match="sqlite://"):
        SqliteEventStore.from_url("postgresql://localhost/db")
    with pytest.raises(InvalidArgument, match="unknown options"):
        SqliteEventStore.from_url(sqlite_url, shards=3)  # type: ignore[call-arg]
    never_used = SqliteEventStore.from_url(sqlite_url)
    await never_used.aclose()
    with pytest.raises(StoreClosed):
        await never_used.list_active()
    async with SqliteEventStore.from_url(sqlite_url, timeout=5) as store:
        report = await store.check()
        assert (report["dialect"], report["timeout"], report["warnings"]) == ("sqlite", 5, [])
        assert str(report["server"]).startswith("SQLite 3.")
    with pytest.raises(StoreClosed):
        await store.read_history(wid())


async def test_text_that_postgres_cannot_hold_is_refused(postgres_url: str) -> None:
    async with PostgresEventStore.from_url(postgres_url) as store:
        with pytest.raises(InvalidArgument, match="NUL"):
            await store.put_package_route("check\x00out", HASH)
        wf = wid()
        with pytest.raises(InvalidArgument, match="NUL"):
            await store.append(TOKEN, wf, [started(1, wf, "check\x00out")], 0)
        assert await store.list_package_routes() == []
        assert await store.read_history(wf) == []


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_u64_arguments_beyond_what_the_databases_hold(
    request: pytest.FixtureRequest, backend: str
) -> None:
    async with SqlEventStore.open(request.getfixturevalue(f"{backend}_url"), {}) as store:
        wf, top = wid(), 2**64 - 1
        await store.append(TOKEN, wf, [started(1, wf), completed(2, wf)], 0)
        assert await store.read_history_from(wf, top) == []
        assert len(await store.read_history_from(wf, 2, limit=top)) == 1
        with pytest.raises(SequenceConflict) as raised:
            await store.append(TOKEN, wf, [started(top, wf, k=3)], top - 1)
        assert (raised.value.expected, raised.value.found) == (top - 1, 2)
