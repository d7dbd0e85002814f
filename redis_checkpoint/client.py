"""What both Redis stores share: the store's lifecycle, the shard-count record, one deadline
per call, one script-call path, and one map from redis-py's errors (and any other) to the
calling store's exception tree (`failures.ErrorTree`). Opening clients: `connection.py`."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
from collections import defaultdict
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from .checks import Checks
from .connection import DEFAULT_TIMEOUT, close, connect
from .failures import OUTCOME_UNKNOWN, ErrorTree
from .keys import config_key, hash_tag, key_types, shard_keys
from .report import server_report
from .runner import NotSent, Runner
from .scripts import Durability, Unconfirmed

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="RedisBacked")


# Stores made before a fork must not share their producer id with the children: the
# children's numbered calls would look like copies of each other's (lua/_common.lua).
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
_DENIED = (AuthenticationError, AuthorizationError, NoPermissionError)
_TRANSIENT = (ReadOnlyError, ClusterDownError, TryAgainError)  # failover, resharding
LEASE_MS = 5_000  # a warm's read of the durable store must end within it


class Miss(Exception):
    """A write-behind cache does not hold the record: warm it, then send the write again."""


# An ACL refusal that redis-py does not type as NoPermissionError: inside a script (Redis 7.0,
# and "ACL failure in script" from Redis 7.2 and Valkey), a refused EXEC (ExecAbortError), a
# refused MULTI (its EXEC then finds no transaction).
_DENIAL_MARKERS = ("NOPERM", "can't run this command", "ACL failure", "EXEC without MULTI")


def _denied(message: str) -> bool:
    return any(marker in message for marker in _DENIAL_MARKERS)


Method = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def reading(method: Method[S, P, R]) -> Method[S, P, R]:
    """A store method that reads: refused once closed, bounded by the store's deadline,
    redis-py's errors mapped to the store's tree."""
    return _operation(method, write=False)


def writing(method: Method[S, P, R]) -> Method[S, P, R]:
    """A store method that writes through the script runner (`_write`, `_script`,
    `_command`): as `reading`, but the runner keeps the call's deadline, without a timer of
    its own, and a lost call says its outcome is unknown."""
    return _operation(method, write=True)


# The deadline of the call under way in this task, from its start: encoding a large batch
# counts too. The runner keeps it (`_write`, `_command`, `_commands`).
_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def _operation(method: Method[S, P, R], write: bool) -> Method[S, P, R]:
    async def bounded(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # `deadline`, inlined: this wraps every call, and a generator-based context manager
        # (or a timer per write) was a measurable share of a write's client time.
        self._enter()
        deadline = asyncio.get_running_loop().time() + self.timeout
        started = _deadline.set(deadline)
        try:
            if write:
                return await method(self, *args, **kwargs)
            async with asyncio.timeout_at(deadline):
                return await method(self, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, self.errors.base | Miss):
                raise
            raise self._translate(exc, write) from exc
        finally:
            _deadline.reset(started)

    functools.update_wrapper(bounded, method)
    return bounded


class RedisBacked:
    """What every Redis store shares: a client, a key prefix and its recorded shard count,
    a per-call deadline, its lifecycle, and the calls to its scripts.

    Subclasses set `errors` (their contract's `ErrorTree`), `scripts` (the names of the
    `lua/` scripts they run) and `constants` (their settings, as the scripts name them)
    before calling `__init__`.
    """

    errors: ErrorTree
    scripts: tuple[str, ...]
    index: str  # the shard index of its records (`check()` counts it)
    constants: dict[str, int]  # the store's settings, baked into its scripts' text

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str,
        shards: int,
        timeout: float,
        owns_client: bool,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        fsync: bool = False,
    ) -> None:
        check = self.errors.check
        if redis.get_connection_kwargs().get("decode_responses"):
            raise self.errors.invalid("the client must return bytes: decode_responses=False")
        self.prefix = check.prefix(prefix)
        self.shards = check.integer(shards, "shards", 1, 16384)
        self.timeout = check.seconds(timeout, "timeout")
        self._durability = _durability(check, replicas, replica_timeout, fsync, self.timeout)
        self.redis = redis
        self._owns_client = owns_client
        self._closed = False
        self._recorded = False  # the shard count is recorded (and matches)
        self._configuring = asyncio.Lock()  # many first calls at once check the record once
        self.outbox = False  # a write-behind cache's scripts also record each change
        self.constants = {**self.constants, "OUTBOX": 0, "MAX_BACKLOG": 0}  # lua/_cache.lua
        self._new_producer()
        self._run = Runner(redis, self.scripts, self.constants, self._durability)

    def write_behind(self, max_backlog: int) -> None:
        """Make this store a tiered store's write-behind cache (lua/_cache.lua): a write to
        a record it does not hold raises `Miss`, every change is also recorded in its shard's
        outbox, and a write finding `max_backlog` changes unflushed there raises the
        tree's Backpressure error."""
        self.constants.update(OUTBOX=1, MAX_BACKLOG=max_backlog)
        self.outbox = True
        self._run = Runner(self.redis, self.scripts, self.constants, self._durability)

    @writing
    async def lease(self, key: str) -> bytes | None:
        """Take the warm lease `key` of a record (lua/_cache.lua) before reading the durable
        store's copy: a write that invalidates the record meanwhile removes the lease, and
        the warm, finding it gone, writes nothing stale. Returns its token, or None if
        another caller holds it (and is warming the record)."""
        token = os.urandom(8).hex().encode()
        taken = await self._command("SET", key, token, "NX", "PX", LEASE_MS)
        return token if taken else None

    @writing
    async def invalidate(self, keys: Sequence[str]) -> None:
        """Drop a record's keys (and its lease) from the cache: its next read warms it."""
        await self._command("UNLINK", *keys)

    def _new_producer(self) -> None:
        """Retry dedup: this store's calls are numbered under a random producer id, apart
        per hash tag (so per cluster slot): the dedup window of 128 calls per record then
        spans at most one pipeline of the record's server. Numbered store-wide, a cluster's
        pipeline to one node held calls 250 numbers apart (the other nodes' calls took the
        numbers between), and a copy of its first call, re-sent with it, found itself
        below the window (STALE)."""
        self._producer = os.urandom(8)
        self._numbers: defaultdict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))
        self._forks = _forks

    @classmethod
    def open_url(
        cls, url: str, client_options: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> Self:
        """The body of each store's typed `from_url`: a client of `url`, owned by the store."""
        timeout = cls.errors.check.seconds(options.get("timeout", DEFAULT_TIMEOUT), "timeout")
        return cls(connect(url, cls.errors, timeout, client_options), owns_client=True, **options)

    async def __aenter__(self) -> Self:
        async with self.deadline(write=False):
            await self._configure(write=False)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store: later calls raise the closed error. Closes the client too if the
        store opened it (`from_url`)."""
        if self._closed:
            return
        self._closed = True
        self._run.close()
        if self._owns_client:
            try:
                async with asyncio.timeout(self.timeout):
                    await close(self.redis)
            except Exception:  # closing must not fail: the sockets are dropped either way
                pass

    @asynccontextmanager
    async def deadline(self, write: bool) -> AsyncIterator[None]:
        """One call (or one page of an iterator): refused once closed, bounded by `timeout`,
        redis-py's errors mapped. Store methods get it from `reading`/`writing`."""
        self._enter()
        deadline = asyncio.get_running_loop().time() + self.timeout
        started = _deadline.set(deadline)
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except Exception as exc:
            if isinstance(exc, self.errors.base | Miss):
                raise
            raise self._translate(exc, write) from exc
        finally:
            _deadline.reset(started)

    @reading
    async def check(self) -> dict[str, Any]:
        """A report on the server and the store: the server's name, version, role,
        connected replicas and AOF, the store's settings, its records indexed, and
        `warnings` (a list of sentences) about what the server cannot keep."""
        await self._configure(write=False)
        half = self.timeout / 2  # a node that does not answer is reported, not waited for
        report, indexed = await asyncio.gather(
            server_report(self.redis, self._durability, half),
            self._indexed(asyncio.get_running_loop().time() + half),
        )
        if isinstance(indexed, Exception):
            report["warnings"].append(f"the {self.index} could not be counted: {indexed}")
            indexed = None
        settings = {name.lower(): v for name, v in self.constants.items() if name != "OUTBOX"}
        return {
            **report,
            "prefix": self.prefix,
            "shards": self.shards,
            f"{self.index}_indexed": indexed,
            **settings,
        }

    async def _indexed(self, deadline: float) -> int | Exception:
        """The records in the shard indexes, or why they could not be counted by `deadline`."""
        keys = shard_keys(self.prefix, self.shards, self.index)
        try:
            counts = await self._run.read([("ZCARD", key) for key in keys], deadline)
        except (RedisError, OSError) as exc:
            return exc
        for key, count in zip(keys, counts, strict=True):
            self._raise_for(key, [count])
        return sum(map(int, counts))

    @contextmanager
    def decoding(self, key: str) -> Iterator[None]:
        """Data read from `key` that does not decode is corrupt data, naming the key."""
        try:
            yield
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise self.errors.corrupt(key, f"undecodable: {exc!r}") from None

    def _call_deadline(self) -> float:
        """When the write under way must be done (on the loop's clock)."""
        deadline = _deadline.get()
        return asyncio.get_running_loop().time() + self.timeout if deadline is None else deadline

    def _enter(self) -> None:
        """Where every call starts: refused once closed; in a child process forked from the
        one that made the store, a producer id, a script queue and sockets of its own."""
        if self._closed:
            raise self.errors.closed(f"the store on prefix {self.prefix!r} is closed")
        if self._forks != _forks:
            self._new_producer()
            self._run.forked()
            self._run = Runner(self.redis, self.scripts, self.constants, self._durability)

    def _translate(self, exc: Exception, write: bool) -> Exception:
        """The store's exception for one that is not of its tree (the one map of them):
        redis-py's errors, timeouts, and anything else (a bug), wrapped in the tree's base
        class with the original as its cause."""
        if isinstance(exc, RedisClusterException):  # no slot map yet, or a slot not covered
            return self._unavailable(f"the cluster cannot take the call now: {exc}", write)
        if not isinstance(exc, RedisError | OSError):
            return self.errors.base(f"unexpected {type(exc).__name__}: {exc}")
        if isinstance(exc, NotSent):
            return self.errors.unavailable(f"Redis unreachable, the call was not sent: {exc}")
        if isinstance(exc, TimeoutError):
            return self._unavailable(f"no reply within {self.timeout:g}s", write)
        if isinstance(exc, _DENIED) or _denied(str(exc)):  # names the command; never retried
            detail = str(exc).replace("EXEC without MULTI", "the 'multi' command was refused")
            return self.errors.denied(f"Redis denied the call: {detail}")
        if isinstance(exc, _TRANSIENT):
            return self._unavailable(f"Redis refused the call for now: {exc}", write)
        if isinstance(exc, ResponseError):
            return self.errors.refused(f"Redis refused the call: {exc}")
        return self._unavailable(f"Redis unreachable: {exc}", write)

    def _unavailable(self, message: str, write: bool) -> Exception:
        return self.errors.unavailable(f"{message} ({OUTCOME_UNKNOWN})" if write else message)

    async def _configure(self, write: bool) -> None:
        """Check the prefix's recorded shard count; the first write records it. Reads
        never write: an unrecorded prefix is simply empty."""
        if self._recorded:
            return
        async with self._configuring:
            if self._recorded:
                return
            key = config_key(self.prefix)
            commands = [("HSETNX", key, "shards", self.shards)] if write else []
            replies = await self._run.read(
                [*commands, ("HGET", key, "shards")], self._call_deadline()
            )
            self._raise_for(key, replies)
            recorded = replies[-1]
            if recorded is None:
                return
            if not recorded.isdigit():
                raise self.errors.corrupt(key, f"shards is {recorded!r}, not a number")
            if int(recorded) != self.shards:
                raise self.errors.mismatch(
                    f"prefix {self.prefix!r} was set up with {int(recorded)} shards, this store "
                    f"has {self.shards}: open it with shards={int(recorded)} (fixed per prefix)"
                )
            self._recorded = True

    def _raise_for(self, key: str, replies: Sequence[Any]) -> None:
        """Raise the first error among `replies` to commands on `key`: a wrong type is
        corrupt data; any other error is the server's (mapped by `deadline`)."""
        for reply in replies:
            if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
                raise self.errors.corrupt(key, "the key holds a value of the wrong type")
            if isinstance(reply, Exception):
                raise reply

    async def _write(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run write script `name` with retry dedup: this store's producer id and the call's
        number go first in ARGV (see lua/_common.lua)."""
        deadline = self._call_deadline()
        if not self._recorded:  # the runner keeps the deadline
            await self._configure(write=True)
        # No await between numbering the call and queueing it: calls leave in number order.
        args = (self._producer, next(self._numbers[hash_tag(keys[0])]), *args)
        return await self._script(name, keys, args, deadline=deadline)

    async def _script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        record: bool = True,
        deadline: float | None = None,
    ) -> Any:
        """Run script `name` within `deadline` (the loop's clock; default: `timeout` from
        now). A script error is diagnosed: a key of a type the store never writes there, or
        stream entries it did not write, is corrupt data, naming the key. `record`: the
        call creates data, so the shard count must be recorded first."""
        if deadline is None:
            deadline = self._call_deadline()
        if not self._recorded:  # the runner keeps the deadline
            await self._configure(write=record)
        try:
            reply = await self._run(name, tuple(keys), tuple(args), deadline, record)
        except ResponseError as exc:
            if type(exc) is not ResponseError or _denied(str(exc)):  # the server's refusal
                raise
            async with asyncio.timeout_at(deadline):
                raise await self._diagnose(exc, name, keys) from exc
        return self._confirmed(reply) if record else getattr(reply, "reply", reply)

    def _confirmed(self, reply: Any) -> Any:
        """A write's reply; NotReplicated if the write applied but the wait for `replicas`
        (or `fsync`) fell short. A listing's cleanup (`record=False`) promises nothing."""
        if not isinstance(reply, Unconfirmed):
            return reply
        if reply.applied:
            raise self.errors.unreplicated(
                f"the write is applied on the primary but not confirmed: {reply.why}; it needs "
                "no retry (a retry is a new write: pass an idempotency_key to make it safe)"
            )
        return reply.reply

    async def _command(self, *command: Any) -> Any:
        """One command that is a whole write (atomic and idempotent as it is), pipelined with
        the store's other writes; a wrong-typed key is corrupt data, naming it."""
        deadline = self._call_deadline()
        if not self._recorded:  # the runner keeps the deadline
            await self._configure(write=True)
        try:
            reply = await self._run.command(command, deadline)
        except ResponseError as exc:
            self._raise_for(str(command[1]), [exc])
            raise
        return self._confirmed(reply)

    async def _diagnose(self, exc: ResponseError, name: str, keys: Sequence[str]) -> Exception:
        found_types = await self._run.read([("TYPE", key) for key in keys], self._call_deadline())
        for key, found in zip(keys, found_types, strict=True):
            self._raise_for(key, [found])  # TYPE refused: the diagnosis cannot be made
        for key, found, expected in zip(keys, found_types, key_types(name, len(keys)), strict=True):
            if expected and found not in (b"none", expected.encode()):
                return self.errors.corrupt(key, f"expected a {expected}, found a {found.decode()}")
        if "XADD" in str(exc):  # stream entries with ids this store did not write
            return self.errors.corrupt(keys[0], str(exc))
        return self.errors.refused(f"Redis refused the call: {exc}")

    async def _commands(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run reads in one round trip per server; their raw replies. A wrong-typed key is
        corrupt data, naming it."""
        await self._configure(write=False)
        replies = await self._run.read(commands, self._call_deadline())
        for command, reply in zip(commands, replies, strict=True):
            self._raise_for(str(command[1]) if len(command) > 1 else "", [reply])
        return replies

    async def _forget(self, record: str, indexes: Sequence[tuple[str, Any]]) -> None:
        """Drop the index entries of an id whose `record` key is gone, atomically and only
        if it is still gone (an id re-created meanwhile stays listed)."""
        keys = (record, *(key for key, _ in indexes))
        await self._script("forget", keys, [member for _, member in indexes], record=False)


def _durability(
    check: Checks, replicas: int, replica_timeout: float, fsync: bool, timeout: float
) -> Durability:
    """The store's wait after each write: `replicas` replicas, and its disk with `fsync`,
    within `replica_timeout` seconds (less than the call's `timeout`)."""
    replicas = check.integer(replicas, "replicas", 0, 1000)
    wait = check.seconds(replica_timeout, "replica_timeout")
    if not isinstance(fsync, bool):
        raise check.invalid(f"fsync must be True or False, got {fsync!r}")
    if (replicas or fsync) and wait >= timeout:
        raise check.invalid(f"replica_timeout={wait:g} must be less than timeout={timeout:g}")
    return Durability(replicas, max(1, round(wait * 1000)), fsync)


def pairs(reply: Any) -> list[tuple[Any, Any]]:
    """Field-value pairs of a raw HGETALL or WITHSCORES reply: a flat list in RESP2, a map
    or a list of pairs in RESP3 (fakeredis answers in RESP3 form)."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list):
        return [(first, second) for first, second in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))
