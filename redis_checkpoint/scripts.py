"""Finds the Lua scripts and runs them: every write of a store goes through its runner.

Scripts are the `lua/*.lua` files shipped inside the package. A script's first line may
name the preludes it is prefixed with (`-- uses: _common _trace`): Lua has no include.

The runner pipelines automatically: a call goes out at once when no other send is under
way, and calls made meanwhile queue up and leave together as one pipeline (at most
`MAX_BATCH` calls) when it returns. A lone writer pays no extra latency; many concurrent
writers share round trips. One send at a time also keeps a store's calls in the order they
were numbered, which retry dedup relies on (`lua/_common.lua`). Each send borrows a
connection from the client's pool for its round trip, as any redis-py call does, so a busy
store starves no other caller of a small pool. The runner packs each call's RESP bytes
itself, once, before the call is queued, and writes them without redis-py's per-call
socket timer (its Python packer and an `asyncio.wait_for` per call were the larger part of
a write's client time). A script the server has lost (SCRIPT FLUSH, restart, failover) is
loaded and its calls sent again, in one more round trip.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as LinkError
from redis.exceptions import NoScriptError, ResponseError

from .connection import retryable

MAX_BATCH = 128  # the dedup window of lua/_common.lua: a pipeline never holds more calls
RELOADS = 3  # rounds of loading lost scripts and sending their calls again, per send


class Reply(IntEnum):
    """The status codes scripts return first in their reply (`lua/_common.lua`)."""

    OK = 0
    MISMATCH = 1
    COMPLETED = 2
    NOT_FOUND = 3
    CONFLICT = 4
    NOT_CONTIGUOUS = 5
    DUPLICATE = 6
    STALE = 7


def _lua_dir() -> Traversable:
    packaged = resources.files("redis_checkpoint") / "lua"
    if packaged.is_dir():
        return packaged
    # A source checkout keeps the scripts in the top-level lua/ folder.
    return Path(__file__).resolve().parent.parent / "lua"


LUA_DIR = _lua_dir()


def source(name: str, constants: Mapping[str, int] | None = None) -> str:
    """The full text of script `name`: a store's `constants` (its settings, as Lua locals:
    fewer arguments to pack per call), the preludes its first line names, then its own."""
    text = (LUA_DIR / f"{name}.lua").read_text()
    first = text.split("\n", 1)[0]
    uses = first.removeprefix("-- uses:").split() if first.startswith("-- uses:") else []
    head = "".join(f"local {key} = {int(value)}\n" for key, value in (constants or {}).items())
    return head + "".join((LUA_DIR / f"{prelude}.lua").read_text() for prelude in uses) + text


class NotSent(ConnectionError):
    """A queued call that never left: it was not applied."""


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """The reply of a write sent with `WAIT`/`WAITAOF`, which confirmed less than asked.
    `applied` is False for a script call that wrote nothing to confirm: one it rejected (a
    status other than OK or DUPLICATE), or one that found nothing to do (a reply of 0)."""

    reply: Any
    why: str
    script: bool

    @property
    def applied(self) -> bool:
        reply = self.reply
        if not self.script:
            return True
        rejected = isinstance(reply, list) and reply and reply[0] not in _APPLIED
        return not (rejected or reply == 0)


_APPLIED = (0, 6)  # Reply.OK, Reply.DUPLICATE


class Durability:
    """What a store waits for after each send, on the same connection, in the same round
    trip: `replicas` replicas (WAIT), and with `fsync` the primary's disk too (WAITAOF).

    A wait covers what the server applied before the connection's own last write, so
    each waited send ends with a write of its own (a counter in `mark`, the prefix's
    config hash) before the wait: without it, a send whose calls wrote nothing new (copies
    of calls applied on a connection since lost, found DUPLICATE; a repeated idempotent
    command) was confirmed at once, although what they repeat had not reached a replica.
    """

    def __init__(self, replicas: int, timeout_ms: int, fsync: bool, mark: str) -> None:
        self.replicas, self.fsync = replicas, fsync
        wait = ("WAITAOF", 1, replicas, timeout_ms) if fsync else ("WAIT", replicas, timeout_ms)
        on = bool(replicas or fsync)
        self.commands = [pack(("HINCRBY", mark, "waits", 1)), pack(wait)] if on else []

    def shortfall(self, replies: list[Any]) -> str | None:
        """What the replies to `commands` leave unconfirmed, or None."""
        marked, reply = replies
        if isinstance(marked, Exception):
            return f"the store's own write before the wait was refused: {marked}"
        if isinstance(reply, Exception):
            hint = " (fsync=True needs WAITAOF: Redis 7.2+ or Valkey, appendonly yes)"
            return f"the server refused {'WAITAOF' if self.fsync else 'WAIT'}: {reply}" + (
                hint if self.fsync else ""
            )
        local, replicas = (reply[0], reply[1]) if self.fsync else (1, reply)
        if local < 1:
            return "the primary did not confirm its fsync in time"
        if replicas < self.replicas:
            return f"{replicas} of the {self.replicas} replicas asked for confirmed it in time"
        return None


def _bulk(value: Any) -> bytes:
    """One RESP bulk string: bytes as they are, text as UTF-8, integers in decimal."""
    if type(value) is not bytes:
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, int) and not isinstance(value, bool):
            value = b"%d" % value
        elif isinstance(value, float):
            value = repr(value).encode()
        elif isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value)
        else:
            raise TypeError(f"cannot send {type(value).__name__} to Redis: {value!r:.60}")
    return b"$%d\r\n%b\r\n" % (len(value), value)


def pack(args: Iterable[Any]) -> bytes:
    """One command as RESP bytes."""
    parts = [_bulk(arg) for arg in args]
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


@functools.lru_cache(maxsize=4096)
def _packed_keys(keys: tuple[str, ...]) -> bytes:
    """numkeys and KEYS of a script call: a store writes the same records again and again."""
    return _bulk(len(keys)) + b"".join(map(_bulk, keys))


class Script:
    """One script's text and SHA, and the packed start of its calls (EVALSHA <sha>)."""

    __slots__ = ("head", "name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self.head = _bulk("EVALSHA") + _bulk(self.sha)

    def call(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> bytes:
        """The RESP bytes of one call."""
        body = b"".join([self.head, _packed_keys(keys), *map(_bulk, args)])
        return b"*%d\r\n%b" % (3 + len(keys) + len(args), body)


@dataclass(slots=True)
class _Call:
    packed: bytes  # the whole command as RESP bytes
    script: Script | None  # reloaded and sent again on NOSCRIPT
    future: asyncio.Future[Any] | None  # None for a call sent at once by its caller
    deadline: float
    confirm: bool  # the caller waits for replicas (`Durability`), if the store asks
    sent: bool = False  # it got a connection and left: its outcome may be unknown


class ScriptRunner:
    """Runs named scripts (and plain commands) on one client, pipelining the calls that
    arrive concurrently, one send at a time.

    Each call carries its deadline (on the event loop's clock): a call still queued at its
    deadline fails as not sent, and a pipeline is cut at the earliest deadline in it. So the
    calls need no timer of their own: a timer per call was a measurable part of a write.
    """

    def __init__(
        self,
        client: Redis,
        names: tuple[str, ...],
        constants: Mapping[str, int] | None = None,
        durability: Durability | None = None,
    ) -> None:
        self._pool = client.connection_pool
        self._wait: list[bytes] = durability.commands if durability is not None else []
        self._durability = durability if self._wait else None
        self._scripts = {name: Script(name, source(name, constants)) for name in names}
        self._queue: deque[_Call] = deque()
        self._busy = False  # a single call or a pipeline is under way
        self._closed = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        name: str,
        keys: tuple[Any, ...],
        args: tuple[Any, ...],
        deadline: float,
        confirm: bool = True,
    ) -> Any:
        """Run script `name`; returns its reply or raises the server's error, or TimeoutError
        (NotSent if it never left) once `deadline` passes. `confirm=False`: the call needs
        no wait for replicas (a listing's cleanup), and alone does not make its send wait."""
        script = self._scripts[name]
        return await self._submit(script.call(keys, args), script, deadline, confirm)

    async def command(self, command: tuple[Any, ...], deadline: float) -> Any:
        """Run one plain command (a write that is atomic alone), pipelined like scripts."""
        return await self._submit(pack(command), None, deadline)

    async def _submit(
        self, packed: bytes, script: Script | None, deadline: float, confirm: bool = True
    ) -> Any:
        loop = asyncio.get_running_loop()
        if not self._busy:
            if deadline <= loop.time():  # it spent its time before it could leave
                raise NotSent("its deadline passed before it was sent")
            self._busy = True
            call = _Call(packed, script, None, deadline, confirm)
            try:
                async with asyncio.timeout_at(deadline):
                    [reply] = await self._send([call])
            except TimeoutError:
                if not call.sent:
                    raise NotSent("no connection was free before its deadline") from None
                raise
            finally:
                self._idle()
            if isinstance(reply, Exception):
                raise reply
            return reply
        future = loop.create_future()
        call = _Call(packed, script, future, deadline, confirm)
        self._queue.append(call)
        try:
            return await future
        except asyncio.CancelledError:
            if call in self._queue:  # the caller gave up before it left: it never will
                self._queue.remove(call)
            raise

    def _idle(self) -> None:
        """A send is over: send what queued up meanwhile as one pipeline."""
        self._busy = False
        now = asyncio.get_running_loop().time()
        batch: list[_Call] = []
        while self._queue and len(batch) < MAX_BATCH:
            call = self._queue.popleft()
            if call.deadline > now:
                batch.append(call)
            else:  # it waited out its deadline behind a slow call
                _settle(call, NotSent("no reply in time from the call ahead of it"))
        if batch:
            self._busy = True
            task = asyncio.ensure_future(self._pipeline(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._idle()

    def close(self) -> None:
        """The store is closed: a send still under way drops its connection when done,
        rather than leaving it open in a pool that was closed meanwhile."""
        self._closed = True

    async def _pipeline(self, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout_at(min(call.deadline for call in batch)):
                replies = await self._send(batch)
        except BaseException as exc:  # the connection failed or stalled: all in doubt
            for call in batch:
                lost = exc if isinstance(exc, Exception) else ConnectionError(repr(exc))
                _settle(call, lost if call.sent else NotSent(f"no connection: {lost!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            _settle(call, reply)

    def _confirmed(self, calls: list[_Call], replies: list[Any], waited: Any) -> list[Any]:
        """The replies, each of a write that the wait left short marked `Unconfirmed`."""
        if self._durability is None or not waited:
            return replies
        why = self._durability.shortfall(waited)
        if why is None:
            return replies
        return [
            r if isinstance(r, Exception) else Unconfirmed(r, why, call.script is not None)
            for call, r in zip(calls, replies, strict=True)
        ]

    async def _send(self, calls: list[_Call]) -> list[Any]:
        """Each call's reply (or the server's error), in one round trip, plus one per
        reload of scripts the server lost, on a connection borrowed for the send."""
        try:
            connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except (LinkError, OSError) as exc:
            raise NotSent(f"no connection: {exc}") from exc
        try:
            for call in calls:
                call.sent = True
            wait = self._wait if self._wait and any(call.confirm for call in calls) else []
            replies = await _round(connection, [*(call.packed for call in calls), *wait])
            waited = _split(replies, len(wait))
            for _ in range(RELOADS):
                lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if not lost:
                    break
                waited = await _reload(connection, calls, lost, replies, wait) or waited
            return self._confirmed(calls, replies, waited)
        finally:
            if self._closed:
                await connection.disconnect()
            await self._pool.release(connection)


def _split(replies: list[Any], count: int) -> list[Any]:
    """Take the last `count` replies off `replies` (the wait's), and return them."""
    tail = replies[len(replies) - count :]
    del replies[len(replies) - count :]
    return tail


async def _round(connection: AbstractConnection, commands: list[bytes]) -> list[Any]:
    """One round trip, retried as the client's retry policy says (retry dedup makes a
    re-sent write harmless), but not once the call's deadline has cancelled it."""
    return await connection.retry.call_with_retry(
        lambda: _exchange(connection, commands), lambda _: connection.disconnect(), retryable
    )


async def _reload(
    connection: AbstractConnection,
    calls: list[_Call],
    lost: list[int],
    replies: list[Any],
    wait: list[bytes],
) -> list[Any]:
    """Load the scripts of the `lost` calls (NOSCRIPT) and send those calls again, then
    `wait`, in one round trip; their new replies go into `replies`, the wait's is returned.
    A round that fails for good fails those calls alone: the others have their replies."""
    scripts = {script for i in lost if (script := calls[i].script) is not None}
    loads = [pack(("SCRIPT", "LOAD", script.text)) for script in scripts]
    try:
        again = await _round(connection, [*loads, *(calls[i].packed for i in lost), *wait])
    except Exception as exc:
        again = [exc] * (len(loads) + len(lost) + len(wait))
    waited = _split(again, len(wait))
    failed = next((r for r in again[: len(loads)] if isinstance(r, Exception)), None)
    for i, reply in zip(lost, again[len(loads) :], strict=True):
        replies[i] = failed or reply  # a refused SCRIPT LOAD says why
    return waited


async def _exchange(connection: AbstractConnection, commands: list[bytes]) -> list[Any]:
    """Send packed commands at once and read a reply (or error) for each. The caller's
    deadline bounds the reads; any failure midway drops the connection, so no reply is
    ever read by the wrong caller."""
    await _write(connection, b"".join(commands))
    replies: list[Any] = []
    for _ in commands:
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
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise LinkError(f"error while writing to the socket: {exc}") from exc
    except BaseException:  # a write cut short leaves the stream in an unknown state
        await connection.disconnect(nowait=True)
        raise


def _settle(call: _Call, outcome: Any) -> None:
    if call.future is None or call.future.done():
        return
    if isinstance(outcome, BaseException):
        call.future.set_exception(outcome)
    else:
        call.future.set_result(outcome)
