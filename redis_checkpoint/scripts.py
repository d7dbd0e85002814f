"""Finds the Lua scripts, registers them on a client, and runs them.

Scripts are the `lua/*.lua` files shipped inside the package. A script's first line may
name the preludes it is prefixed with (`-- uses: _common _trace`): Lua has no include.
redis-py's `AsyncScript` keeps the SHA and reloads a script the server has lost (SCRIPT
FLUSH, restart, failover); this module adds automatic pipelining on top: a call goes out at
once when no other send is under way, and calls made meanwhile queue up and leave together
as one pipeline (at most `MAX_BATCH` calls) when it returns. A lone writer pays no extra
latency; many concurrent writers share round trips. One send at a time also keeps a store's
calls in the order they were numbered, which retry dedup relies on (`lua/_common.lua`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 128  # the dedup window of lua/_common.lua: a pipeline never holds more calls


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


@dataclass(slots=True)
class _Call:
    command: tuple[Any, ...]  # EVALSHA sha numkeys keys... args..., or one plain command
    script: AsyncScript | None  # reloads the script on NOSCRIPT
    future: asyncio.Future[Any]
    deadline: float

    async def alone(self, client: Redis) -> Any:
        """Send this call on its own (AsyncScript loads a script the server lost)."""
        if self.script is None:
            return await client.execute_command(*self.command)  # type: ignore[no-untyped-call]
        numkeys = self.command[2]
        keys, args = self.command[3 : 3 + numkeys], self.command[3 + numkeys :]
        return await self.script(keys, args)


class ScriptRunner:
    """Runs named scripts on one client, pipelining the calls that arrive concurrently.

    Each call carries its deadline (on the event loop's clock): a call still queued at its
    deadline fails as not sent, and a pipeline is cut at the earliest deadline in it. So the
    calls need no timer of their own: a timer per call was a measurable part of a write.
    """

    def __init__(
        self, client: Redis, names: tuple[str, ...], constants: Mapping[str, int] | None = None
    ) -> None:
        self._client = client
        self._scripts = {name: client.register_script(source(name, constants)) for name in names}
        self._queue: deque[_Call] = deque()
        self._busy = False  # a single call or a pipeline is under way
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(
        self, name: str, keys: tuple[Any, ...], args: tuple[Any, ...], deadline: float
    ) -> Any:
        """Run script `name`; returns its reply or raises the server's error, or TimeoutError
        (NotSent if it never left) once `deadline` passes."""
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._submit(command, script, deadline)

    async def command(self, command: tuple[Any, ...], deadline: float) -> Any:
        """Run one plain command (a write that is atomic alone), pipelined like scripts."""
        return await self._submit(command, None, deadline)

    async def _submit(
        self, command: tuple[Any, ...], script: AsyncScript | None, deadline: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(command, script, loop.create_future(), deadline)
        if not self._busy:
            if deadline <= loop.time():  # it spent its time before it could leave
                raise NotSent("its deadline passed before it was sent")
            self._busy = True
            try:
                async with asyncio.timeout_at(deadline):
                    return await call.alone(self._client)
            finally:
                self._busy = False
                self._next()
        self._queue.append(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            if call in self._queue:  # the caller gave up before it left: it never will
                self._queue.remove(call)
            raise

    def _next(self) -> None:
        """Send what queued up meanwhile as one pipeline."""
        now = asyncio.get_running_loop().time()
        batch: list[_Call] = []
        while self._queue and len(batch) < MAX_BATCH and not self._busy:
            call = self._queue.popleft()
            if call.deadline > now:
                batch.append(call)
            else:  # it waited out its deadline behind a slow call
                _fail(call, NotSent("no reply in time from the call ahead of it"))
        if not batch:
            return
        self._busy = True
        task = asyncio.ensure_future(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._busy = False
        self._next()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for call in batch:
                pipe.execute_command(*call.command)
        except Exception as exc:  # nothing left: every call fails, none is in doubt
            for call in batch:
                _fail(call, NotSent(f"the pipeline could not be built: {exc!r}"))
            return
        try:
            async with asyncio.timeout_at(min(call.deadline for call in batch)):
                replies = await pipe.execute(raise_on_error=False)
                for call, reply in zip(batch, replies, strict=True):
                    await self._settle(call, reply)
        except BaseException as exc:  # the connection failed or stalled: all in doubt
            for call in batch:
                _fail(call, exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _settle(self, call: _Call, reply: Any) -> None:
        """Hand a call its reply; a script the server lost (NOSCRIPT) is sent again on its
        own, and AsyncScript reloads it."""
        if isinstance(reply, NoScriptError):
            try:
                reply = await call.alone(self._client)
            except Exception as exc:
                reply = exc
        if isinstance(reply, Exception):
            _fail(call, reply)
        elif not call.future.done():
            call.future.set_result(reply)


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
