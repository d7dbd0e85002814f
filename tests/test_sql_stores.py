"""The PostgreSQL and SQLite checkpoint stores beyond the conformance suite: their schema,
their URLs, the drivers as extras, the durable tier's side (snapshot, apply_changes) and
concurrent writers on PostgreSQL."""

from __future__ import annotations

import asyncio
import builtins
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from redis_checkpoint import (
    CompletionState,
    ConfigMismatch,
    CorruptRecord,
    Intervention,
    InvalidInput,
    ManagedPersistenceStore,
    PersistedTrace,
    PersistenceStore,
    PostgresPersistenceStore,
    SqlitePersistenceStore,
    StoreClosed,
    StoreUnavailable,
    TraceCompleted,
    TraceNotFound,
)
from redis_checkpoint.codec import (
    decode_envelope,
    decode_intervention,
    encode_envelope,
    encode_intervention,
)
from redis_checkpoint.conformance import envelope
from redis_checkpoint.outbox import (
    Appended,
    Completed,
    Deleted,
    DurableTraces,
    Intervened,
    Resumed,
    TraceChange,
)
from redis_checkpoint.sql_store import SqlPersistenceStore

Make = Callable[..., SqlPersistenceStore]


@pytest.fixture(params=["postgres", "sqlite"])
def url(request: pytest.FixtureRequest) -> str:
    """An empty database of each dialect: a PostgreSQL schema or a SQLite file."""
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
async def make(url: str) -> AsyncIterator[Make]:
    """Stores on `url` (sharing its data), closed at teardown."""
    opened: list[SqlPersistenceStore] = []

    def factory(**options: Any) -> SqlPersistenceStore:
        opened.append(SqlPersistenceStore.open(url, options))
        return opened[-1]

    yield factory
    for store in opened:
        await store.aclose()


# -- schema ------------------------------------------------------------------------------


async def test_a_newer_schema_is_refused(make: Make) -> None:
    store = make()
    await store.append(envelope(step=1))
    async with store.database.transaction(write=True) as tx:
        await tx.execute("UPDATE rc_schema SET version = 99 WHERE part = 'checkpoints'")
    refused = make()
    for _ in range(2):  # and again on the next call: it is not started
        with pytest.raises(ConfigMismatch, match=r"checkpoints schema .* is version 99; this p"):
            await refused.load("trace-1")
    with pytest.raises(ConfigMismatch, match="upgrade redis-checkpoint"):
        async with make():
            pass


async def test_schema_creation_is_idempotent_with_8_stores_starting_at_once(
    postgres_url: str,
) -> None:
    stores = [PostgresPersistenceStore.from_url(postgres_url, pool_size=2) for _ in range(8)]
    try:
        await asyncio.gather(*(store.start() for store in stores))
        await asyncio.gather(*(s.append(envelope(f"t{n}", step=n)) for n, s in enumerate(stores)))
        async with stores[0].database.transaction(write=False) as tx:
            assert await tx.fetch("SELECT part, version FROM rc_schema") == [("checkpoints", 1)]
            assert await _functions(tx) == FUNCTIONS
        again = PostgresPersistenceStore.from_url(postgres_url)  # the tables are there
        async with again:
            assert len([s async for s in again.iter_traces()]) == 8
            assert (await again.check())["schema_version"] == 1
    finally:
        for store in stores:
            await store.aclose()


FUNCTIONS = [
    "rc_append",
    "rc_complete",
    "rc_intervene",
    "rc_live",
    "rc_remember",
    "rc_replayed",
    "rc_resume",
]


async def _functions(tx: Any) -> list[str]:
    """The functions in the schema the store's tables are in."""
    sql = "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
    return sorted(name for (name,) in await tx.fetch(sql))


async def test_the_functions_are_replaced_idempotently_by_two_stores_starting_at_once(
    postgres_url: str,
) -> None:
    async with PostgresPersistenceStore.from_url(postgres_url) as first:
        await first.append(envelope(step=1))
        async with first.database.transaction(write=True) as tx:  # the schema's DDL runs again
            await tx.execute("DELETE FROM rc_schema")
    stores = [PostgresPersistenceStore.from_url(postgres_url) for _ in range(2)]
    try:
        await asyncio.gather(*(store.start() for store in stores))
        await asyncio.gather(*(s.append(envelope(step=n)) for n, s in enumerate(stores, 2)))
        trace = await stores[0].load("trace-1")
        assert trace is not None and sorted(e.step for e in trace.events) == [1, 2, 3]
        async with stores[1].database.transaction(write=False) as tx:
            assert await _functions(tx) == FUNCTIONS
            assert await tx.fetch("SELECT part, version FROM rc_schema") == [("checkpoints", 1)]
    finally:
        for store in stores:
            await store.aclose()


@pytest.mark.parametrize(
    ("store", "extra"), [(PostgresPersistenceStore, "postgres"), (SqlitePersistenceStore, "sqlite")]
)
async def test_a_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: Any, extra: str
) -> None:
    real = builtins.__import__

    def without_drivers(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in ("asyncpg", "aiosqlite"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_drivers)
    url = "postgresql://nobody@127.0.0.1:1/x" if extra == "postgres" else f"sqlite:///{tmp_path}/x"
    with pytest.raises(ConfigMismatch, match=rf"pip install 'redis-checkpoint\[{extra}\]'"):
        await store.from_url(url).load("trace-1")


def test_importing_the_package_imports_no_driver() -> None:
    code = (
        "import sys, redis_checkpoint; print(sorted({'asyncpg', 'aiosqlite'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- URLs --------------------------------------------------------------------------------


async def test_sqlite_urls_relative_and_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for url, path in [
        ("sqlite:///relative.db", tmp_path / "cwd" / "relative.db"),
        (f"sqlite:///{tmp_path}/absolute.db", tmp_path / "absolute.db"),
    ]:
        async with SqlitePersistenceStore.from_url(url, ttl=60) as store:
            await store.append(envelope(step=1))
            assert path.exists()
            assert (await store.check())["database"] == url
    async with SqlitePersistenceStore.from_url("sqlite:///relative.db") as store:
        assert await store.load("trace-1") is not None  # the same file again


async def test_postgres_urls(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        async with PostgresPersistenceStore.from_url(url, timeout=5, pool_size=1) as store:
            await store.append(envelope(step=1))
            report = await store.check()
            assert report["dialect"] == "postgres" and "@" not in report["database"]


@pytest.mark.parametrize(
    ("store", "url"),
    [
        (SqlitePersistenceStore, "sqlite://relative.db"),
        (SqlitePersistenceStore, "postgresql://u:secret@h/db"),
        (SqlitePersistenceStore, 42),
        (PostgresPersistenceStore, "sqlite:///x.db"),
        (PostgresPersistenceStore, "redis://u:secret@localhost:6379/0"),
        (PostgresPersistenceStore, ""),
    ],
)
def test_bad_urls_are_invalid_input(store: Any, url: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.from_url(url)
    assert "secret" not in str(caught.value)


def test_bad_options_are_invalid_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    for options in ({"ttl": -1}, {"timeout": 0}, {"max_envelope_bytes": 0}):
        with pytest.raises(InvalidInput):
            SqlitePersistenceStore.from_url(url, **options)
    with pytest.raises(InvalidInput, match="pool_size"):
        PostgresPersistenceStore.from_url("postgresql://h/db", pool_size=0)
    with pytest.raises(InvalidInput, match="PostgresPersistenceStore needs a database"):
        PostgresPersistenceStore(SqlitePersistenceStore.from_url(url).database)


# -- data --------------------------------------------------------------------------------


async def test_node_id_and_payloads_round_trip(make: Make) -> None:
    store = make()
    written = [
        envelope(step=2, node_id="node-🦀", payload={"a": [1, 2.5, None]}),
        envelope(step=1, node_id=None, payload="x"),
    ]
    await store.append_many(written)
    trace = await store.load("trace-1")
    assert trace is not None and [e.node_id for e in trace.events] == [None, "node-🦀"]
    assert trace.events == written[::-1]
    assert [e async for e in store.iter_events("trace-1")] == written


async def test_snapshot_is_in_append_order(make: Make) -> None:
    store = make()
    for step in (3, 1, 2, 1):
        await store.append(envelope(step=step, kind=f"k{step}"))
    items = [Intervention(target_node=f"n{i}", timestamp_ms=i) for i in (2, 1, 3)]
    for item in items:
        await store.save_intervention("trace-1", item)
    await store.resume("trace-1", 2**64 - 1)
    snap = await store.snapshot("trace-1")
    assert snap is not None
    assert [decode_envelope(b, "trace-1", "Flow").step for b in snap.blobs] == [3, 1, 2, 1]
    assert [decode_intervention(b) for b in snap.interventions] == items
    assert (snap.circuit, snap.version, snap.completion, snap.resumed) == (
        "Flow",
        "1.0",
        None,
        2**64 - 1,
    )
    assert snap.created_ms <= snap.updated_ms
    assert await store.snapshot("unknown") is None


async def test_expired_traces_are_absent_and_purged(make: Make) -> None:
    store = make(ttl=0.05)
    await store.append(envelope("old", step=1))
    await asyncio.sleep(0.1)
    assert await store.snapshot("old") is None
    assert (await store.check())["traces_expired"] == 1
    assert await store.purge_expired() == 1
    report = await store.check()
    assert (report["traces"], report["traces_expired"], report["warnings"]) == (0, 0, [])


async def test_corrupt_rows_raise_corrupt_record_and_hide_no_other_trace(make: Make) -> None:
    store = make()
    for trace_id in ("bad-blob", "bad-state", "good"):
        await store.append(envelope(trace_id, step=1))
    async with store.database.transaction(write=True) as tx:
        await tx.execute("UPDATE rc_envelopes SET blob = $1 WHERE trace_id = 'bad-blob'", b"\xc1")
        await tx.execute("UPDATE rc_traces SET completion = 'Bogus' WHERE trace_id = 'bad-state'")
    with pytest.raises(CorruptRecord, match="rc_envelopes 'bad-blob'"):
        await store.load("bad-blob")
    with pytest.raises(CorruptRecord, match="rc_traces 'bad-state'"):
        await store.load("bad-state")
    assert {s.trace_id async for s in store.iter_traces()} == {"bad-blob", "good"}
    assert await store.load("good") is not None


async def test_check_reports_the_database_and_settings(make: Make) -> None:
    store = make(ttl=30, completed_ttl=5, idempotency_window=60)
    managed: ManagedPersistenceStore = store  # the contracts, checked by mypy
    durable: DurableTraces = store
    assert isinstance(managed, PersistenceStore) and durable.database is store.database
    await store.append(envelope(step=1))
    report = await store.check()
    assert report["server"].startswith(
        "PostgreSQL" if report["dialect"] == "postgres" else "SQLite"
    )
    assert (report["schema_version"], report["traces"], report["warnings"]) == (1, 1, [])
    assert (report["ttl_ms"], report["completed_ttl_ms"]) == (30_000, 5_000)
    assert report["idempotency_window_ms"] == 60_000


async def test_calls_after_aclose_raise_store_closed(make: Make) -> None:
    store = make()
    await store.aclose()  # before its first call: it never connects
    with pytest.raises(StoreClosed):
        await store.load("trace-1")
    with pytest.raises(StoreClosed):
        await store.check()


async def test_nul_characters_and_long_ids_are_refused_on_postgres(postgres_url: str) -> None:
    async with PostgresPersistenceStore.from_url(postgres_url) as store:
        with pytest.raises(InvalidInput, match="trace_id cannot hold NUL"):
            await store.append(envelope("a\x00b"))
        with pytest.raises(InvalidInput, match="circuit cannot hold NUL"):
            await store.append(envelope(circuit="C\x00"))
        with pytest.raises(InvalidInput, match="trace_id is 1025 bytes, over 1024"):
            await store.append(envelope("x" * 1025))
        with pytest.raises(InvalidInput, match="idempotency_key is 1026 bytes"):
            await store.append(envelope("x" * 1024), idempotency_key="🦀" * 256 + "ab")
        assert [s async for s in store.iter_traces()] == []
        await store.append(envelope("x" * 1024), idempotency_key="🦀" * 256)


# -- the checks, the same on both dialects (PostgreSQL's in its functions) ---------------


async def test_an_expired_trace_is_absent_to_writes_and_replaced_whole_by_an_append(
    make: Make,
) -> None:
    store = make(ttl=0.2)
    await store.append(envelope(step=1, circuit="Old"), "k")
    await store.save_intervention("trace-1", Intervention(target_node="n", timestamp_ms=1))
    await store.resume("trace-1", 3)
    await store.complete("trace-1", CompletionState.SUCCESS)
    await asyncio.sleep(0.3)
    item = Intervention(target_node="m", timestamp_ms=2)
    refused: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.resume("trace-1", 1),
        lambda: store.complete("trace-1", CompletionState.FAULT),
        lambda: store.save_intervention("trace-1", item),
    ]
    for write in refused:
        with pytest.raises(TraceNotFound):
            await write()
    assert (await store.check())["traces_expired"] == 1  # a refused write leaves its rows
    await store.append(envelope(step=2, circuit="New"), "k")  # its key went with it: applied
    trace = await store.load("trace-1")
    assert trace is not None and (trace.circuit, [e.step for e in trace.events]) == ("New", [2])
    assert (trace.interventions, trace.resumed_from_step, trace.completion) == ([], None, None)
    assert (await store.check())["traces_expired"] == 0


async def test_a_key_replays_before_the_checks_until_the_window_ends(make: Make) -> None:
    store = make(idempotency_window=0.3)
    await store.append(envelope(step=1), "k")
    item = Intervention(target_node="n", timestamp_ms=1)
    for _ in range(2):
        await store.save_intervention("trace-1", item, "i")
    await store.complete("trace-1", CompletionState.SUCCESS)
    await store.append(envelope(step=1, circuit="Other"), "k")  # a retry: neither refusal
    with pytest.raises(TraceCompleted):
        await store.append(envelope(step=2), "k2")
    trace = await store.load("trace-1")
    assert trace is not None and len(trace.events) == len(trace.interventions) == 1
    await asyncio.sleep(0.4)
    with pytest.raises(TraceCompleted):  # forgotten: checked again, and refused
        await store.append(envelope(step=1), "k")
    await store.save_intervention("trace-1", item, "i")
    assert len((await store.load("trace-1") or _missing()).interventions) == 2


async def test_postgres_writes_are_one_statement_each(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresPersistenceStore.from_url(postgres_url) as store:
        database, sent = store.database, list[str]()
        call = database.call

        async def counted(sql: str, *args: Any) -> Any:
            sent.append(sql.split("(")[0].rsplit(" ", 1)[1])
            return await call(sql, *args)

        monkeypatch.setattr(database, "call", counted)
        monkeypatch.setattr(database, "transaction", None)  # a transaction fails the test
        await store.append(envelope(step=1))
        await store.append_many([envelope(step=2), envelope(step=3)], "k")
        await store.save_intervention("trace-1", Intervention(target_node="n", timestamp_ms=1))
        await store.resume("trace-1", 2)
        await store.complete("trace-1", CompletionState.SUCCESS)
        monkeypatch.undo()
        assert sent == ["rc_append", "rc_append", "rc_intervene", "rc_resume", "rc_complete"]
        trace = await store.load("trace-1")
        assert trace is not None and [e.step for e in trace.events] == [1, 2, 3]
        assert trace.completion is CompletionState.SUCCESS and trace.resumed_from_step == 2


# -- the durable tier --------------------------------------------------------------------


async def _through_the_contract(store: SqlPersistenceStore, trace_id: str) -> None:
    await store.append_many([envelope(trace_id, step=2), envelope(trace_id, step=1)])
    await store.append(envelope(trace_id, step=1, version="1.1", node_id="n"), "k1")
    await store.save_intervention(trace_id, Intervention(target_node="n", timestamp_ms=1), "k2")
    await store.resume(trace_id, 7)
    await store.complete(trace_id, CompletionState.FAULT)
    await store.save_intervention(trace_id, Intervention(target_node="m", timestamp_ms=2))


def _changes(trace_id: str) -> list[TraceChange]:
    """The changes a cache would record for `_through_the_contract`, a second ago."""
    at = int(time.time() * 1000) - 1000
    first = tuple(encode_envelope(envelope(trace_id, step=s)) for s in (2, 1))
    second = (encode_envelope(envelope(trace_id, step=1, version="1.1", node_id="n")),)
    item = encode_intervention(Intervention(target_node="n", timestamp_ms=1))
    later = encode_intervention(Intervention(target_node="m", timestamp_ms=2))
    return [
        Appended(trace_id, "Flow", "1.0", 1, first, at + 0),
        Appended(trace_id, "Flow", "1.1", 3, second, at + 1, key="k1"),
        Intervened(trace_id, 1, item, at + 2, key="k2"),
        Resumed(trace_id, 7, at + 3),
        Completed(trace_id, "Fault", at + 4),
        Intervened(trace_id, 2, later, at + 5),
        Appended("gone", "Flow", "1.0", 1, first, at + 6),
        Deleted("gone"),
    ]


def _renamed(trace: PersistedTrace | None, trace_id: str) -> dict[str, Any]:
    assert trace is not None
    dumped = trace.model_dump()
    for event in dumped["events"]:
        event["trace_id"] = trace_id
    return dumped | {"trace_id": trace_id}


async def test_apply_changes_twice_is_once_and_matches_the_contract(make: Make) -> None:
    store = make()
    await _through_the_contract(store, "direct")
    changes = _changes("mirrored")
    for _ in range(2):  # the same changes applied twice, as a flusher retrying would
        async with store.database.transaction(write=True) as tx:
            await store.apply_changes(tx, changes)
    async with store.database.transaction(write=True) as tx:
        await store.apply_changes(tx, _changes("once"))
    direct, mirrored = await store.load("direct"), await store.load("mirrored")
    assert _renamed(mirrored, "x") == _renamed(direct, "x")
    assert _renamed(await store.load("once"), "x") == _renamed(mirrored, "x")
    assert await store.load("gone") is None
    listed = {
        s.trace_id: s.model_dump(exclude={"trace_id", "updated_ms"})
        async for s in store.iter_traces()
    }
    assert listed.keys() == {"direct", "mirrored", "once"}
    assert listed["direct"] == listed["mirrored"] == listed["once"]
    # The mirrored keys are remembered: a retry through the contract is applied once.
    with pytest.raises(TraceCompleted):
        await store.append(envelope("mirrored", step=9))
    await store.save_intervention("mirrored", Intervention(target_node="n", timestamp_ms=1), "k2")
    assert len((await store.load("mirrored") or _missing()).interventions) == 2


def _missing() -> PersistedTrace:
    raise AssertionError("trace missing")


async def test_apply_outbox_applies_a_batch_once(make: Make) -> None:
    store = make()
    await store.start()  # a flusher starts its store: apply_outbox needs the tables
    changes = _changes("t")
    apply = store.apply_changes
    assert await store.database.apply_outbox("shard-0", 1, 1, changes, apply) == len(changes)
    assert await store.database.apply_outbox("shard-0", 1, 1, changes, apply) == 0
    assert await store.database.apply_outbox("shard-0", 1, 5, changes[4:], apply) == 0
    trace = await store.load("t")
    assert trace is not None and [e.step for e in trace.events] == [1, 1, 2]
    assert trace.completion is CompletionState.FAULT and trace.resumed_from_step == 7


# -- concurrency -------------------------------------------------------------------------


@pytest.mark.parametrize("keyed", [False, True], ids=["in place", "checked under the lock"])
async def test_concurrent_appends_and_a_complete_keep_exactly_the_accepted(
    postgres_url: str, keyed: bool
) -> None:
    writers = PostgresPersistenceStore.from_url(postgres_url, pool_size=16)
    completer = PostgresPersistenceStore.from_url(postgres_url, pool_size=1)
    async with writers, completer:
        await writers.append(envelope(step=0, kind="Enter"))
        first_accepted, completed = asyncio.Event(), asyncio.Event()

        async def append(n: int) -> int | None:
            if n >= 24:  # these start once the trace is completed: all must be refused
                await completed.wait()
            try:
                await writers.append(envelope(step=1, payload=n), f"k{n}" if keyed else None)
            except TraceCompleted:
                return None
            first_accepted.set()
            return n

        async def complete() -> None:
            await first_accepted.wait()  # races the appends still under way
            await completer.complete("trace-1", CompletionState.CANCELLED)
            completed.set()

        results, _ = await asyncio.gather(
            asyncio.gather(*(append(n) for n in range(32))), complete()
        )
        accepted = sorted(n for n in results if n is not None)
        trace = await completer.load("trace-1")
        assert trace is not None and trace.completion is CompletionState.CANCELLED
        assert sorted(e.payload for e in trace.events[1:]) == accepted  # type: ignore[type-var]
        assert accepted and max(accepted) < 24
        assert results[24:] == [None] * 8


async def test_writers_wait_for_each_other_and_lose_nothing(postgres_url: str) -> None:
    stores = [PostgresPersistenceStore.from_url(postgres_url, pool_size=4) for _ in range(4)]
    try:
        calls: list[Awaitable[None]] = [
            stores[n % 4].append(envelope("fresh", step=n, payload=n)) for n in range(32)
        ]
        await asyncio.gather(*calls)  # the first appends race to create the trace
        trace = await stores[0].load("fresh")
        assert trace is not None and [e.payload for e in trace.events] == list(range(32))
    finally:
        for store in stores:
            await store.aclose()


async def test_a_pool_of_one_serves_concurrent_and_cancelled_calls(postgres_url: str) -> None:
    async with PostgresPersistenceStore.from_url(postgres_url, pool_size=1) as store:
        await store.append(envelope(step=0))
        calls: list[Awaitable[Any]] = [store.append(envelope(step=n)) for n in range(1, 11)]
        await asyncio.gather(*calls, *(store.load("trace-1") for _ in range(4)))
        cancelled = asyncio.create_task(store.append(envelope(step=99)))
        await asyncio.sleep(0)  # sent, not answered
        cancelled.cancel()
        with suppress(asyncio.CancelledError):
            await cancelled
        await store.append(envelope(step=11))
        trace = await store.load("trace-1")
        assert trace is not None
        steps = [e.step for e in trace.events]
        assert steps in (list(range(12)), [*range(11), 99, 11], [*range(12), 99])


async def test_a_write_waiting_past_the_timeout_is_unavailable_and_then_works(
    postgres_url: str,
) -> None:
    holder = PostgresPersistenceStore.from_url(postgres_url)
    waiter = PostgresPersistenceStore.from_url(postgres_url, timeout=0.3)
    async with holder, waiter:
        await waiter.append(envelope(step=1))
        async with holder.database.transaction(write=True) as tx:
            await tx.execute("SELECT 1 FROM rc_traces WHERE trace_id = 'trace-1' FOR UPDATE")
            with pytest.raises(StoreUnavailable, match=r"no reply within 0\.3s"):
                await waiter.append(envelope(step=2))
        await waiter.append(envelope(step=3))
        trace = await waiter.load("trace-1")
        assert trace is not None and [e.step for e in trace.events] == [1, 3]
