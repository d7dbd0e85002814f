"""Sends every call of a store: its writes (script calls, plain commands) and its reads.

The runner pipelines automatically: a call goes out at once when no other send to its
server is under way, and calls made meanwhile queue up and leave together as one pipeline
(at most `MAX_BATCH` calls) when it returns. A lone writer pays no extra latency; many
concurrent writers share round trips. One send at a time per server also keeps a store's
calls in the order they were numbered, which retry dedup relies on (`lua/_common.lua`).

A server is one *lane*: a standalone server (or the primary Sentinel names) is one lane, a
Redis Cluster has a lane per primary, and each call goes to the lane of its keys' slot. So
one node's failure fails or delays only the calls bound for it. A call the cluster turns
away (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a node that stopped answering) is sent again to
where the slot now lives, within the call's deadline: retry dedup makes a copy of a write
that was applied harmless.

Each send borrows a connection for its round trip, as any redis-py call does, so a busy
store starves no other caller of a small pool. Calls are written without redis-py's
per-call socket timer (an `asyncio.wait_for`, a task per call, was a third of a lone
write's client time); each call's deadline bounds it instead. A script the server has lost
(SCRIPT FLUSH, restart, failover) is loaded and its calls sent again, in one more round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.cluster import get_node_name
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as LinkError
from redis.exceptions import TimeoutError as SocketTimeout

from .connection import RESEND_ONCE, retryable
from .scripts import Durability, Script, Unconfirmed, pack, source

MAX_BATCH = 128  # the dedup window of lua/_common.lua: a pipeline never holds more calls
RELOADS = 3  # rounds of loading lost scripts and sending their calls again, per send
_TURNED_AWAY = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError
_LOST = (LinkError, SocketTimeout, OSError)  # the connection failed: the outcome is unknown
_DENIED = (AuthenticationError, AuthorizationError)  # redis-py files them as ConnectionError


class NotSent(ConnectionError):
    """A call that never left: it was not applied."""


@dataclass(slots=True, eq=False)
class _Call:
    packed: bytes  # its command(s) as RESP bytes
    count: int  # the replies it gets: one per command
    script: Script | None  # reloaded and sent again on NOSCRIPT
    key: str  # its first key ("" for none): the slot it is bound for
    deadline: float
    confirm: bool  # the caller waits for replicas (`Durability`), if the store asks
    future: asyncio.Future[Any] | None = None  # a queued call's outcome
    lane: str = ""  # the server it was queued for
    asking: str | None = None  # cluster: the node an ASK redirect named, for one send
    sent: bool = False  # it got a connection and left: its outcome may be unknown
    attempt: int = 0  # the times the cluster turned it away


class _Detour(NamedTuple):
    """The outcome of a call the cluster turned away, or whose node failed: send it again
    once `error` is dealt with (`_Cluster.recover`)."""

    error: Exception


class _Lane:
    """The calls bound for one server: the one send under way, and those queued behind."""

    __slots__ = ("busy", "queue", "rerouted")

    def __init__(self) -> None:
        self.busy = False
        self.queue: deque[_Call] = deque()
        self.rerouted = False  # the slots moved: its queue may hold calls bound elsewhere


class _Server:
    """A standalone server, or the primary a Sentinel names: one lane, connections from the
    client's pool, whose retry policy rides out a dropped connection."""

    detours = False

    def __init__(self, client: Redis) -> None:
        self.pool = client.connection_pool

    async def ready(self) -> None:
        pass

    def lane(self, call: _Call) -> str:
        return ""

    async def borrow(self, lane: str) -> AbstractConnection:
        connection: AbstractConnection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def give_back(self, lane: str, connection: AbstractConnection) -> None:
        await self.pool.release(connection)

    async def recover(self, call: _Call, error: Exception, attempt: int) -> None:
        raise error  # never turned away: nothing to recover from

    def forked(self) -> None:
        self.pool.reset()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        pass


class _Cluster:
    """A Redis Cluster: a lane per primary, each call to the primary of its slot, and the
    client's map of slots mended when the cluster turns a call away."""

    detours = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.nodes = client.nodes_manager
        self._mending: asyncio.Future[None] | None = None  # the wait and refresh under way
        self._mapped = False  # the slots are known
        self._closed = False
        self._retries: dict[int, Retry] = {}  # redis-py's own retry of each borrowed connection

    async def ready(self) -> None:
        """Ask the cluster for its slots, once (after a failure, `recover` asks again)."""
        if self._mapped:
            return
        try:  # the slots, and the command table of redis-py's own commands on the client
            await self.client.initialize()
        except (RedisError, RedisClusterException, OSError):
            # The table comes from one node, which may be the one that stalled; the slots,
            # all the runner needs, from any.
            await self.nodes.initialize()
        self._mapped = True

    def lane(self, call: _Call) -> str:
        if call.asking is not None:
            return call.asking
        return self.nodes.get_node_from_slot(_slot(call.key)).name

    def _node(self, lane: str) -> ClusterNode:
        node = self.nodes.get_node(node_name=lane)
        if node is None:
            raise LinkError(f"cluster node {lane} is gone")
        return node

    async def borrow(self, lane: str) -> AbstractConnection:
        """A connection to the node, that sends a round once more at once if it drops: the
        lane stays busy meanwhile, so no newer call to the node overtakes the round's."""
        connection = self._node(lane).acquire_connection()
        self._retries[id(connection)], connection.retry = connection.retry, RESEND_ONCE
        return connection

    async def give_back(self, lane: str, connection: AbstractConnection) -> None:
        connection.retry = self._retries.pop(id(connection), connection.retry)  # redis-py's again
        node = self.nodes.get_node(node_name=lane)
        if node is not None and connection in node._connections:
            node.release(connection)
        else:  # the node left the map meanwhile
            await connection.disconnect()

    async def recover(self, call: _Call, error: Exception, attempt: int) -> None:
        """Mend what `error` says is wrong before `call` is sent again: follow an ASK for one
        send, a MOVED for good; else (TRYAGAIN, a failover under way, a node that stopped
        answering) wait a little, then ask the cluster for its slots again."""
        call.asking = None
        if isinstance(error, AskError) and not isinstance(error, MovedError):
            call.asking = get_node_name(error.host, error.port)
            if self.nodes.get_node(node_name=call.asking) is None:
                await self._refresh()
            return
        if isinstance(error, MovedError):
            await self.nodes.move_slot(error)
            return
        if self._mending is None or self._mending.done():
            self._mending = asyncio.ensure_future(self._mend(attempt))
        # One wait and one refresh for all the calls turned away meanwhile, which resume in
        # the order they were turned away: a jittered wait of each call's own reordered
        # them, and a call overtaken by 128 newer ones on its record could no longer tell
        # whether it was applied (STALE in lua/_common.lua).
        await asyncio.shield(self._mending)

    async def _mend(self, attempt: int) -> None:
        await asyncio.sleep(min(0.5, 0.02 * 2**attempt))
        await self._refresh()

    async def _refresh(self) -> None:
        if self._closed:  # asking now would open the closed client again
            return
        with contextlib.suppress(Exception):  # no node answered (or oddly): the next try says
            await self.nodes.initialize()

    def close(self) -> None:
        self._closed = True
        if self._mending is not None:
            self._mending.cancel()

    def forked(self) -> None:
        nodes = [*self.nodes.nodes_cache.values(), *self.nodes.startup_nodes.values()]
        for node in nodes:  # the parent's sockets are not ours
            node._connections.clear()
            node._free.clear()


@functools.lru_cache(maxsize=4096)
def _slot(key: str) -> int:
    return key_slot(key.encode())


class Runner:
    """Runs named scripts, plain commands and reads on one client, pipelining the calls
    that arrive concurrently, one send at a time per server.

    Each call carries its deadline (on the event loop's clock): a call still queued at its
    deadline fails as not sent, and a pipeline is cut at the earliest deadline in it. So the
    calls need no timer of their own: a timer per call was a measurable part of a write.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        names: tuple[str, ...],
        constants: Mapping[str, int] | None = None,
        durability: Durability | None = None,
    ) -> None:
        self._target = _Cluster(client) if isinstance(client, RedisCluster) else _Server(client)
        self._durability = durability if durability is not None and durability.on else None
        self._scripts = {name: Script(name, source(name, constants)) for name in names}
        self._lanes: dict[str, _Lane] = {}
        self._closed = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        name: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        deadline: float,
        confirm: bool = True,
    ) -> Any:
        """Run script `name`; returns its reply or raises the server's error, or TimeoutError
        (NotSent if it never left) once `deadline` passes. `confirm=False`: the call needs
        no wait for replicas (a listing's cleanup), and alone does not make its send wait."""
        script = self._scripts[name]
        call = _Call(script.call(keys, args), 1, script, keys[0] if keys else "", deadline, confirm)
        return _raised(await self._submit(call))

    async def command(self, command: tuple[Any, ...], deadline: float) -> Any:
        """Run one plain command that is a whole write (atomic alone), pipelined like
        scripts, and waited for like them."""
        return _raised(
            await self._submit(_Call(pack(command), 1, None, _key(command), deadline, True))
        )

    async def read(self, commands: Sequence[tuple[Any, ...]], deadline: float) -> list[Any]:
        """Each command's raw reply (or the server's error), each sent to its key's server;
        all in one round trip per server."""
        calls = [_Call(pack(c), 1, None, _key(c), deadline, False) for c in commands]
        if len(calls) < 2:
            return [await self._submit(call) for call in calls]
        return await self._submit_all(calls)

    async def atomic(self, commands: Sequence[tuple[Any, ...]], deadline: float) -> list[Any]:
        """The replies of `commands` (keys of one slot), run as one MULTI/EXEC."""
        packed = b"".join([pack(("MULTI",)), *map(pack, commands), pack(("EXEC",))])
        call = _Call(packed, len(commands) + 2, None, _key(commands[0]), deadline, False)
        replies = _raised(await self._submit(call))
        done = replies[-1]
        if isinstance(done, Exception):  # aborted: a command was refused as it was queued
            raise next((r for r in replies[1:-1] if isinstance(r, Exception)), done)
        result: list[Any] = done
        return result

    def close(self) -> None:
        """The store is closed: a send still under way drops its connection when done,
        rather than leaving it open in a pool that was closed meanwhile."""
        self._closed = True
        self._target.close()

    def forked(self) -> None:
        """This runner's process was forked from the one that used it: forget the parent's
        connections (a new runner takes over: `RedisBacked._enter`)."""
        self._target.forked()

    async def _submit(self, call: _Call) -> Any:
        """The outcome of one call (a reply, or the server's error), sent again for as long
        as the cluster turns it away and its deadline allows."""
        attempt = 0
        while True:
            outcome = await self._once(call)
            if type(outcome) is not _Detour:
                return outcome
            attempt += 1
            await self._recover(call, outcome.error, attempt)

    async def _submit_all(self, calls: list[_Call]) -> list[Any]:
        """The outcomes of several calls, queued at once: one round trip per server."""
        await self._ready(calls[0].deadline)
        lanes = set()
        for call in calls:
            try:
                lanes.add(self._queue(call))
            except SlotNotCoveredError as exc:
                call.future = asyncio.get_running_loop().create_future()
                call.future.set_result(_Detour(exc))
        for name in lanes:
            if not self._lanes[name].busy:
                self._idle(name)
        outcomes = []
        try:
            for call in calls:
                assert call.future is not None
                outcome = await call.future
                if type(outcome) is _Detour:
                    await self._recover(call, outcome.error, 1)
                    outcome = await self._submit(call)
                outcomes.append(outcome)
        except BaseException:  # the others' outcomes go unheard: drop them
            self._unqueue(calls)
            for call in calls:
                future = call.future
                if future is not None and not future.cancel() and not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" warning
            raise
        return outcomes

    async def _ready(self, deadline: float) -> None:
        """A cluster's client knows the slots (it asks on first use, and after a failure)."""
        if not self._target.detours:
            return
        if self._closed:  # asking now would open the closed client again
            raise NotSent("the store was closed")
        last: Exception | None = None
        for attempt in itertools.count(1):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._target.ready()
            except TimeoutError:
                raise NotSent(f"no node of the cluster told its slots in time: {last}") from None
            except (RedisError, RedisClusterException, OSError) as exc:
                pause = min(0.5, 0.02 * 2**attempt)
                hopeless = "certificate verify failed" in str(exc)  # no retry mends that
                if hopeless or asyncio.get_running_loop().time() + pause >= deadline:
                    raise NotSent(f"no node of the cluster told its slots: {exc}") from exc
                last = exc
                await asyncio.sleep(pause)

    async def _recover(self, call: _Call, error: Exception, attempt: int) -> None:
        if self._closed:
            if not call.sent:
                raise NotSent("the store was closed before the call could be sent")
            raise LinkError(f"the store was closed while the call was sent again: {error}")
        try:
            async with asyncio.timeout_at(call.deadline):
                await self._target.recover(call, error, attempt)
        except TimeoutError:
            if not call.sent:
                raise NotSent(f"the cluster did not take the call in time: {error}") from None
            raise LinkError(f"the cluster did not recover in time: {error}") from None

    async def _once(self, call: _Call) -> Any:
        """One try: sent at once if its server's lane is idle, else queued behind."""
        await self._ready(call.deadline)
        try:
            name = self._target.lane(call)
        except SlotNotCoveredError as exc:
            return _Detour(exc)
        lane = self._lanes.get(name) or self._lanes.setdefault(name, _Lane())
        if lane.busy:
            self._queue(call, name)
            return await self._wait(call)
        if call.deadline <= asyncio.get_running_loop().time():
            raise NotSent("its deadline passed before it was sent")
        lane.busy = True
        try:
            async with asyncio.timeout_at(call.deadline):
                [outcome] = await self._send(name, [call])
            if type(outcome) is _Detour:  # sent again from the lane's queue, in order
                await self._reroute(name, [(call, outcome.error)])
        except TimeoutError:
            if not call.sent:
                raise NotSent("no connection was free before its deadline") from None
            raise
        finally:
            self._idle(name)
        return outcome if call.future is None else await self._wait(call)

    async def _wait(self, call: _Call) -> Any:
        try:
            return await call.future  # type: ignore[misc]
        except asyncio.CancelledError:
            self._unqueue([call])
            raise

    async def _reroute(self, name: str, turned: list[tuple[_Call, Exception]]) -> None:
        """Calls lane `name` sent were turned away: put them back at the head of its queue
        and mend what their errors say, the lane held meanwhile; then (`_idle`) they and what
        queued behind them go where their slots now live. So no newer call to their records
        overtakes them: one overtaken by 128 newer ones of its store could no longer tell
        whether it was applied (STALE in lua/_common.lua)."""
        loop = asyncio.get_running_loop()
        if self._closed:
            for call, error in turned:
                closed = f"the store was closed as the call was turned away: {error}"
                _settle(call, LinkError(closed) if call.sent else NotSent(closed))
            return
        for call, _ in turned:
            call.future = call.future or loop.create_future()
            call.lane, call.attempt = name, call.attempt + 1
        lane = self._lanes[name]
        lane.queue.extendleft(reversed([call for call, _ in turned]))
        lane.rerouted = True
        latest = max(call.deadline for call, _ in turned)
        mended = False  # one wait and refresh serves all; a redirect is each call's own
        with contextlib.suppress(Exception):  # what is still wrong, the next send says
            async with asyncio.timeout_at(latest):
                for call, error in turned:
                    if isinstance(error, AskError) or not mended:
                        await self._target.recover(call, error, call.attempt)
                        mended = mended or not isinstance(error, AskError)
                    call.asking = call.asking if isinstance(error, AskError) else None

    def _queue(self, call: _Call, name: str | None = None) -> str:
        call.lane = self._target.lane(call) if name is None else name
        call.future = asyncio.get_running_loop().create_future()
        self._lanes.setdefault(call.lane, _Lane()).queue.append(call)
        return call.lane

    def _unqueue(self, calls: list[_Call]) -> None:
        """The callers gave up: calls that have not left never will."""
        for call in calls:
            lane = self._lanes.get(call.lane)
            if lane is not None and call in lane.queue:
                lane.queue.remove(call)

    def _idle(self, name: str) -> None:
        """A send to lane `name` is over: send what queued up meanwhile as one pipeline."""
        lane = self._lanes[name]
        lane.busy = False
        if lane.rerouted:
            lane.rerouted = False
            self._move_queued(name)
        now = asyncio.get_running_loop().time()
        batch: list[_Call] = []
        while lane.queue and len(batch) < MAX_BATCH:
            call = lane.queue.popleft()
            if call.deadline > now:
                batch.append(call)
            elif call.sent:  # sent before, turned away, and out of time before it went again
                _settle(call, LinkError("no reply in time: it was sent, then turned away"))
            else:  # it waited out its deadline behind a slow call
                _settle(call, NotSent("no reply in time from the call ahead of it"))
        if batch:
            lane.busy = True
            task = asyncio.ensure_future(self._pipeline(name, batch))
            self._flushes.add(task)
            task.add_done_callback(functools.partial(self._flushed, name))

    def _move_queued(self, name: str) -> None:
        """Calls queued on lane `name` whose slots now live elsewhere go to the head of
        their new lanes' queues, in order: they are older than what queued there."""
        kept: deque[_Call] = deque()
        moved: dict[str, list[_Call]] = {}
        for call in self._lanes[name].queue:
            try:
                call.lane = self._target.lane(call)
            except SlotNotCoveredError:
                call.lane = name  # sent, turned away again, until its deadline
            (
                kept.append(call)
                if call.lane == name
                else moved.setdefault(call.lane, []).append(call)
            )
        self._lanes[name].queue = kept
        for other, calls in moved.items():
            lane = self._lanes.setdefault(other, _Lane())
            lane.queue.extendleft(reversed(calls))
            if not lane.busy:
                self._idle(other)

    def _flushed(self, name: str, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._idle(name)

    async def _pipeline(self, name: str, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout_at(min(call.deadline for call in batch)):
                outcomes = await self._send(name, batch)
        except BaseException as exc:  # the connection failed or stalled: all in doubt
            for call in batch:
                lost = exc if isinstance(exc, Exception) else ConnectionError(repr(exc))
                kept = call.sent or isinstance(lost, (NotSent, *_DENIED))
                why = f"{type(lost).__name__}: {lost}"
                _settle(call, lost if kept else NotSent(f"no connection: {why}"))
            if not isinstance(exc, Exception):
                raise
            return
        turned = [(c, o.error) for c, o in zip(batch, outcomes, strict=True) if type(o) is _Detour]
        for call, outcome in zip(batch, outcomes, strict=True):
            if type(outcome) is not _Detour:
                _settle(call, outcome, result=True)
        if turned:
            await self._reroute(name, turned)

    async def _send(self, name: str, calls: list[_Call]) -> list[Any]:
        """Each call's outcome, from lane `name`, on a connection borrowed for the send. On a
        cluster, a failed connection makes them detours: where is the slot now?"""
        try:
            connection = await self._target.borrow(name)
        except _DENIED:
            raise  # refused credentials: no retry mends them
        except _LOST as exc:
            if self._target.detours:
                return [_Detour(exc)] * len(calls)
            raise NotSent(f"no connection: {exc}") from exc
        try:
            return await self._round_trip(connection, calls)
        except _DENIED:
            raise
        except _LOST as exc:
            if self._target.detours:
                return [_Detour(exc)] * len(calls)
            raise
        finally:
            if self._closed:
                await connection.disconnect()
            await self._target.give_back(name, connection)

    async def _round_trip(self, connection: AbstractConnection, calls: list[_Call]) -> list[Any]:
        """Each call's outcome, in one round trip, plus one per reload of scripts the server
        lost."""
        if not connection.is_connected:  # a refused connection sent nothing
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
            except AttributeError as exc:  # redis-py closed it meanwhile
                raise LinkError("the connection was closed as it opened") from exc
            except _LOST as exc:
                if isinstance(exc, _DENIED) or self._target.detours:
                    raise
                raise NotSent(f"no connection: {exc}") from exc
        for call in calls:
            call.sent = True
        wait = self._waits(calls)
        replies = await _round(connection, [*_commands(calls), *wait], _count(calls, wait))
        waited = _split(replies, len(wait))
        outcomes = _outcomes(calls, replies)
        for _ in range(RELOADS):
            lost = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, NoScriptError)]
            if not lost:
                break
            waited = await _reload(connection, calls, lost, outcomes, wait) or waited
        if any(
            call.count > 1 and isinstance(o[-1], Exception)
            for call, o in zip(calls, outcomes, strict=True)
        ):
            await connection.disconnect()  # a refused EXEC may leave it inside the MULTI
        if self._target.detours:
            outcomes = [_detour(outcome) for outcome in outcomes]
        return self._confirmed(calls, outcomes, waited)

    def _waits(self, calls: list[_Call]) -> list[bytes]:
        """The store's wait for replicas, if a call in the send asks for it."""
        if self._durability is None:
            return []
        first = next((call for call in calls if call.confirm), None)
        return [] if first is None else self._durability.commands(first.key)

    def _confirmed(self, calls: list[_Call], outcomes: list[Any], waited: Any) -> list[Any]:
        """The outcomes, each of a write that the wait left short marked `Unconfirmed`."""
        if self._durability is None or not waited:
            return outcomes
        why = self._durability.shortfall(waited)
        if why is None:
            return outcomes
        return [
            Unconfirmed(o, why, call.script is not None)
            if call.confirm and not isinstance(o, Exception | _Detour)
            else o
            for call, o in zip(calls, outcomes, strict=True)
        ]


_ASKING = pack(("ASKING",))


def _commands(calls: list[_Call]) -> list[bytes]:
    """The packed commands of `calls`, each behind an ASKING where an ASK sent it."""
    return [
        part
        for call in calls
        for part in ((_ASKING, call.packed) if call.asking else (call.packed,))
    ]


def _outcomes(calls: list[_Call], replies: list[Any]) -> list[Any]:
    """Each call's reply (a list of them for a call of several commands), from the replies
    of the `_commands` of `calls`."""
    outcomes: list[Any] = []
    at = 0
    for call in calls:
        at += call.asking is not None  # ASKING's own reply
        outcomes.append(replies[at] if call.count == 1 else replies[at : at + call.count])
        at += call.count
    return outcomes


def _detour(outcome: Any) -> Any:
    """`outcome`, or a `_Detour` if the cluster turned the call away."""
    replies = outcome if isinstance(outcome, list) else [outcome]
    turned = next((r for r in replies if isinstance(r, _TURNED_AWAY)), None)
    return outcome if turned is None else _Detour(turned)


def _key(command: Sequence[Any]) -> str:
    return str(command[1]) if len(command) > 1 else ""


def _raised(outcome: Any) -> Any:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _split(replies: list[Any], count: int) -> list[Any]:
    """Take the last `count` replies off `replies` (the wait's), and return them."""
    tail = replies[len(replies) - count :]
    del replies[len(replies) - count :]
    return tail


def _count(calls: list[_Call], wait: list[bytes]) -> int:
    """The replies to the `_commands` of `calls`, then `wait`."""
    return sum(call.count + (call.asking is not None) for call in calls) + len(wait)


async def _round(connection: AbstractConnection, commands: list[bytes], count: int) -> list[Any]:
    """One round trip, retried as the connection's retry policy says (retry dedup makes a
    re-sent write harmless), but not once the call's deadline has cancelled it."""
    return await connection.retry.call_with_retry(
        lambda: _exchange(connection, commands, count), lambda _: connection.disconnect(), retryable
    )


async def _reload(
    connection: AbstractConnection,
    calls: list[_Call],
    lost: list[int],
    outcomes: list[Any],
    wait: list[bytes],
) -> list[Any]:
    """Load the scripts of the `lost` calls (NOSCRIPT) and send those calls again, then
    `wait`, in one round trip; their new replies go into `outcomes`, the wait's is returned.
    A round that fails for good fails those calls alone: the others have their replies."""
    scripts = {script for i in lost if (script := calls[i].script) is not None}
    loads = [pack(("SCRIPT", "LOAD", script.text)) for script in scripts]
    again_calls = [calls[i] for i in lost]
    try:
        commands = [*loads, *_commands(again_calls), *wait]
        again = await _round(connection, commands, len(loads) + _count(again_calls, wait))
    except Exception as exc:
        again = [exc] * (len(loads) + _count(again_calls, wait))
    waited = _split(again, len(wait))
    failed = next((r for r in again[: len(loads)] if isinstance(r, Exception)), None)
    for i, outcome in zip(lost, _outcomes(again_calls, again[len(loads) :]), strict=True):
        outcomes[i] = failed or outcome  # a refused SCRIPT LOAD says why
    return waited


async def _exchange(connection: AbstractConnection, commands: list[bytes], count: int) -> list[Any]:
    """Send packed commands at once and read their `count` replies (or errors). The caller's
    deadline bounds the reads; any failure midway drops the connection, so no reply is
    ever read by the wrong caller."""
    await _write(connection, b"".join(commands))
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await connection.read_response(timeout=math.inf))
        except ResponseError as exc:  # an error reply: the connection is fine
            replies.append(exc)
    return replies


async def _write(connection: AbstractConnection, data: bytes) -> None:
    """redis-py's `send_packed_command` minus its socket-timeout timer: an `asyncio.wait_for`,
    a task per call, was a third of a lone write's client time. The caller's deadline bounds
    the write instead."""
    if not connection.is_connected:
        await connection.connect()  # type: ignore[no-untyped-call]
    await connection.check_health()  # type: ignore[no-untyped-call]
    try:
        await connection._send_packed_command([data])
    except AttributeError as exc:  # redis-py closed it meanwhile (its writer is None)
        raise LinkError("the connection was closed under the call") from exc
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise LinkError(f"error while writing to the socket: {exc}") from exc
    except BaseException:  # a write cut short leaves the stream in an unknown state
        await connection.disconnect(nowait=True)
        raise


def _settle(call: _Call, outcome: Any, result: bool = False) -> None:
    """End a queued call: with `outcome` as its result (`result`: a reply, an error reply
    or a `_Detour`), or else raised."""
    if call.future is None or call.future.done():
        return
    if isinstance(outcome, BaseException) and not result:
        call.future.set_exception(outcome)
    else:
        call.future.set_result(outcome)
