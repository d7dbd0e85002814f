"""Security as a user meets it: the README's least-privilege ACL user, and TLS. (Both
conformance suites also run as that user and over TLS: conftest's "redis-acl", "redis-tls"
and "redis-cluster-tls" backends.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from redis_checkpoint import (
    CompletionState,
    NotReplicated,
    PermissionDenied,
    PostgresPersistenceStore,
    RedisPersistenceStore,
    TieredPersistenceStore,
)
from redis_checkpoint.conformance.checkpoints import envelope
from redis_checkpoint.conformance.servers import ServerProcess

from .conftest import (
    ACL_COMMANDS,
    ACL_FSYNC,
    ACL_LINES,
    ACL_REPLICAS,
    ACL_WRITE_BEHIND,
    acl_rules,
    acl_url,
    fresh_prefix,
    start_server,
    tls_options,
)
from .test_faults import (
    CHECKPOINTS,
    HEALTH_CHECKS,
    KINDS,
    Kind,
    Opened,
    assert_in_tree,
    checkpoint_flow,
    command,
    event_flow,
    fails_within,
)

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture
async def opened() -> AsyncIterator[Opened]:
    things = Opened()
    yield things
    await things.aclose()


def test_the_readme_gives_the_acl_lines_the_tests_use() -> None:
    lines = README.read_text().splitlines()
    assert [line for line in ACL_LINES if line not in lines] == []


# -- the least-privilege ACL user --


async def test_the_acl_user_runs_both_stores_whole_api(
    redis_acl: ServerProcess, opened: Opened
) -> None:
    """As the session's user made with the README's line, in the URL: every method of both
    stores, a corrupt key diagnosed (TYPE), a health check (PING) before nearly every call."""
    admin = opened.client(redis_acl.url)
    prefix = fresh_prefix()
    corrupt = RedisPersistenceStore(admin, prefix=prefix, shards=4).keys("corrupt").meta
    await admin.set(corrupt, "not a hash")
    options = HEALTH_CHECKS
    await checkpoint_flow(acl_url(redis_acl), prefix, options)
    await event_flow(acl_url(redis_acl), prefix, options)


OUTSIDE = "outside-key"  # neither `{<prefix>:...` nor `<prefix>:config`
REFUSED = [
    pytest.param(("GET", OUTSIDE), "key", id="get-other-key"),
    pytest.param(("SET", OUTSIDE, "x"), "key", id="set-other-key"),
    pytest.param(("HGET", OUTSIDE, "f"), "key", id="hget-other-key"),  # +hget, not this key
    pytest.param(("HSET", "{other:0}:m", "f", "x"), "key", id="hset-other-prefix"),
    pytest.param(("FLUSHDB",), "'flushdb' command", id="flushdb"),
    pytest.param(("FLUSHALL",), "'flushall' command", id="flushall"),
    pytest.param(("SCRIPT", "FLUSH"), "'script|flush' command", id="script-flush"),
    pytest.param(("CLIENT", "KILL", "TYPE", "normal"), "'client|kill' command", id="client-kill"),
]


async def cached_scripts(admin: Redis) -> int:
    return int((await admin.info("memory"))["number_of_cached_scripts"])


@pytest.mark.parametrize(("args", "said"), REFUSED)
async def test_the_acl_user_cannot_touch_other_keys_flush_or_kill(
    redis_acl: ServerProcess, opened: Opened, args: tuple[str, ...], said: str
) -> None:
    admin = opened.client(redis_acl.url)
    await admin.set(OUTSIDE, "kept")
    await admin.hset("{other:0}:m", "f", "kept")
    store = opened.store(CHECKPOINTS, acl_url(redis_acl), prefix=fresh_prefix())
    await CHECKPOINTS.write(store, 1)
    scripts = await cached_scripts(admin)
    user = opened.client(acl_url(redis_acl))
    with pytest.raises(NoPermissionError) as refused:
        await command(user, *args)
    assert said in str(refused.value).lower(), str(refused.value)
    # Nothing happened: the other keys, the store's trace, its scripts and its connections.
    assert await admin.get(OUTSIDE) == b"kept"
    assert await admin.hget("{other:0}:m", "f") == b"kept"
    assert await cached_scripts(admin) == scripts
    assert await CHECKPOINTS.seen(store, 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_store_outside_the_acl_users_keys_is_permission_denied(
    redis_acl: ServerProcess, opened: Opened, kind: Kind
) -> None:
    """Each call of a store whose prefix the user's key patterns do not cover is refused:
    the tree's PermissionDenied, at once, saying it is about keys."""
    store = opened.store(kind, acl_url(redis_acl), prefix=f"o{fresh_prefix()}", timeout=2)
    calls: list[Awaitable[object]]
    if isinstance(store, RedisPersistenceStore):
        calls = [
            store.append(envelope("t")),
            store.load("t"),
            store.resume("t", 1),
            store.complete("t", CompletionState.SUCCESS),
            store.delete("t"),
            store.check(),
        ]
    else:
        calls = [kind.write(store, 1), kind.seen(store, 1), store.list_active(), store.check()]
    for call in calls:
        error = await fails_within(kind.errors.denied, call, 2.0)
        assert_in_tree(error, kind)
        assert "key" in str(error), str(error)
    assert await opened.client(redis_acl.url).keys(f"*{store.prefix}*") == []


async def test_replicas_and_fsync_need_the_readmes_extra_acl_lines(opened: Opened) -> None:
    """Without them a write waited for raises NotReplicated naming the refused command (it
    is applied, only not confirmed); with them, the wait runs: no replica confirms (none is
    connected), the AOF does. Valkey: Redis 7.0 has no WAITAOF (7.2+)."""
    server = start_server("valkey-server", "--appendonly", "yes")
    try:
        admin = opened.client(server.url)
        prefix = fresh_prefix()
        for user, commands in [("base", ""), ("replicas", ACL_REPLICAS), ("fsync", ACL_FSYNC)]:
            rules = acl_rules(prefix, "pw", f"{ACL_COMMANDS} {commands}")
            await command(admin, "ACL", "SETUSER", user, *rules)

        def open_as(user: str, **options: Any) -> RedisPersistenceStore:
            url = f"redis://{user}:pw@127.0.0.1:{server.port}/0"
            return opened.add(RedisPersistenceStore.from_url(url, prefix=prefix, **options))

        waits = {"replicas": 1, "replica_timeout": 0.1}
        refusals: list[tuple[str, dict[str, Any], str]] = [
            ("base", waits, "'incr' command"),
            ("base", {"fsync": True}, "'incr' command"),
            ("replicas", waits, "0 of the 1 replicas asked for confirmed it"),
        ]
        for user, options, said in refusals:
            with pytest.raises(NotReplicated, match=said):
                await open_as(user, **options).append(envelope("t", step=1))
        await open_as("fsync", fsync=True).append(envelope("t", step=2))
        trace = await open_as("base").load("t")
        assert trace is not None and [e.step for e in trace.events] == [1, 1, 1, 2]
    finally:
        server.close()


async def test_write_behind_needs_the_readmes_extra_acl_line(
    opened: Opened, redis_server: ServerProcess, postgres_url: str
) -> None:
    """As the README's user with the write-behind line: writes, a flush, a record evicted
    and warmed again, the backlog in check(). Without it the first write is refused."""
    admin, prefix = opened.client(redis_server.url), fresh_prefix()
    for user, commands in [("plain", ""), ("behind", ACL_WRITE_BEHIND)]:
        rules = acl_rules(prefix, "pw", f"{ACL_COMMANDS} {commands}")
        await command(admin, "ACL", "SETUSER", user, *rules)

    def tiered(user: str) -> TieredPersistenceStore:
        url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
        cache = opened.add(RedisPersistenceStore.from_url(url, prefix=prefix))
        return TieredPersistenceStore(cache, PostgresPersistenceStore.from_url(postgres_url))

    async with tiered("plain") as store:
        with pytest.raises(PermissionDenied):
            await store.append(envelope("t", step=1))
    async with tiered("behind") as store:
        for step in range(3):
            await store.append(envelope("t", step=step))
        await store.flush()
        assert (await store.check())["backlog"] == 0
        await admin.delete(*store.cache.keys("t").own)  # evicted: warmed from the database
        trace = await store.load("t")
        assert trace is not None and [e.step for e in trace.events] == [0, 1, 2]
        await store.append(envelope("t", step=3))
        await store.complete("t", CompletionState.SUCCESS)
        await store.flush()
        durable: Any = store.durable
        kept = await durable.load("t")
        assert kept is not None and kept.completion is CompletionState.SUCCESS
        assert [e.step for e in kept.events] == [0, 1, 2, 3]


# -- TLS: the session's TLS-only servers --

TLS_SERVERS = ["redis_tls", "redis_cluster_tls"]


@pytest.mark.parametrize("servers", TLS_SERVERS)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_wrong_ca_fails_fast_as_unavailable(
    request: pytest.FixtureRequest, opened: Opened, kind: Kind, servers: str
) -> None:
    """rediss:// and rediss+cluster:// with a CA that did not sign the server's certificate:
    each call raises the tree's unavailable error at once (the timeout bounds a hang), and
    says why; the right CA then works."""
    tls_server = request.getfixturevalue(servers)
    prefix = fresh_prefix()
    options = {"ssl_ca_certs": str(tls_server.tls.wrong_ca)}
    store = opened.store(kind, tls_server.url, prefix=prefix, timeout=2, client_options=options)
    for call in (kind.write(store, 1), kind.seen(store, 1)):
        error = await fails_within(kind.errors.unavailable, call, 2.5)
        assert_in_tree(error, kind)
        assert "certificate verify failed" in str(error), str(error)
    trusted = tls_options(tls_server.tls)
    good = opened.store(kind, tls_server.url, prefix=prefix, timeout=2, client_options=trusted)
    await kind.write(good, 1)
    assert await kind.seen(good, 1)


@pytest.mark.parametrize("servers", TLS_SERVERS)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_plaintext_client_on_the_tls_port_is_unavailable(
    request: pytest.FixtureRequest, opened: Opened, kind: Kind, servers: str
) -> None:
    tls_server = request.getfixturevalue(servers)
    url = tls_server.url.replace("rediss", "redis", 1)  # redis:// or redis+cluster://
    store = opened.store(kind, url, prefix=fresh_prefix(), timeout=2)
    for call in (kind.write(store, 1), kind.seen(store, 1)):
        error = await fails_within(kind.errors.unavailable, call, 2.5)
        assert_in_tree(error, kind)
