"""Finds the Lua scripts, registers them on a client, and runs them.

Scripts are the `lua/*.lua` files shipped inside the package; the trace scripts are each
prefixed with the shared `_trace.lua` prelude. redis-py's `AsyncScript` keeps the SHA and
reloads a script the server has lost (SCRIPT FLUSH, restart, failover); this module adds
one thing on top, automatic pipelining: a call goes out at once when no other send is under
way, and calls made meanwhile queue up and leave together as one pipeline when it returns.
A lone writer pays no extra latency; many concurrent writers share round trips instead of
paying one each. (`IN_FLIGHT` sends at once measured no better than one.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


def _lua_dir() -> Traversable:
    packaged = resources.files("redis_checkpoint") / "lua"
    if packaged.is_dir():
        return packaged
    # A source checkout keeps the scripts in the top-level lua/ folder.
    return Path(__file__).resolve().parent.parent / "lua"


LUA_DIR = _lua_dir()
IN_FLIGHT = 1


def source(name: str, prelude: str | None = "_trace") -> str:
    """The full text of script `name`: the prelude (if any), then the operation's own file."""
    text = (LUA_DIR / f"{name}.lua").read_text()
    return text if prelude is None else (LUA_DIR / f"{prelude}.lua").read_text() + text


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


class ScriptRunner:
    """Runs named scripts on one client, pipelining the calls that arrive concurrently."""

    def __init__(
        self, client: Redis, names: tuple[str, ...], prelude: str | None = "_trace"
    ) -> None:
        self._client = client
        self._scripts = {name: client.register_script(source(name, prelude)) for name in names}
        self._queue: list[_Call] = []
        self._in_flight = 0  # single calls and pipelines under way
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run script `name`; returns its reply or raises the server's error."""
        script = self._scripts[name]
        if self._in_flight >= IN_FLIGHT:
            call = _Call(script, keys, args, asyncio.get_running_loop().create_future())
            self._queue.append(call)
            return await call.future
        self._in_flight += 1
        try:
            return await script(keys, args)
        finally:
            self._in_flight -= 1
            self._next()

    def _next(self) -> None:
        """Send what queued up meanwhile as one pipeline."""
        if not self._queue or self._in_flight >= IN_FLIGHT:
            return
        batch, self._queue = self._queue, []
        self._in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._in_flight -= 1
        self._next()

    async def _send(self, batch: list[_Call]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every call in it failed
            for call in batch:
                _fail(call, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):  # lost scripts: AsyncScript reloads them
                await _settle(call, call.script(call.keys, call.args))
            elif isinstance(reply, Exception):
                _fail(call, reply)
            elif not call.future.done():
                call.future.set_result(reply)


async def _settle(call: _Call, reply: Any) -> None:
    try:
        result = await reply
    except Exception as exc:
        _fail(call, exc)
    else:
        if not call.future.done():
            call.future.set_result(result)


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
