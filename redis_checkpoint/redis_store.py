"""`RedisPersistenceStore`: every mutation is one Lua script call, atomic on the server.

Keys follow `keys.py`: one stream, one hash and one list per trace, under the hash tag of
the trace's virtual shard, next to the shard's indexes. Reads are one MULTI/EXEC round trip,
so `load` sees one consistent snapshot.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from operator import attrgetter
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .client import RedisBacked
from .codec import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Batch,
    decode_envelope,
    decode_intervention,
    encode_intervention,
)
from .errors import (
    CircuitMismatch,
    ConfigMismatch,
    CorruptRecord,
    PersistenceError,
    StoreUnavailable,
    TraceCompleted,
    TraceNotFound,
)
from .keys import TraceKeys, shard_keys
from .listing import iter_shard_index
from .models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
    as_completion,
    as_size,
    as_step,
    as_ttl_ms,
)
from .scripts import ScriptRunner

T = TypeVar("T")
log = logging.getLogger(__name__)

_OPERATIONS = ("append", "resume", "complete", "save_intervention", "delete")
_EXPECTED_TYPES = ("stream", "hash", "list", "zset", "zset")  # of TraceKeys.script
_NOT_FOUND, _COMPLETED, _MISMATCH = 3, 2, 1


class RedisPersistenceStore(RedisBacked):
    """A `PersistenceStore` on Redis (or Valkey, or fakeredis), safe for concurrent writers.

    Args:
        redis: an async client; the store does not close it unless it opened it.
        prefix: the key prefix; stores sharing a prefix share traces.
        shards: virtual shards, fixed per prefix (recorded at first use and checked).
        ttl: seconds a trace lives after its last write (sliding); None keeps it.
        completed_ttl: seconds a trace lives after `complete`; None falls back to `ttl`.
        max_envelope_bytes: the largest encoded envelope accepted.
        clock: returns the time in seconds; stamps `updated_ms` and index deadlines.
    """

    unavailable = StoreUnavailable
    mismatch = ConfigMismatch
    refused = PersistenceError

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "rc",
        shards: int = 64,
        ttl: float | None = None,
        completed_ttl: float | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        clock: Callable[[], float] = time.time,
        owns_client: bool = False,
    ) -> None:
        super().__init__(redis, prefix, shards, owns_client)
        self._ttl = as_ttl_ms(ttl, "ttl")
        self._completed_ttl = as_ttl_ms(completed_ttl, "completed_ttl")
        self._max_bytes = as_size(max_envelope_bytes, "max_envelope_bytes")
        self._clock = clock
        self._run = ScriptRunner(redis, _OPERATIONS)

    def keys(self, trace_id: str) -> TraceKeys:
        """The keys of a trace (all in one cluster slot)."""
        return TraceKeys.build(self.prefix, self.shards, trace_id)

    def corrupt(self, key: str, detail: str) -> Exception:
        return CorruptRecord(key, detail)

    async def _script(self, name: str, keys: TraceKeys, *args: Any) -> list[Any]:
        """Run a trace script; the common ARGV prefix of `_trace.lua` comes first."""
        await self._configure()
        now = int(self._clock() * 1000)
        argv = (keys.raw_id, now, self._ttl, self._completed_ttl, *args)
        try:
            return list(await self._io(self._run(name, keys.script, argv)))
        except ResponseError as exc:
            raise await self._diagnose(exc, keys.script, _EXPECTED_TYPES, keys.stream) from exc

    async def append(self, envelope: PersistenceEnvelope) -> None:
        """Append one envelope; see `PersistenceStore.append`."""
        await self.append_many([envelope])

    async def append_many(self, envelopes: list[PersistenceEnvelope]) -> None:
        """Append envelopes of one trace, all or nothing, in one round trip.

        A retry of the same call after a connection error is applied at most once: the
        call's tag travels with every attempt and the script remembers recent tags.
        """
        if not envelopes:
            return
        batch = Batch(envelopes, self._max_bytes)
        keys = self.keys(batch.trace_id)
        tag = os.urandom(8)
        code, detail = await self._script(
            "append", keys, batch.circuit, batch.schematic_version, tag, *batch.blobs
        )
        if code == _MISMATCH:
            raise CircuitMismatch(batch.trace_id, detail.decode(), batch.circuit)
        if code == _COMPLETED:
            raise TraceCompleted(batch.trace_id, "accept new events")

    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace, events sorted by step with ties in append order; None if unknown."""
        keys = self.keys(trace_id)
        await self._configure()
        async with self.redis.pipeline(transaction=True) as pipe:
            # A bytes command name skips redis-py's reply callback for XRANGE, which builds
            # a dict per entry; the raw [id, [field, value]] pairs are all load needs.
            pipe.execute_command(b"XRANGE", keys.stream, "-", "+")
            pipe.hgetall(keys.meta)
            pipe.lrange(keys.interventions, 0, -1)
            replies = await self._io(pipe.execute(raise_on_error=False))
        for key, reply in zip(keys.own, replies, strict=True):
            if isinstance(reply, ResponseError):
                raise CorruptRecord(key, str(reply))
        entries, meta, items = replies
        if not meta:
            return None
        try:
            circuit = meta[b"circuit"].decode()
            events = [decode_envelope(fields[1], trace_id, circuit) for _, fields in entries]
            interventions = [decode_intervention(item) for item in items]
            trace = PersistedTrace(
                trace_id=trace_id,
                circuit=circuit,
                schematic_version=meta[b"version"].decode(),
                events=sorted(events, key=attrgetter("step")),  # stable: ties keep append order
                interventions=interventions,
                resumed_from_step=_int_or_none(meta.get(b"resumed")),
                completion=_completion_or_none(meta.get(b"completion")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptRecord(keys.stream, f"undecodable trace data: {exc}") from None
        return trace

    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        step = as_step(resume_from_step)
        code, _ = await self._script("resume", self.keys(trace_id), step)
        if code == _NOT_FOUND:
            raise TraceNotFound(trace_id)
        if code == _COMPLETED:
            raise TraceCompleted(trace_id, "be resumed")
        return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))

    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; `completed_ttl` applies from here."""
        state = as_completion(completion)
        code, _ = await self._script("complete", self.keys(trace_id), state.value)
        if code == _NOT_FOUND:
            raise TraceNotFound(trace_id)

    async def save_intervention(self, trace_id: str, intervention: Intervention) -> None:
        """Append an intervention, also on a completed trace; retry-safe like append."""
        blob = encode_intervention(intervention)
        code, _ = await self._script("save_intervention", self.keys(trace_id), os.urandom(8), blob)
        if code == _NOT_FOUND:
            raise TraceNotFound(trace_id)

    async def delete(self, trace_id: str) -> bool:
        """Remove a trace and its index entries; returns whether it existed."""
        _, existed = await self._script("delete", self.keys(trace_id))
        return bool(existed)

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace, most recently updated first, optionally filtered.

        Pages of `page` traces cost one pipelined round trip each. Like SCAN, a trace
        updated while the iteration runs may be seen twice or not at all.
        """
        await self._configure()
        async for ids in iter_shard_index(self.redis, self.prefix, self.shards, "traces", page):
            for summary in await self._summaries(ids):
                if (circuit is None or summary.circuit == circuit) and (
                    completed is None or (summary.completion is not None) == completed
                ):
                    yield summary

    async def _summaries(self, ids: list[bytes]) -> list[TraceSummary]:
        """Summaries of a page of ids; ids whose trace has expired leave the index."""
        keys = [self.keys(raw.decode()) for raw in ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(k.meta, "circuit", "version", "n", "resumed", "completion", "updated")
                pipe.llen(k.interventions)
            replies = await self._io(pipe.execute(raise_on_error=False))
        summaries, stale = [], []
        for k, meta, n_interventions in zip(keys, replies[::2], replies[1::2], strict=True):
            if isinstance(meta, Exception) or isinstance(n_interventions, Exception):
                log.warning("skipping corrupt trace %r in listing: %s", k.meta, meta)
            elif meta[0] is None:
                stale.append(k)
            else:
                summaries.append(_summary(k.trace_id, meta, n_interventions))
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in stale:
                    pipe.zrem(k.index, k.raw_id)
                    pipe.zrem(k.expiry, k.raw_id)
                await self._io(pipe.execute())
        return summaries

    async def check(self) -> dict[str, Any]:
        """A report on the server and the store: version, shards, live trace count."""
        await self._configure()
        if type(self.redis).__module__.startswith("fakeredis"):
            info: dict[str, Any] = {"server_name": "fakeredis", "redis_version": "in-process"}
        else:
            info = await self._io(self.redis.info("server"))
        server = str(info.get("server_name") or "redis")
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in shard_keys(self.prefix, self.shards, "traces"):
                pipe.zcard(key)
            counts = await self._io(pipe.execute())
        return {
            "server": server,
            "version": str(info.get("valkey_version") or info.get("redis_version", "?")),
            "prefix": self.prefix,
            "shards": self.shards,
            "traces_indexed": sum(counts),
            "ttl_ms": self._ttl,
            "completed_ttl_ms": self._completed_ttl,
        }


def _int_or_none(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)


def _completion_or_none(raw: bytes | None) -> CompletionState | None:
    return None if raw is None else CompletionState(raw.decode())


def _summary(trace_id: str, meta: list[bytes | None], interventions: int) -> TraceSummary:
    circuit, version, n, resumed, completion, updated = meta
    assert circuit is not None and version is not None
    return TraceSummary(
        trace_id=trace_id,
        circuit=circuit.decode(),
        schematic_version=version.decode(),
        events=int(n or 0),
        interventions=interventions,
        resumed_from_step=_int_or_none(resumed),
        completion=_completion_or_none(completion),
        updated_ms=int(updated or 0),
    )
