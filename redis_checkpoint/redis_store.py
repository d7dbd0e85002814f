"""`RedisPersistenceStore`: every mutation is one Lua script call, atomic on the server.

Keys follow `keys.py`: a stream, a hash and a list per trace (plus its retry-dedup state),
under the hash tag of the trace's virtual shard, next to the shard's indexes. `load` reads
a snapshot in pages: the meta, the interventions and the first page in one MULTI/EXEC, then
the rest of the stream up to the count that snapshot saw.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from operator import attrgetter
from typing import Any, Self, TypedDict, Unpack

from redis.asyncio import Redis, RedisCluster

from .client import Miss, RedisBacked, reading, writing
from .codec import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_ENVELOPE_BYTES,
    Batch,
    decode_envelope,
    decode_intervention,
    encode_intervention,
    trusted,
)
from .connection import DEFAULT_TIMEOUT
from .errors import (
    TREE,
    CircuitMismatch,
    CorruptRecord,
    InvalidInput,
    TraceCompleted,
    TraceNotFound,
)
from .keys import TraceKeys
from .listing import iter_index
from .models import (
    U64_MAX,
    CompletionState,
    Intervention,
    PersistedTrace,
    PersistenceEnvelope,
    ResumeCursor,
    TraceSummary,
)
from .outbox import TraceSnapshot
from .scripts import Reply

log = logging.getLogger(__name__)

_STEP = attrgetter("step")
PAGE = 1000  # stream entries per read: no single command holds the server for long
META_FIELDS = ("circuit", "version", "completion", "resumed", "n", "created", "ni", "o")
DEFAULT_IDEMPOTENCY_WINDOW = 86_400.0


class Options(TypedDict, total=False):
    """The store keywords `from_url` passes on."""

    prefix: str
    shards: int
    ttl: float | None
    completed_ttl: float | None
    max_envelope_bytes: int
    max_batch_bytes: int
    idempotency_window: float
    timeout: float
    replicas: int
    replica_timeout: float
    fsync: bool


class _Changed(Exception):
    """The trace was deleted or re-created while it was read in pages."""


class RedisPersistenceStore(RedisBacked):
    """A `PersistenceStore` on Redis (or Valkey, or fakeredis), safe for concurrent writers.

    Args:
        redis: an async client; the store does not close it unless it opened it.
        prefix: the key prefix; stores sharing a prefix share traces.
        shards: virtual shards, fixed per prefix (recorded by the first write, then checked).
        ttl: seconds a trace lives after its last write (sliding); None keeps it.
        completed_ttl: seconds a trace lives after `complete`; None falls back to `ttl`.
        max_envelope_bytes: the largest encoded envelope accepted.
        max_batch_bytes: the largest encoded `append_many` batch accepted.
        idempotency_window: seconds an `idempotency_key` is remembered.
        timeout: seconds one call may take, all retries included.
        replicas: after each write, wait (WAIT, in the same round trip) for this many
            replicas to confirm it; fewer within `replica_timeout` raise NotReplicated
            (the write is applied on the primary). 0: no wait.
        replica_timeout: seconds that wait may take (less than `timeout`).
        fsync: also wait for the primary's AOF to reach its disk (WAITAOF: Redis 7.2+ or
            Valkey, with appendonly yes), and the replicas' with `replicas`.
    """

    errors = TREE
    scripts = (
        *("append", "resume", "complete", "save_intervention", "delete", "forget"),
        *("warm", "settle", "take"),  # a tiered store's cache's
    )
    index = "traces"

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str = "rc",
        shards: int = 64,
        ttl: float | None = None,
        completed_ttl: float | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        timeout: float = DEFAULT_TIMEOUT,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        fsync: bool = False,
        owns_client: bool = False,
    ) -> None:
        check = TREE.check
        self._ttl = check.ttl_ms(ttl, "ttl")
        self._completed_ttl = check.ttl_ms(completed_ttl, "completed_ttl")
        self._max_bytes = check.integer(max_envelope_bytes, "max_envelope_bytes", 1)
        self._max_batch = check.integer(max_batch_bytes, "max_batch_bytes", 1)
        self.constants = {  # see lua/_trace.lua
            "TTL_MS": self._ttl,
            "COMPLETED_TTL_MS": self._completed_ttl,
            "KEY_WINDOW_MS": check.ttl_ms(idempotency_window, "idempotency_window"),
        }
        super().__init__(
            redis,
            prefix=prefix,
            shards=shards,
            timeout=timeout,
            owns_client=owns_client,
            replicas=replicas,
            replica_timeout=replica_timeout,
            fsync=fsync,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client_options: Mapping[str, Any] | None = None,
        **options: Unpack[Options],
    ) -> Self:
        """Open a store on `redis://`, `rediss://`, `unix://` or `fakeredis://` (no server).

        `client_options` go to redis-py's `Redis.from_url`, over this package's defaults.
        """
        return cls.open_url(url, client_options, options)

    def keys(self, trace_id: str) -> TraceKeys:
        """The keys of a trace (all in one cluster slot)."""
        return TraceKeys.build(self.prefix, self.shards, trace_id)

    async def _trace_write(
        self, name: str, keys: TraceKeys, args: tuple[Any, ...], key: bytes = b""
    ) -> tuple[Reply, Any]:
        """Run a trace script; its common ARGV (see `lua/_trace.lua`) goes first."""
        script_keys = keys.cached if self.outbox else keys.script
        code, detail = await self._write(name, script_keys, (keys.raw_id, key, *args))
        if code == Reply.STALE:
            raise TREE.unavailable(
                "a copy of this call arrived too late to tell whether it was applied"
            )
        if code == Reply.MISS:
            raise Miss(keys.trace_id)
        if code == Reply.BACKPRESSURE:
            raise TREE.backpressure(
                f"the outbox of trace {keys.trace_id}'s shard holds max_backlog="
                f"{self.constants['MAX_BACKLOG']} unflushed changes: not applied; retry later"
            )
        return Reply(code), detail

    def _key(self, idempotency_key: str | None) -> bytes:
        if idempotency_key is None:
            return b""
        return TREE.check.utf8(idempotency_key, "idempotency_key")

    @writing
    async def append(
        self, envelope: PersistenceEnvelope, idempotency_key: str | None = None
    ) -> None:
        """Append one envelope; see `PersistenceStore.append`.

        A call retried after a lost connection is applied at most once. Pass
        `idempotency_key` to make your own retries (after `StoreUnavailable`) safe as well.
        """
        await self._append(Batch([envelope], self._max_bytes, self._max_batch), idempotency_key)

    @writing
    async def append_many(
        self, envelopes: Iterable[PersistenceEnvelope], idempotency_key: str | None = None
    ) -> None:
        """Append envelopes of one trace, all or nothing, in one round trip.

        Raises:
            InvalidInput: the batch mixes traces or circuits, or its encoded size is over
                `max_batch_bytes` (InvalidEnvelope, EnvelopeTooLarge for one envelope).
        """
        items = TREE.check.items(envelopes, "envelopes")
        if items:
            await self._append(Batch(items, self._max_bytes, self._max_batch), idempotency_key)

    async def _append(self, batch: Batch, idempotency_key: str | None) -> None:
        keys = self.keys(batch.trace_id)
        args = (batch.circuit, batch.schematic_version, *batch.blobs)
        code, detail = await self._trace_write("append", keys, args, self._key(idempotency_key))
        if code == Reply.MISMATCH:
            raise CircuitMismatch(batch.trace_id, detail.decode(), batch.circuit.decode())
        if code == Reply.COMPLETED:
            raise TraceCompleted(batch.trace_id, "accept new events")

    @reading
    async def load(self, trace_id: str) -> PersistedTrace | None:
        """The trace, events sorted by step with ties in append order; None if unknown.

        A snapshot: what was appended before the call started, read in pages of `PAGE`.
        """
        return await self._load(self.keys(trace_id), probe=False)

    @reading
    async def cached_load(self, trace_id: str) -> PersistedTrace | None:
        """`load` for a tiered store: None only if the cache knows there is no such trace
        (a marker a warm left, or a delete).

        Raises:
            Miss: the cache does not hold the trace whole (a volatile-* maxmemory policy
                evicts keys one by one: the warm drops what is left).
        """
        return await self._load(self.keys(trace_id), probe=True)

    async def _load(self, keys: TraceKeys, probe: bool) -> PersistedTrace | None:
        for _ in range(3):
            snapshot = await self._snapshot(keys, probe)
            if snapshot is None:
                return None
            meta, items, first = snapshot
            try:
                entries = [entry async for page in self._pages(keys, meta, first) for entry in page]
            except _Changed:
                continue
            if probe:
                await self._check_whole(keys, meta, len(items), len(entries))
            return self._trace(keys, meta, items, entries)
        raise TREE.unavailable(f"trace {keys.trace_id} kept being re-created while it was read")

    async def _check_whole(
        self, keys: TraceKeys, meta: dict[bytes, bytes], items: int, n: int
    ) -> None:
        """Raise Miss if the cache lost part of the trace (keys are evicted one by one)."""
        if n == self._number(keys, meta, b"n") and items == self._number(keys, meta, b"ni"):
            return
        if b"o" in meta:  # only an allkeys-* maxmemory policy evicts a key without a TTL
            raise TREE.corrupt(
                keys.stream,
                "the cache evicted part of a trace whose changes are not flushed yet: a "
                "write-behind cache needs maxmemory-policy volatile-* or noeviction",
            )
        raise Miss(keys.trace_id)  # the warm drops what is left, if it still is

    @writing
    async def warm(self, trace_id: str, token: bytes, snapshot: TraceSnapshot | None) -> bool:
        """Put the durable store's `snapshot` (None: it has no such trace) into the cache,
        under the lease `token` (`lease`). False if it wrote nothing: the cache holds the
        trace whole (warmed or written since), or a write invalidated it since."""
        keys = self.keys(trace_id)
        args: tuple[Any, ...] = (keys.raw_id, b"", token, b"")
        if snapshot is not None:
            s = snapshot
            resumed = "" if s.resumed is None else s.resumed
            head = (s.circuit, s.version, s.completion or "", resumed, s.created_ms, s.updated_ms)
            counts = (len(s.blobs), len(s.interventions))
            recent = [part for key, at in s.keys for part in (key, at)]
            args = (keys.raw_id, b"", token, *head, *counts, *s.blobs, *s.interventions, *recent)
        code, _ = await self._write("warm", keys.cached, args)
        return bool(code == Reply.OK)

    async def iter_events(self, trace_id: str) -> AsyncIterator[PersistenceEnvelope]:
        """The envelopes of a trace in append order, read in pages (bounded memory); none
        for an unknown trace. Each page is bounded by the store's deadline.

        Raises:
            StoreUnavailable: the trace was deleted or re-created while it was read.
        """
        keys = self.keys(trace_id)
        async with self.deadline(write=False):
            snapshot = await self._snapshot(keys)
        if snapshot is None:
            return
        meta, _, page = snapshot
        circuit = self._text(keys, meta, b"circuit")
        pages = self._pages(keys, meta, page)
        while True:
            async with self.deadline(write=False):
                try:
                    entries = await anext(pages, None)
                except _Changed:
                    message = f"trace {trace_id} was deleted while it was read"
                    raise TREE.unavailable(message) from None
            if entries is None:
                return
            for envelope in self._decode(keys, entries, circuit):
                yield envelope

    async def _snapshot(
        self, keys: TraceKeys, probe: bool = False
    ) -> tuple[dict[bytes, bytes], list[bytes], Any] | None:
        """The meta, interventions and first page of a trace, atomically; None if there is
        no trace. `probe`: raise Miss if the meta hash does not exist (a tiered cache's)."""
        await self._configure(write=False)
        commands: list[tuple[Any, ...]] = [
            ("HMGET", keys.meta, *META_FIELDS),  # not the producers' dedup fields
            ("LRANGE", keys.interventions, 0, -1),
            ("XRANGE", keys.stream, "-", "+", "COUNT", PAGE),
        ]
        if probe:
            commands.append(("EXISTS", keys.meta))
        replies = await self._run.atomic(commands, self._call_deadline())
        read = (keys.meta, keys.interventions, keys.stream, keys.meta)
        for key, reply in zip(read, replies, strict=False):
            self._raise_for(key, [reply])
        if probe and not replies[3]:
            raise Miss(keys.trace_id)
        values, items, first = replies[:3]
        meta = {field.encode(): v for field, v in zip(META_FIELDS, values, strict=True) if v}
        return (meta, items, first) if b"circuit" in meta else None  # else: no trace

    async def _pages(
        self, keys: TraceKeys, meta: dict[bytes, bytes], page: list[Any]
    ) -> AsyncIterator[list[Any]]:
        """The stream's entries up to the snapshot's count, `page` first, then a MULTI per
        page that also checks the trace is the one the snapshot saw."""
        count = self._number(keys, meta, b"n")
        while True:
            yield page
            done = int(page[-1][0].split(b"-")[1]) if page else count
            if done >= count or len(page) < PAGE:
                return
            commands = [
                ("HGET", keys.meta, "created"),
                ("XRANGE", keys.stream, f"0-{done + 1}", f"0-{count}", "COUNT", PAGE),
            ]
            created, page = await self._run.atomic(commands, self._call_deadline())
            self._raise_for(keys.stream, [created, page])
            if created != meta.get(b"created"):
                raise _Changed

    def _trace(
        self, keys: TraceKeys, meta: dict[bytes, bytes], items: list[bytes], entries: list[Any]
    ) -> PersistedTrace:
        circuit = self._text(keys, meta, b"circuit")
        try:  # trusted, as its envelopes are: validating 10,000 of them again is slow
            return trusted(
                PersistedTrace,
                {
                    "trace_id": keys.trace_id,
                    "circuit": circuit,
                    "schematic_version": self._text(keys, meta, b"version"),
                    "events": sorted(self._decode(keys, entries, circuit), key=_STEP),
                    "interventions": [decode_intervention(item) for item in items],
                    "resumed_from_step": _int_or_none(meta.get(b"resumed")),
                    "completion": _completion_or_none(meta.get(b"completion")),
                },
            )
        except (ValueError, TypeError) as exc:
            raise TREE.corrupt(keys.meta, f"undecodable trace data: {exc}") from None

    def _decode(
        self, keys: TraceKeys, entries: list[Any], circuit: str
    ) -> list[PersistenceEnvelope]:
        try:
            return [decode_envelope(fields[1], keys.trace_id, circuit) for _, fields in entries]
        except (ValueError, IndexError) as exc:
            raise TREE.corrupt(keys.stream, f"undecodable envelope: {exc}") from None

    @staticmethod
    def _text(keys: TraceKeys, meta: dict[bytes, bytes], field: bytes) -> str:
        try:
            return meta[field].decode()
        except (KeyError, UnicodeDecodeError) as exc:
            raise TREE.corrupt(keys.meta, f"field {field.decode()}: {exc!r}") from None

    @staticmethod
    def _number(keys: TraceKeys, meta: dict[bytes, bytes], field: bytes) -> int:
        raw = meta.get(field, b"0")
        if not raw.isdigit():
            raise TREE.corrupt(keys.meta, f"field {field.decode()} is {raw!r}, not a count")
        return int(raw)

    @writing
    async def resume(self, trace_id: str, resume_from_step: int) -> ResumeCursor:
        """Record the resume step; see `PersistenceStore.resume`."""
        step = TREE.check.integer(resume_from_step, "resume_from_step", 0)
        code, _ = await self._trace_write("resume", self.keys(trace_id), (step,))
        if code == Reply.NOT_FOUND:
            raise TraceNotFound(trace_id)
        if code == Reply.COMPLETED:
            raise TraceCompleted(trace_id, "be resumed")
        return ResumeCursor(trace_id=trace_id, next_step=min(step + 1, U64_MAX))

    @writing
    async def complete(self, trace_id: str, completion: CompletionState) -> None:
        """Set the completion state, overwriting; `completed_ttl` applies from here."""
        state = TREE.check.member(completion, CompletionState, "completion")
        code, _ = await self._trace_write("complete", self.keys(trace_id), (state.value,))
        if code == Reply.NOT_FOUND:
            raise TraceNotFound(trace_id)

    @writing
    async def save_intervention(
        self, trace_id: str, intervention: Intervention, idempotency_key: str | None = None
    ) -> None:
        """Append an intervention, also on a completed trace; retry-safe like append."""
        blob = encode_intervention(intervention)
        keys = self.keys(trace_id)
        code, _ = await self._trace_write(
            "save_intervention", keys, (blob,), self._key(idempotency_key)
        )
        if code == Reply.NOT_FOUND:
            raise TraceNotFound(trace_id)

    @writing
    async def delete(self, trace_id: str) -> bool:
        """Remove a trace and its index entries; returns whether it existed (a retry of a
        delete whose reply was lost reports True)."""
        code, existed = await self._trace_write("delete", self.keys(trace_id), ())
        return code == Reply.DUPLICATE or bool(existed)

    async def iter_traces(
        self, *, circuit: str | None = None, completed: bool | None = None, page: int = 100
    ) -> AsyncIterator[TraceSummary]:
        """Every live trace once, most recently updated first, optionally filtered.

        A trace that lives through the whole listing is returned exactly once, even if
        written meanwhile; an expired one never, and its index entries are dropped. Pages of
        `page` traces cost a pipelined round trip each, each bounded by the deadline.
        """
        check = TREE.check
        circuit = check.optional_text(circuit, "circuit")
        completed = check.optional_bool(completed, "completed")
        page = check.integer(page, "page", 1, 10_000)
        async with self.deadline(write=False):
            await self._configure(write=False)
        ids = aiter(iter_index(self._commands, self.prefix, self.shards, "traces", page))
        while True:
            async with self.deadline(write=False):
                batch = [raw async for raw in _take(ids, page)]
                summaries = await self._summaries(batch)
            if not batch:
                return
            for summary in summaries:
                if (circuit is None or summary.circuit == circuit) and (
                    completed is None or (summary.completion is not None) == completed
                ):
                    yield summary

    async def _summaries(self, ids: list[bytes]) -> list[TraceSummary]:
        """Summaries of a page of ids; ids whose trace has expired leave the indexes, and a
        trace whose data does not decode is skipped (one corrupt trace hides no other)."""
        keys = []
        for raw in ids:
            try:
                keys.append(self.keys(raw.decode()))
            except (UnicodeDecodeError, InvalidInput):
                log.warning("listing skips index member %r: not a trace id", raw)
        commands: list[tuple[Any, ...]] = []
        for k in keys:
            fields = ("circuit", "version", "n", "resumed", "completion", "updated")
            commands += [("HMGET", k.meta, *fields), ("LLEN", k.interventions)]
        replies = await self._run.read(commands, self._call_deadline())
        summaries = []
        for k, meta, n_interventions in zip(keys, replies[::2], replies[1::2], strict=True):
            try:
                self._raise_for(k.meta, [meta, n_interventions])
                if meta[0] is None:
                    await self._forget(k.meta, [(k.index, k.raw_id), (k.expiry, k.raw_id)])
                    continue
                with self.decoding(k.meta):
                    summaries.append(_summary(k.trace_id, meta, n_interventions))
            except CorruptRecord as exc:
                log.warning("listing skips trace %r: %s", k.trace_id, exc)
        return summaries


async def _take(items: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        item = await anext(items, None)
        if item is None:
            return
        yield item


def _int_or_none(raw: bytes | None) -> int | None:
    if raw is not None and not (raw.isdigit() and int(raw) <= U64_MAX):
        raise ValueError(f"{raw!r} is not a step")
    return None if raw is None else int(raw)


def _completion_or_none(raw: bytes | None) -> CompletionState | None:
    return None if raw is None else CompletionState(raw.decode())


def _summary(trace_id: str, meta: list[bytes | None], interventions: int) -> TraceSummary:
    circuit, version, n, resumed, completion, updated = meta
    if circuit is None or version is None:
        raise ValueError("the meta hash has no circuit or version")
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
