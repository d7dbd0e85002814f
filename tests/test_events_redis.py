"""What only the Redis event store can show: its projection against the pure functions,
slots, expiry, retries after lost replies, lost scripts, corrupt data and a stopped server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import fakeredis
import msgpack
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from redis_checkpoint.conformance.aion import (
    TOKEN,
    T,
    act,
    can,
    child_started,
    completed,
    failed_at,
    rec,
    reopened,
    rid,
    started,
    wid,
)
from redis_checkpoint.connection import close
from redis_checkpoint.events import (
    BackendError,
    CorruptRecord,
    EventBase,
    InMemoryEventStore,
    RedisEventStore,
    SequenceConflict,
    SerializationError,
    TimerId,
    WorkflowFilter,
    dump_event,
)
from redis_checkpoint.events.stored import encode_event
from redis_checkpoint.scripts import Reply

from . import conftest
from .conftest import fresh_prefix, record_script_calls


@pytest.fixture(params=["fakeredis", "redis", "valkey", "redis-cluster", "valkey-cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    redis = conftest.client(request, request.param)
    yield redis
    await close(redis)


@pytest.fixture
def store(client: Redis) -> RedisEventStore:
    return RedisEventStore(client, prefix=fresh_prefix(), shards=8)


def random_history(rng: random.Random, wf: UUID, children: list[UUID]) -> list[EventBase]:
    """A history of lifecycle churn: starts, continuations, ends, reopens, children."""
    steps: list[Callable[[int], EventBase]] = [
        lambda s: started(s, wf, f"type-{s}", run=rid(1000 + s), k=s),
        lambda s: completed(s, wf),
        lambda s: failed_at(s, wf, s),
        lambda s: reopened(s, wf),
        lambda s: can(s, wf),
        lambda s: act(s, wf, "work"),
        lambda s: child_started(s, wf, rng.choice(children)),
    ]
    return [rng.choice(steps)(seq) for seq in range(1, rng.randint(1, 12))]


async def test_projection_matches_the_reference_store(store: RedisEventStore) -> None:
    """The append script's incremental projection answers every listing exactly as the
    in-memory store, which recomputes from full histories, on random lifecycle histories."""
    rng = random.Random(7)
    reference = InMemoryEventStore()
    ids = [wid() for _ in range(30)]
    for wf in ids:
        history = random_history(rng, wf, ids)
        done = 0
        while done < len(history):  # in random batch sizes, comparing after each batch
            batch = history[done : done + rng.randint(1, 4)]
            for backend in (store, reference):
                await backend.append(TOKEN, wf, batch, done)
            done += len(batch)
            assert await store.list_active() == await reference.list_active()
        for backend in (store, reference):
            assert await backend.read_history(wf) == history
    assert await store.list_workflow_ids() == await reference.list_workflow_ids()
    assert await store.query(WorkflowFilter()) == await reference.query(WorkflowFilter())
    for parent in ids[:10]:
        wanted = WorkflowFilter(parent=parent)
        assert await store.query(wanted) == await reference.query(wanted)
    for wf in ids:
        assert await _chain(store, wf) == await _chain(reference, wf)


async def _chain(store: Any, wf: UUID) -> Any:
    try:
        return await store.read_run_chain(wf)
    except BackendError as exc:
        return str(exc)


async def test_every_call_touches_one_cluster_slot(store: RedisEventStore) -> None:
    calls = record_script_calls(store)
    parent, child = wid(), wid()
    await store.append(TOKEN, parent, [started(1, parent), child_started(2, parent, child)], 0)
    await store.append(TOKEN, parent, [completed(3, parent)], 2)
    await store.schedule_timer(parent, TimerId.named("t"), T(5))
    await store.retire_timer(parent, TimerId.named("t"), T(5))
    await store.put_package(rec("checkout", "a" * 64, b"x", 1))
    await store.put_package_route("checkout", "b" * 64)  # one command: atomic as it is
    await store.delete_package("checkout", "a" * 64)
    assert [name for name, _ in calls] == [
        "append_events",
        "append_events",
        "ZADD",
        "retire_timer",
        "put_package",
        "HSET",
        "delete_package",
    ]
    for name, keys in calls:
        assert len({key_slot(k.encode()) for k in keys}) == 1, name


async def test_completed_ttl_expires_terminal_workflows_and_reopen_keeps_them(
    client: Redis,
) -> None:
    store = RedisEventStore(client, prefix=fresh_prefix(), completed_ttl=60)
    wf, child = wid(), wid()
    keys = store.keys(wf)
    await store.append(TOKEN, wf, [started(1, wf), child_started(2, wf, child)], 0)

    async def ttls() -> list[int]:
        return [await client.pttl(k) for k in keys.own]

    assert await ttls() == [-1, -1, -1, -1]
    await store.append(TOKEN, wf, [failed_at(3, wf, 3)], 2)
    assert all(0 < ttl <= 60_000 for ttl in await ttls())
    await store.append(TOKEN, wf, [reopened(4, wf)], 3)
    assert await ttls() == [-1, -1, -1, -1]
    await store.append(TOKEN, wf, [completed(5, wf)], 4)
    assert all(0 < ttl <= 60_000 for ttl in await ttls())


async def test_expired_workflows_leave_the_indexes(client: Redis) -> None:
    store = RedisEventStore(client, prefix=fresh_prefix(), shards=2, completed_ttl=0.05)
    done, running = wid(), wid()
    await store.append(TOKEN, done, [started(1, done), completed(2, done)], 0)
    await store.append(TOKEN, running, [started(1, running)], 0)
    await asyncio.sleep(0.2)  # the server's own expiry, not ours
    if isinstance(client, fakeredis.FakeAsyncRedis):
        await client.pexpire(store.keys(done).meta, 1)  # fakeredis expires by wall clock too
        await asyncio.sleep(0.01)
    assert await store.read_history(done) == []
    assert await store.list_workflow_ids() == [running]
    assert await client.zscore(store.keys(done).workflows, str(done)) is None  # cleaned up
    assert [s.workflow_id for s in await store.query(WorkflowFilter())] == [running]
    await store.append(TOKEN, done, [started(1, done)], 0)  # the id is free again
    assert set(await store.list_active()) == {done, running}


async def test_forgetting_an_expired_parent_drops_its_links(client: Redis) -> None:
    store = RedisEventStore(client, prefix=fresh_prefix(), shards=1, completed_ttl=60)
    parent, child, other = wid(), wid(), wid()
    await store.append(TOKEN, parent, [started(1, parent), child_started(2, parent, child)], 0)
    await store.append(TOKEN, other, [started(1, other), child_started(2, other, child)], 0)
    links = store.keys(parent).parents
    assert await client.zcard(links) == 2
    await store.append(TOKEN, parent, [completed(3, parent)], 2)
    await client.delete(*store.keys(parent).own)  # as if completed_ttl ran out
    assert parent not in await store.list_workflow_ids()
    assert await client.zrange(links, 0, -1) == [f"{child}{other}".encode()]


async def test_script_recognises_its_own_replayed_call(store: RedisEventStore) -> None:
    wf = wid()
    keys = store.keys(wf)
    event = started(1, wf)
    argv = (b"producer", 1, keys.workflow_id, 0, "", "", 1, "Started", 1, "checkout", "{}")
    assert await store._script("append_events", keys.script, argv) == [0, b"1"]
    assert await store._script("append_events", keys.script, argv) == [Reply.DUPLICATE, b""]
    with pytest.raises(SequenceConflict):  # a different call at the same head is a conflict
        await store.append(TOKEN, wf, [event], 0)
    assert await client_len(store, wf) == 1


async def client_len(store: RedisEventStore, wf: UUID) -> int:
    return int(await store.redis.xlen(store.keys(wf).history))


async def test_undecodable_event_is_serialization_error_naming_the_key(
    store: RedisEventStore, client: Redis
) -> None:
    victim, bystander = wid(), wid()
    await store.append(TOKEN, victim, [started(1, victim)], 0)
    await store.append(TOKEN, bystander, [started(1, bystander)], 0)
    await client.xadd(store.keys(victim).history, {"e": b"not json"}, id="0-2")
    with pytest.raises(SerializationError, match=str(victim)):
        await store.read_history(victim)
    assert await store.read_history_from(victim, 1, limit=1) == [started(1, victim)]
    assert len(await store.read_history(bystander)) == 1


async def test_wrong_type_key_is_a_backend_error_naming_it(
    store: RedisEventStore, client: Redis
) -> None:
    victim, bystander = wid(), wid()
    keys = store.keys(victim)
    await client.set(keys.meta, "garbage")
    with pytest.raises(BackendError, match=r"corrupt record at key .*:m'"):
        await store.append(TOKEN, victim, [started(1, victim)], 0)
    await client.delete(keys.meta)
    await client.set(keys.history, "garbage")
    with pytest.raises(BackendError, match=r"corrupt record at key .*:h'"):
        await store.read_history(victim)
    await store.append(TOKEN, bystander, [started(1, bystander)], 0)


async def test_foreign_stream_entries_fail_the_append_before_anything_is_written(
    store: RedisEventStore, client: Redis
) -> None:
    wf = wid()
    keys = store.keys(wf)
    await client.xadd(keys.history, {"e": b"x"}, id="0-9")
    with pytest.raises(BackendError, match="corrupt record"):
        await store.append(TOKEN, wf, [started(1, wf), act(2, wf, "a")], 0)
    assert await client.exists(keys.meta, keys.runs) == 0
    assert await client.xlen(keys.history) == 1


async def test_from_url_fakeredis() -> None:
    async with RedisEventStore.from_url("fakeredis://") as store:
        wf = wid()
        await store.append(TOKEN, wf, [started(1, wf)], 0)
        assert await store.list_active() == [wf]


async def test_many_first_calls_at_once_share_one_config_check(client: Redis) -> None:
    """More concurrent first calls than the client's pool holds (100 connections)."""
    store = RedisEventStore(client, prefix=fresh_prefix())
    workflows = [wid() for _ in range(300)]
    await asyncio.gather(
        *(store.schedule_timer(wf, TimerId.anonymous(1), T(1)) for wf in workflows)
    )
    assert len(await store.expired_timers(T(1))) == 300


async def test_corrupt_listing_data_is_corrupt_record_of_the_events_tree(
    store: RedisEventStore, client: Redis
) -> None:
    wf = wid()
    await store.append(TOKEN, wf, [started(1, wf)], 0)
    keys = store.keys(wf)
    await client.zadd(keys.workflows, {"not a uuid": 0})
    with pytest.raises(CorruptRecord, match="workflows"):
        await store.list_workflow_ids()
    await client.zrem(keys.workflows, "not a uuid")
    await client.hset(keys.meta, "status", "Sleeping")
    with pytest.raises(CorruptRecord, match=":m"):
        await store.query(WorkflowFilter())
    await client.hset(f"{{{store.prefix}:pkg}}:archives", "not json", b"x")
    with pytest.raises(CorruptRecord, match="archives"):
        await store.list_packages()


async def test_histories_in_the_json_form_of_release_0_1_still_read(
    store: RedisEventStore, client: Redis
) -> None:
    """Release 0.1.0 kept each event as Aion's JSON in field `e`; its histories read back,
    also with events of the compact form appended after them."""
    wf, child = wid(), wid()
    old = [started(1, wf), act(2, wf, "charge"), child_started(3, wf, child), can(4, wf)]
    await store.append(TOKEN, wf, old, 0)  # the projection and indexes, as 0.1.0 kept them
    history = store.keys(wf).history
    await client.delete(history)
    for event in old:
        await client.xadd(history, {"e": dump_event(event).encode()}, id=f"0-{event.seq}")
    new = [started(5, wf, run=rid(5), parent=rid(1)), act(6, wf, "ship")]
    await store.append(TOKEN, wf, new, 4)
    assert await store.read_history(wf) == old + new
    assert await store.read_history_from(wf, 3, limit=3) == old[2:] + new[:1]
    assert [run.run_id for run in await store.read_run_chain(wf)] == [rid(1), rid(5)]
    entries = await client.execute_command("XRANGE", history, "-", "+")  # type: ignore[no-untyped-call]
    fields = [set(entry[1]) for entry in entries]
    assert fields == [{b"e"}] * 4 + [{b"c"}] * 2


def _bad_run_id(wf: UUID) -> bytes:
    """A stored WorkflowStarted whose run id is 3 bytes, not a UUID's 16."""
    stored = msgpack.unpackb(encode_event(started(2, wf)))
    return msgpack.packb([*stored[:4], b"abc", *stored[5:]])


@pytest.mark.parametrize(
    ("entry_id", "fields"),
    [
        ("0-2", lambda wf: {"x": encode_event(started(2, wf))}),  # a field this store never writes
        ("0-2", lambda wf: {"c": b"\xc1"}),  # not msgpack
        ("0-2", lambda wf: {"c": msgpack.packb({0: 8, 1: 0})}),  # a map, not an array
        ("0-2", lambda wf: {"c": msgpack.packb([-1, 0])}),  # no such event code
        ("0-2", lambda wf: {"c": _bad_run_id(wf)}),
        ("1-2", lambda wf: {"c": encode_event(started(2, wf))}),  # an id this store never writes
        ("0-2", lambda wf: {"e": b'{"type":"WorkflowStarted","data":{}}'}),
    ],
)
async def test_foreign_history_entries_are_serialization_errors(
    store: RedisEventStore, client: Redis, entry_id: str, fields: Callable[[UUID], Any]
) -> None:
    victim, bystander = wid(), wid()
    await store.append(TOKEN, victim, [started(1, victim)], 0)
    await store.append(TOKEN, bystander, [started(1, bystander)], 0)
    await client.xadd(store.keys(victim).history, fields(victim), id=entry_id)
    for read in (store.read_history(victim), store.read_history_from(victim, 2)):
        with pytest.raises(SerializationError, match=str(victim)):
            await read
    assert await store.read_history(bystander) == [started(1, bystander)]
