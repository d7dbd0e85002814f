"""The Lua scripts and the bytes of calls: every write of a store is one of these scripts
(or one plain command), sent by the store's runner (`runner.py`).

Scripts are the `lua/*.lua` files shipped inside the package. A script's first line may
name the preludes it is prefixed with (`-- uses: _common _trace`): Lua has no include.
Calls are packed into RESP bytes here, once, before they are queued: redis-py's Python
packer, run per call, was a measurable part of a write's client time.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from .keys import wait_key


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
    MISS = 8  # a write-behind cache's (lua/_cache.lua)
    BACKPRESSURE = 9
    LEASE_LOST = 10


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
    each waited send ends with a write of its own (`commands`: a counter next to the
    send's first key, so on its cluster node) before the wait: without it, a send whose
    calls wrote nothing new (copies of calls applied on a connection since lost, found
    DUPLICATE; a repeated idempotent command) was confirmed at once, although what they
    repeat had not reached a replica.
    """

    def __init__(self, replicas: int, timeout_ms: int, fsync: bool) -> None:
        self.replicas, self.fsync = replicas, fsync
        self.on = bool(replicas or fsync)
        wait = ("WAITAOF", 1, replicas, timeout_ms) if fsync else ("WAIT", replicas, timeout_ms)
        self._wait = pack(wait)

    def commands(self, key: str) -> list[bytes]:
        """The store's own write next to `key`, then the wait."""
        return [_mark(key), self._wait]

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


@functools.lru_cache(maxsize=1024)
def _mark(key: str) -> bytes:
    """INCR of `<hash tag of key>:waits` (keys.wait_key), packed."""
    return pack(("INCR", wait_key(key)))


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
