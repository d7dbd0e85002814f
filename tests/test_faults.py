"""Faults a user meets in production, on real servers: a stalled server, a refused port,
TLS against a plain port, connections killed mid-call, replies lost on a hot trace, an
application's own retry, ACL refusals, and a closed store. Each test asserts what the user
would notice: which exception, how soon, and what ends up stored.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from redis_checkpoint import (
    CompletionState,
    CorruptRecord,
    Intervention,
    PersistenceError,
    RedisPersistenceStore,
    StoreUnavailable,
)
from redis_checkpoint.conformance.aion import (
    TOKEN,
    T,
    act,
    child_started,
    completed,
    payload,
    rec,
    reopened,
    started,
    visibility,
    wid,
)
from redis_checkpoint.conformance.checkpoints import envelope
from redis_checkpoint.conformance.servers import ServerProcess, free_port
from redis_checkpoint.connection import DEFAULT_TIMEOUT, client_defaults
from redis_checkpoint.events import (
    ListWorkflowsFilter,
    RedisEventStore,
    StoreError,
    TimerId,
    WorkflowFilter,
)
from redis_checkpoint.failures import Closed, Corrupt, Denied, ErrorTree

from .conftest import ACL_COMMANDS, acl_rules, fresh_prefix
from .proxy import CuttingProxy

E = TypeVar("E", bound=Exception)
C = TypeVar("C", RedisPersistenceStore, RedisEventStore, Redis)
Store = RedisPersistenceStore | RedisEventStore
ServerFactory = Callable[[str], ServerProcess]

TRACE = "trace-1"
UNKNOWN = "may or may not have been applied"

# The commands both stores need, for a user of one prefix's keys only, database 0 (another
# database also needs +select): the README's ACL line (conftest.ACL_COMMANDS). Found by
# running both stores' whole API as that user, on a fresh server, then taking each command
# out in turn (test_each_command_missing_from_the_acl_is_permission_denied): each breaks a
# flow. Commands Lua scripts run count too. Some serve one path only: +info `check()`,
# +type naming a corrupt key, +ping redis-py's health check (after 30 s idle),
# +script|load a server that lost its scripts (restart, failover, SCRIPT FLUSH).
LEAST_PRIVILEGE = ACL_COMMANDS

# A health check (PING) before nearly every command, for the flows of an ACL user. Without
# redis-py's CLIENT SETINFO at connect: it pipelines two, and with so short an interval a
# PING can go out before their replies are read, then take a refusal of SETINFO (by the ACL;
# Redis 7.0 has no SETINFO) for the PING's reply, and the connection fails.
HEALTH_CHECKS = {"health_check_interval": 0.001, "driver_info": None}


# -- one adapter per store: open it, write once, read once --


@dataclass(frozen=True)
class Kind:
    """A store as a user drives it: its exception tree, one write and one read."""

    name: str
    errors: ErrorTree
    base: type[Exception]

    def open(
        self,
        url: str,
        *,
        prefix: str,
        timeout: float = DEFAULT_TIMEOUT,
        client_options: Mapping[str, Any] | None = None,
    ) -> Store:
        if self.name == "checkpoints":
            return RedisPersistenceStore.from_url(
                url, prefix=prefix, timeout=timeout, client_options=client_options
            )
        return RedisEventStore.from_url(
            url, prefix=prefix, timeout=timeout, client_options=client_options
        )

    async def write(self, store: Store, n: int, size: int = 0) -> None:
        """Write number `n`: an envelope at step `n`, or the start of workflow `n` (with
        `size` more bytes of payload)."""
        label = f"write-{n}" + "x" * size
        if isinstance(store, RedisPersistenceStore):
            await store.append(envelope(TRACE, step=n, payload=label))
        else:
            start = started(1, UUID(int=n)).model_copy(update={"input": payload(label)})
            await store.append(TOKEN, UUID(int=n), [start], 0)

    async def seen(self, store: Store, n: int) -> bool:
        """Whether write number `n` is stored, read through the store."""
        if isinstance(store, RedisPersistenceStore):
            trace = await store.load(TRACE)
            return trace is not None and any(e.step == n for e in trace.events)
        return len(await store.read_history(UUID(int=n))) == 1


CHECKPOINTS = Kind("checkpoints", RedisPersistenceStore.errors, PersistenceError)
EVENTS = Kind("events", RedisEventStore.errors, StoreError)
KINDS = [pytest.param(CHECKPOINTS, id="checkpoints"), pytest.param(EVENTS, id="events")]
SERVERS = ["redis-server", "valkey-server"]


class Opened:
    """What a test opens: stores and raw clients, all closed at teardown."""

    def __init__(self) -> None:
        self._open: list[RedisPersistenceStore | RedisEventStore | Redis] = []

    def add(self, thing: C) -> C:
        self._open.append(thing)
        return thing

    def store(self, kind: Kind, url: str, **options: Any) -> Store:
        store = kind.open(url, **options)
        self._open.append(store)
        return store

    def client(self, url: str) -> Redis:
        return self.add(Redis.from_url(url, **client_defaults(DEFAULT_TIMEOUT)))

    async def aclose(self) -> None:
        for thing in reversed(self._open):
            await thing.aclose()


@pytest.fixture
async def opened() -> AsyncIterator[Opened]:
    things = Opened()
    yield things
    await things.aclose()


async def fails_within(expected: type[E], call: Awaitable[object], bound: float) -> E:
    """The exception `call` raises, asserted to be `expected` and to come within `bound`
    seconds. Any other exception propagates and fails the test as it is."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(call, bound + 10)  # a hang guard; the bound is asserted below
    except expected as exc:
        elapsed = time.monotonic() - start
        assert elapsed < bound, f"{type(exc).__name__} after {elapsed:.2f}s, over {bound}s"
        return exc
    raise AssertionError(f"no {expected.__name__} raised")


def assert_in_tree(exc: BaseException, kind: Kind) -> None:
    """A store's own class, never a raw redis-py or ssl exception."""
    assert isinstance(exc, kind.base), f"{exc!r} is outside the {kind.name} tree"
    assert not isinstance(exc, RedisError | ssl.SSLError), repr(exc)


async def command(client: Redis, *args: str) -> Any:
    """One raw command's reply (redis-py types a pipeline's `execute_command`, not the
    client's)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.execute_command(*args)
        [reply] = await pipe.execute()
    return reply


async def data_keys(client: Redis, prefix: str) -> int:
    return len([key async for key in client.scan_iter(match=f"*{prefix}*")])


# -- 1-3: a server that does not answer, is not there, or speaks no TLS --


@pytest.mark.parametrize("kind", KINDS)
async def test_stalled_server_is_unavailable_within_the_timeout(
    server_factory: ServerFactory, opened: Opened, kind: Kind
) -> None:
    server = server_factory("redis-server")
    prefix = fresh_prefix()
    store = opened.store(kind, server.url, prefix=prefix, timeout=0.5)
    await kind.write(store, 1)
    fresh = opened.store(kind, server.url, prefix=prefix, timeout=0.5)  # not connected yet
    server.pause()  # the port still accepts connections; nothing answers
    try:
        unavailable = kind.errors.unavailable
        error = await fails_within(unavailable, kind.write(store, 2), 0.5 + 0.5)
        assert UNKNOWN in str(error)
        await fails_within(unavailable, kind.seen(store, 1), 0.5 + 0.5)
        await fails_within(unavailable, kind.seen(fresh, 1), 0.5 + 0.5)  # its first call
    finally:
        server.resume()
    await kind.write(store, 3)  # both stores work again, without being reopened
    assert await kind.seen(store, 1) and await kind.seen(store, 3)
    assert await kind.seen(fresh, 3)
    await kind.write(fresh, 4)
    assert await kind.seen(store, 4)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_server_ends_every_concurrent_call_at_its_deadline(
    server_factory: ServerFactory, opened: Opened, kind: Kind
) -> None:
    """Many calls at once on a stalled server, each store's connections made afresh as
    calls time out: every call ends at its deadline. (With redis-py's socket timeout, its
    `asyncio.wait_for` on Python 3.11 could swallow the deadline, and calls ran seconds on
    through reconnects and retries.)"""
    server = server_factory("redis-server")
    stores = [opened.store(kind, server.url, prefix=fresh_prefix(), timeout=0.5) for _ in range(8)]
    for store in stores:
        await kind.write(store, 1)
    server.pause()
    try:
        for round in range(6):  # 64 KiB writes: they fill the socket buffers
            calls = [kind.write(s, 10 * round + i, 2**16) for s in stores for i in range(8)]
            ends = await asyncio.gather(
                *(fails_within(kind.errors.unavailable, call, 0.5 + 0.5) for call in calls)
            )
            assert len(ends) == 64
    finally:
        server.resume()
    await kind.write(stores[0], 99)
    assert await kind.seen(stores[0], 99)


@pytest.mark.parametrize("kind", KINDS)
async def test_refused_port_is_unavailable_within_the_timeout(opened: Opened, kind: Kind) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = opened.store(kind, url, prefix=fresh_prefix(), timeout=0.5)
    error = await fails_within(kind.errors.unavailable, kind.write(store, 1), 0.5 + 2)
    assert "not sent" in str(error)  # no connection: it cannot have been applied
    await fails_within(kind.errors.unavailable, kind.seen(store, 1), 0.5 + 2)


@pytest.mark.parametrize("kind", KINDS)
async def test_tls_url_to_a_plain_server_fails_in_the_tree_within_the_timeout(
    real_server: ServerProcess, opened: Opened, kind: Kind
) -> None:
    url = f"rediss://127.0.0.1:{real_server.port}/0"  # the server speaks no TLS
    options = {"ssl_cert_reqs": "none"}
    store = opened.store(kind, url, prefix=fresh_prefix(), timeout=0.5, client_options=options)
    for call in (kind.write(store, 1), kind.seen(store, 1)):
        error = await fails_within(kind.base, call, 0.5 + 2)  # any class of the tree
        assert_in_tree(error, kind)


# -- 4-6: lost connections and lost replies are never applied twice --


async def kill_clients(url: str, stop: asyncio.Event, kills: Counter[str]) -> None:
    """`CLIENT KILL TYPE normal` every 20 ms until `stop`; it kills its own connection too,
    so each round reconnects."""
    admin = Redis.from_url(url)
    try:
        while not stop.is_set():
            try:
                killed = await command(admin, "CLIENT", "KILL", "TYPE", "normal")
                kills["rounds"] += 1
                kills["connections"] += int(killed)
            except (RedisError, OSError):
                kills["failed rounds"] += 1
            await asyncio.sleep(0.02)
    finally:
        await admin.aclose()


async def test_kill_storm_never_stores_an_append_twice(
    server_factory: ServerFactory, opened: Opened
) -> None:
    """Four stores, 32 writers each, append to one trace while every connection is killed
    every 20 ms. Envelopes carry 4 KB, so the server is busy enough that kills land between
    applying a pipeline and sending its replies: redis-py re-sends applied calls."""
    server = server_factory("redis-server")
    prefix = fresh_prefix()
    stores = [opened.add(RedisPersistenceStore.from_url(server.url, prefix=prefix)) for _ in "1234"]
    admin = opened.client(server.url)
    await stores[0].append(envelope(TRACE, step=0, payload="warm-up"))
    acknowledged, unknown = ["warm-up"], []
    tasks, appends = 32, 20

    async def writer(s: int, t: int) -> None:
        for i in range(appends):
            payload, pad = f"s{s}-t{t}-{i}", "x" * 4000
            try:
                await stores[s].append(envelope(TRACE, step=i + 1, payload=payload, node_id=pad))
            except StoreUnavailable as exc:
                assert UNKNOWN in str(exc)
                unknown.append(payload)
            else:
                acknowledged.append(payload)

    sent_before = await evalsha_calls(admin)
    stop, kills = asyncio.Event(), Counter[str]()
    killer = asyncio.create_task(kill_clients(server.url, stop, kills))
    try:
        await asyncio.gather(*(writer(s, t) for s in range(4) for t in range(tasks)))
    finally:
        stop.set()
        await killer
    executed = await evalsha_calls(admin) - sent_before
    trace = await stores[0].load(TRACE)
    assert trace is not None
    resent = executed - (len(trace.events) - 1)  # copies of applied calls, run again
    stored = Counter(e.payload for e in trace.events)
    duplicates = sum(n - 1 for n in stored.values())
    print(
        f"\nkill storm: {kills['rounds']} CLIENT KILL rounds closed {kills['connections']} "
        f"connections; {len(acknowledged) - 1} appends acknowledged, {len(unknown)} unknown, "
        f"{resent} re-sent copies of applied calls; {len(trace.events)} stored, "
        f"duplicates={duplicates}"
    )
    assert resent > 0, "no kill landed on a call in flight: the storm tested nothing"
    assert duplicates == 0, [p for p, n in stored.items() if n > 1]
    assert [p for p in acknowledged if p not in stored] == []  # nothing acknowledged is lost
    assert set(stored) <= {*acknowledged, *unknown}  # and nothing else appears


async def evalsha_calls(client: Redis) -> int:
    """EVALSHA calls the server has run so far."""
    stats = await client.info("commandstats")
    return int(stats["cmdstat_evalsha"]["calls"])


# The request the proxy cuts: the first call (it leaves alone) or the last (it leaves in the
# pipeline of the calls that queued up behind the first).
CUTS = ["first-call", "pipeline"]


@pytest.mark.parametrize("cut", CUTS)
async def test_hot_trace_with_a_lost_reply_stores_each_append_once(
    real_server: ServerProcess, opened: Opened, cut: str
) -> None:
    async with CuttingProxy(real_server.port) as proxy:
        store = opened.add(RedisPersistenceStore.from_url(proxy.url, prefix=fresh_prefix()))
        await store.append(envelope(TRACE, step=0, payload="warm-up"))
        proxy.cut_on = b"EVALSHA" if cut == "first-call" else b"payload-63"
        await asyncio.gather(
            *(store.append(envelope(TRACE, step=1, payload=f"payload-{i}")) for i in range(64))
        )
        assert proxy.cut_on is None  # the reply was cut
        proxy.cut_on = b"EVALSHA" if cut == "first-call" else b"node-63"
        await asyncio.gather(
            *(
                store.save_intervention(
                    TRACE, Intervention(target_node=f"node-{i}", timestamp_ms=i)
                )
                for i in range(64)
            )
        )
        assert proxy.cut_on is None
        trace = await store.load(TRACE)
    assert proxy.connections >= 3  # the client reconnected after each cut
    assert trace is not None
    payloads = Counter(e.payload for e in trace.events)
    nodes = Counter(i.target_node for i in trace.interventions)
    duplicates = sum(n - 1 for n in payloads.values()) + sum(n - 1 for n in nodes.values())
    print(f"\nhot trace ({cut} cut): {len(trace.events)} envelopes, duplicates={duplicates}")
    assert len(trace.events) == 1 + 64 and len(trace.interventions) == 64
    assert set(payloads) == {"warm-up", *(f"payload-{i}" for i in range(64))}
    assert set(nodes) == {f"node-{i}" for i in range(64)}
    assert duplicates == 0


@pytest.mark.parametrize("cut", CUTS)
async def test_hot_event_store_with_a_lost_reply_applies_each_append_once(
    real_server: ServerProcess, opened: Opened, cut: str
) -> None:
    async with CuttingProxy(real_server.port) as proxy:
        store = opened.add(RedisEventStore.from_url(proxy.url, prefix=fresh_prefix()))
        warm = wid()
        await store.append(TOKEN, warm, [started(1, warm)], 0)
        workflows = [wid() for _ in range(32)]
        proxy.cut_on = b"EVALSHA" if cut == "first-call" else b"hot-31"
        # Per workflow two appends in one gather: the second is fenced on the first's head.
        results = await asyncio.gather(
            *(
                call
                for n, wf in enumerate(workflows)
                for call in (
                    store.append(TOKEN, wf, [started(1, wf)], 0),
                    store.append(TOKEN, wf, [act(2, wf, f"hot-{n}")], 1),
                )
            ),
            return_exceptions=True,
        )
        assert proxy.cut_on is None  # the reply was cut
        histories = [await store.read_history(wf) for wf in workflows]
    assert [r for r in results if r is not None] == []  # no SequenceConflict, no error
    assert proxy.connections >= 2
    for n, (wf, history) in enumerate(zip(workflows, histories, strict=True)):
        assert history == [started(1, wf), act(2, wf, f"hot-{n}")]


@pytest.mark.parametrize("redis_retries", [True, False], ids=["redis-py-retries", "no-retries"])
async def test_application_retry_with_an_idempotency_key_stores_once(
    redis_server: ServerProcess, opened: Opened, redis_retries: bool
) -> None:
    options = {} if redis_retries else {"retry": Retry(NoBackoff(), 0)}
    async with CuttingProxy(redis_server.port) as proxy:
        store = opened.add(
            RedisPersistenceStore.from_url(proxy.url, prefix=fresh_prefix(), client_options=options)
        )
        await store.append(envelope(TRACE, step=0, payload="warm-up"))
        env = envelope(TRACE, step=1, payload="charged")
        proxy.cut_on = b"EVALSHA"
        try:
            await store.append(env, idempotency_key="k1")
            first = "acknowledged"  # redis-py re-sent it after the cut, dedup recognised it
        except StoreUnavailable as exc:
            assert UNKNOWN in str(exc)
            first = "unknown"
        assert proxy.cut_on is None
        assert first == ("acknowledged" if redis_retries else "unknown")
        await store.append(env, idempotency_key="k1")  # the application's retry
        once = await store.load(TRACE)
        await store.append(env, idempotency_key="k2")  # another key: another append
        twice = await store.load(TRACE)
    assert once is not None and [e.payload for e in once.events] == ["warm-up", "charged"]
    assert twice is not None
    assert [e.payload for e in twice.events] == ["warm-up", "charged", "charged"]


# -- 7: ACL refusals are PermissionDenied, naming the command; the least-privilege list --

USERS = {
    "reader": "on >pw ~* &* +@read +@connection -@write -evalsha -eval",
    "noscript": "on >pw ~* &* +@all -evalsha -eval -script",
    "nohmget": "on >pw ~* &* +@all -hmget",
}


async def acl_server(server_factory: ServerFactory, opened: Opened, kind: str) -> Redis:
    """A private server with the users of `USERS`; its admin client (the default user)."""
    server = server_factory(kind)
    admin = opened.client(server.url)
    for name, rules in USERS.items():
        await command(admin, "ACL", "SETUSER", name, *rules.split())
    return admin


def url_of(admin: Redis) -> str:
    kwargs = admin.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def as_user(user: str, password: str = "pw") -> dict[str, str]:
    return {"username": user, "password": password}


@pytest.mark.parametrize("user", ["reader", "noscript"])
@pytest.mark.parametrize("kind", KINDS)
async def test_acl_refused_write_is_permission_denied_naming_the_command(
    server_factory: ServerFactory, opened: Opened, kind: Kind, user: str
) -> None:
    admin = await acl_server(server_factory, opened, "redis-server")
    prefix = fresh_prefix()
    store = opened.store(kind, url_of(admin), prefix=prefix, client_options=as_user(user))
    error = await fails_within(kind.errors.denied, kind.write(store, 1), 2.0)
    assert isinstance(error, Denied) and not isinstance(error, Corrupt)
    assert_in_tree(error, kind)
    refused = "hsetnx" if user == "reader" else "evalsha"  # the first write a store sends
    assert f"'{refused}' command" in str(error).lower(), str(error)
    assert await admin.keys(f"{{{prefix}:*") == []  # no trace or workflow data written


@pytest.mark.parametrize("kind", KINDS)
async def test_acl_refused_listing_read_is_permission_denied_not_skipped(
    server_factory: ServerFactory, opened: Opened, kind: Kind
) -> None:
    admin = await acl_server(server_factory, opened, "redis-server")
    prefix = fresh_prefix()
    owner = opened.store(kind, url_of(admin), prefix=prefix)
    await kind.write(owner, 1)
    store = opened.store(kind, url_of(admin), prefix=prefix, client_options=as_user("nohmget"))

    async def listing() -> int:
        if isinstance(store, RedisPersistenceStore):
            return len([summary async for summary in store.iter_traces()])
        return len(await store.query(WorkflowFilter()))

    error = await fails_within(kind.errors.denied, listing(), 2.0)
    assert_in_tree(error, kind)
    assert "hmget" in str(error).lower(), str(error)


@pytest.mark.parametrize("kind", KINDS)
async def test_acl_read_only_user_reads_or_is_permission_denied(
    server_factory: ServerFactory, opened: Opened, kind: Kind
) -> None:
    """`reader` has `+@read +@connection` only: a read works, or says which command the
    ACL lacks; it is never a generic server error."""
    admin = await acl_server(server_factory, opened, "redis-server")
    prefix = fresh_prefix()
    await kind.write(opened.store(kind, url_of(admin), prefix=prefix), 1)
    reader = opened.store(kind, url_of(admin), prefix=prefix, client_options=as_user("reader"))
    try:
        found = await kind.seen(reader, 1)
    except Denied as exc:
        assert_in_tree(exc, kind)
        assert "permissions to run" in str(exc), str(exc)
    else:
        assert found


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_password_is_permission_denied_at_once(
    server_factory: ServerFactory, opened: Opened, kind: Kind
) -> None:
    admin = await acl_server(server_factory, opened, "redis-server")
    options = as_user("reader", "wrong")
    store = opened.store(kind, url_of(admin), prefix=fresh_prefix(), client_options=options)
    for call in (kind.seen(store, 1), kind.write(store, 1)):
        error = await fails_within(kind.errors.denied, call, 1.0)  # not retried to the deadline
        assert_in_tree(error, kind)


async def checkpoint_flow(url: str, prefix: str, options: Mapping[str, Any]) -> None:
    """Every method of the checkpoint store, including expiry, listing cleanup and the
    diagnosis of a corrupt key."""
    store = RedisPersistenceStore.from_url(
        url, prefix=prefix, shards=4, ttl=60, completed_ttl=30, client_options=options
    )
    short = RedisPersistenceStore.from_url(
        url, prefix=prefix, shards=4, ttl=0.02, client_options=options
    )
    try:
        await short.append(envelope("short-lived"))
        await store.append(envelope(TRACE, step=1))
        await store.append(envelope(TRACE, step=2), idempotency_key="k")
        await store.append_many([envelope(TRACE, step=3), envelope(TRACE, step=4)])
        await store.save_intervention(TRACE, Intervention(target_node="n", timestamp_ms=1))
        assert (await store.resume(TRACE, 2)).next_step == 3
        trace = await store.load(TRACE)
        assert trace is not None and len(trace.events) == 4
        assert len([e async for e in store.iter_events(TRACE)]) == 4
        await asyncio.sleep(0.05)  # short-lived expires: the listing drops it from the index
        assert [s.trace_id for s in [s async for s in store.iter_traces()]] == [TRACE]
        await store.append(envelope("other"))  # sweeps the expired index entries
        await store.complete(TRACE, CompletionState.SUCCESS)
        assert (await store.check())["traces_indexed"] == 2
        assert await store.delete(TRACE)
        assert await store.load(TRACE) is None
        with pytest.raises(CorruptRecord):  # needs TYPE to name the key
            await store.append(envelope("corrupt"), idempotency_key="x")
    finally:
        await store.aclose()
        await short.aclose()


async def event_flow(url: str, prefix: str, options: Mapping[str, Any]) -> None:
    """Every method of the event store, including expiry and listing cleanup."""
    store = RedisEventStore.from_url(
        url, prefix=prefix, shards=4, completed_ttl=60, client_options=options
    )
    short = RedisEventStore.from_url(
        url, prefix=prefix, shards=4, completed_ttl=0.02, client_options=options
    )
    try:
        parent, child, gone = wid(), wid(), wid()
        await short.append(TOKEN, gone, [started(1, gone), completed(2, gone)], 0)
        await store.append(TOKEN, parent, [started(1, parent), child_started(2, parent, child)], 0)
        await store.append(TOKEN, child, [started(1, child)], 0)
        await store.append(TOKEN, parent, [act(3, parent, "a"), completed(4, parent)], 2)
        await store.append(TOKEN, parent, [reopened(5, parent)], 4)
        assert len(await store.read_history(parent)) == 5
        assert len(await store.read_history_from(parent, 3, limit=1)) == 1
        assert len(await store.read_run_chain(parent)) == 1
        await asyncio.sleep(0.05)  # gone expires: the listing drops it from the indexes
        assert set(await store.list_workflow_ids()) == {parent, child}
        assert set(await store.list_active()) == {parent, child}
        assert len(await store.query(WorkflowFilter())) == 2
        assert [s.workflow_id for s in await store.query(WorkflowFilter(parent=parent))] == [child]
        timer = TimerId.named("t")
        await store.schedule_timer(parent, timer, T(1))
        assert len(await store.expired_timers(T(2))) == 1
        assert await store.retire_timer(parent, timer, T(1))
        await store.put_package(rec("checkout", "a" * 64, b"zip", 1))
        assert len(await store.list_packages()) == 1
        await store.put_package_route("checkout", "b" * 64)
        assert len(await store.list_package_routes()) == 1
        await store.delete_package("checkout", "a" * 64)
        await store.record_visibility(visibility(parent, 1))
        assert len(await store.list_workflows(ListWorkflowsFilter())) == 1
        assert await store.count_workflows(ListWorkflowsFilter()) == 1
    finally:
        await store.aclose()
        await short.aclose()


def least_privilege_rules(prefix: str, commands: str) -> list[str]:
    """The README's ACL rules for `prefix`, password `pw`, with `commands` only."""
    return acl_rules(prefix, "pw", commands)


@pytest.mark.parametrize("server_kind", SERVERS)
async def test_least_privilege_user_runs_both_stores_whole_api(
    server_factory: ServerFactory, opened: Opened, server_kind: str
) -> None:
    server = server_factory(server_kind)
    admin = opened.client(server.url)
    prefix = fresh_prefix()
    await command(admin, "ACL", "SETUSER", "lp", *least_privilege_rules(prefix, LEAST_PRIVILEGE))
    # A corrupt key to diagnose; a health check (PING) before nearly every command.
    corrupt = RedisPersistenceStore(admin, prefix=prefix, shards=4).keys("corrupt").meta
    await admin.set(corrupt, "not a hash")
    options = {**as_user("lp"), **HEALTH_CHECKS}
    await checkpoint_flow(server.url, prefix, options)
    await event_flow(server.url, prefix, options)


@pytest.mark.parametrize("missing", LEAST_PRIVILEGE.split())
async def test_each_command_missing_from_the_acl_is_permission_denied(
    server_factory: ServerFactory, opened: Opened, missing: str
) -> None:
    """Take one command out of LEAST_PRIVILEGE: both stores' flows fail with the tree's
    PermissionDenied naming it (for a command a Lua script runs, in the server's own words,
    which on Redis 7.0 name no command), not a generic server error, and not silently."""
    server = server_factory("redis-server")
    admin = opened.client(server.url)
    prefix = fresh_prefix()
    commands = " ".join(c for c in LEAST_PRIVILEGE.split() if c != missing)
    await command(admin, "ACL", "SETUSER", "lp", *least_privilege_rules(prefix, commands))
    corrupt = RedisPersistenceStore(admin, prefix=prefix, shards=4).keys("corrupt").meta
    await admin.set(corrupt, "not a hash")
    options = {**as_user("lp"), **HEALTH_CHECKS}
    try:
        await checkpoint_flow(server.url, prefix, options)
        await event_flow(server.url, prefix, options)
    except Denied as exc:
        said = str(exc)
        assert missing[1:] in said or "can't run this command" in said, said
    else:
        pytest.fail(f"both flows ran without {missing}: its refusal went unnoticed")


# -- 8: a closed store writes nothing --


@pytest.mark.parametrize("kind", KINDS)
async def test_closed_store_raises_store_closed_and_writes_nothing(
    redis_server: ServerProcess, opened: Opened, kind: Kind
) -> None:
    raw = opened.client(redis_server.url)
    prefix = fresh_prefix()
    store = opened.store(kind, redis_server.url, prefix=prefix)
    await kind.write(store, 1)
    before = await data_keys(raw, prefix)
    await store.aclose()
    for call in (kind.write(store, 2), kind.seen(store, 1)):
        error = await fails_within(kind.errors.closed, call, 1.0)
        assert isinstance(error, Closed)
        assert_in_tree(error, kind)
    assert await data_keys(raw, prefix) == before
    check = opened.store(kind, redis_server.url, prefix=prefix)
    assert await kind.seen(check, 1) and not await kind.seen(check, 2)
