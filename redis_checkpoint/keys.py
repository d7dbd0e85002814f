"""Pure key builders: virtual shards, one hash tag per write, escaped ids.

Every key of a trace (or workflow) starts with the hash tag `{<prefix>:<shard>}`, with
`shard = crc32(utf8(trace_id)) % shards`, and the shard's own indexes share that tag. So
one script can touch a trace's keys and its shard's indexes in one Redis Cluster slot.

    {rc:17}:t:<id>:s    stream  envelopes, entry id 0-<ordinal>, field e = msgpack envelope
    {rc:17}:t:<id>:m    hash    circuit, version, completion, resumed, n, created, updated;
                                p<producer>: retry dedup (the calls applied)
    {rc:17}:t:<id>:i    list    interventions (msgpack)
    {rc:17}:t:<id>:k    zset    idempotency keys given by callers, by the time applied
    {rc:17}:traces      zset    trace ids by last update (ms): listing
    {rc:17}:expiry      zset    trace ids by expiry deadline (ms): index cleanup
    {rc:17}:w:<wf>:h    stream  events, entry id 0-<seq>, field c (stored.py) or e (JSON, 0.1.0)
    {rc:17}:w:<wf>:m    hash    projection: head, status, type, started, ended (µs); dedup
    {rc:17}:w:<wf>:r    list    seqs of lifecycle events (the run chain's skeleton)
    {rc:17}:w:<wf>:c    set     child workflow ids (a parent's children, in its shard)
    {rc:17}:workflows   zset    workflow ids (score 0: text order)
    {rc:17}:active      zset    started workflows whose status is Running
    {rc:17}:parents     zset    "<child id><parent id>", for parents in this shard
    {rc:17}:timers      zset    "<wf><timer id JSON>" by fire time (µs)
    {rc:pkg}:archives   hash    '["<type>","<hash>"]' -> archive bytes
    {rc:pkg}:deployed   hash    '["<type>","<hash>"]' -> deployed_at (µs)
    {rc:pkg}:routes     hash    workflow type -> content hash
    {rc:vis}:rows       hash    workflow id -> VisibilityRecord JSON
    {rc:17}:waits       string  a counter bumped before each wait for replicas (`replicas`)
    rc:config           hash    shards = the deployment's shard count

Ids are percent-escaped (`%`, `{`, `}`, `:`), so no id can close the hash tag or reach into
another trace's keys.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from uuid import UUID

from .errors import TREE

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", ":": "%3A"})


def shard_of(raw_id: bytes, shards: int) -> int:
    """The virtual shard of an already encoded id."""
    return zlib.crc32(raw_id) % shards


@dataclass(frozen=True, slots=True)
class TraceKeys:
    """All keys of one trace plus its shard's indexes; every one shares one hash tag."""

    trace_id: str
    raw_id: bytes
    stream: str
    meta: str
    interventions: str
    idempotency: str
    index: str
    expiry: str
    outbox: str  # a write-behind cache's (lua/_cache.lua): the shard's outbox stream,
    counter: str  # its counter,
    lease: str  # and the trace's warm lease

    @classmethod
    def build(cls, prefix: str, shards: int, trace_id: str) -> TraceKeys:
        """The keys of `trace_id` (InvalidInput for an id that is not a non-empty string).

        Memoised: a store writes the same traces over and over, and building nine keys
        was a measurable share of a write's client time."""
        TREE.check.utf8(trace_id, "trace_id")
        return _trace_keys(prefix, shards, trace_id)

    @classmethod
    def _build(cls, prefix: str, shards: int, trace_id: str) -> TraceKeys:
        raw = trace_id.encode()
        tag = shard_tag(prefix, shard_of(raw, shards))
        base = f"{tag}:t:{trace_id.translate(_ESCAPES)}"
        return cls(
            trace_id,
            raw,
            stream=f"{base}:s",
            meta=f"{base}:m",
            interventions=f"{base}:i",
            idempotency=f"{base}:k",
            index=f"{tag}:traces",
            expiry=f"{tag}:expiry",
            outbox=f"{tag}:outbox:t",
            counter=f"{tag}:outbox:t:n",
            lease=f"{base}:l",
        )

    @property
    def own(self) -> tuple[str, str, str]:
        """The keys that hold this trace's data (`load` reads them)."""
        return (self.stream, self.meta, self.interventions)

    @property
    def script(self) -> tuple[str, ...]:
        """KEYS[1..6] of every trace script, in the order `lua/_trace.lua` names them."""
        return (*self.own, self.idempotency, self.index, self.expiry)

    @property
    def cached(self) -> tuple[str, ...]:
        """KEYS[1..9] of a trace script a write-behind cache runs (lua/_trace.lua)."""
        return (*self.script, self.outbox, self.counter, self.lease)

    @property
    def settled(self) -> tuple[str, str, str, str]:
        """The keys lua/settle.lua arms the expiry of, the meta hash second."""
        return (self.stream, self.meta, self.interventions, self.idempotency)


_trace_keys = functools.lru_cache(maxsize=4096)(TraceKeys._build)


@dataclass(frozen=True, slots=True)
class WorkflowKeys:
    """All keys of one workflow's history plus its shard's indexes, under one hash tag."""

    workflow_id: str  # the UUID's text: hex and hyphens need no escaping
    history: str
    meta: str
    runs: str
    children: str
    workflows: str
    active: str
    parents: str
    timers: str
    outbox: str  # a write-behind cache's (lua/_cache.lua): the shard's outbox stream,
    counter: str  # its counter,
    lease: str  # and the workflow's warm lease

    @classmethod
    @functools.lru_cache(maxsize=4096)
    def build(cls, prefix: str, shards: int, workflow_id: UUID) -> WorkflowKeys:
        text = str(workflow_id)
        tag = shard_tag(prefix, shard_of(text.encode(), shards))
        base = f"{tag}:w:{text}"
        history, meta, runs, children = (f"{base}:{suffix}" for suffix in "hmrc")
        workflows, active, parents, timers = (
            f"{tag}:{index}" for index in ("workflows", "active", "parents", "timers")
        )
        return cls(
            *(text, history, meta, runs, children, workflows, active, parents, timers),
            outbox=f"{tag}:outbox:w",
            counter=f"{tag}:outbox:w:n",
            lease=f"{base}:l",
        )

    @property
    def own(self) -> tuple[str, str, str, str]:
        """The keys that belong to this workflow alone; `completed_ttl` expires them."""
        return (self.history, self.meta, self.runs, self.children)

    @property
    def script(self) -> tuple[str, ...]:
        """KEYS[1..7] of `lua/append_events.lua`, in the order it names them."""
        return (*self.own, self.workflows, self.active, self.parents)

    @property
    def cached(self) -> tuple[str, ...]:
        """KEYS[1..10] of `lua/append_events.lua` run by a tiered store's cache."""
        return (*self.script, self.outbox, self.counter, self.lease)

    @property
    def settled(self) -> tuple[str, str, str, str]:
        """The keys lua/settle.lua arms the expiry of, the meta hash second."""
        return self.own


def shard_tag(prefix: str, shard: int | str) -> str:
    return f"{{{prefix}:{shard}}}"


def shard_keys(prefix: str, shards: int, index: str) -> list[str]:
    """The key of the shard index `index` in every shard, shard 0 first."""
    return [f"{shard_tag(prefix, shard)}:{index}" for shard in range(shards)]


def config_key(prefix: str) -> str:
    return f"{prefix}:config"


def hash_tag(key: str) -> str:
    """The `{...}` that `key` starts with, which names its cluster slot (else the key)."""
    end = key.find("}")
    return key[: end + 1] if key.startswith("{") and end > 1 else key


def wait_key(key: str) -> str:
    """The counter a store bumps before each wait for replicas (`scripts.Durability`), in
    the hash tag, so the cluster slot, of `key`."""
    return f"{hash_tag(key)}:waits"


_TRACE_TYPES = ("stream", "hash", "list", "zset", "zset", "zset")  # TraceKeys.script
_CACHE_TYPES = ("stream", "hash", "string")  # TraceKeys.cached, WorkflowKeys.cached
SCRIPT_KEY_TYPES: dict[str, tuple[str, ...]] = {  # each script's KEYS, by the type kept there
    "append": _TRACE_TYPES + _CACHE_TYPES,
    "resume": _TRACE_TYPES + _CACHE_TYPES,
    "complete": _TRACE_TYPES + _CACHE_TYPES,
    "save_intervention": _TRACE_TYPES + _CACHE_TYPES,
    "delete": _TRACE_TYPES + _CACHE_TYPES,
    "warm": _TRACE_TYPES + _CACHE_TYPES,
    "append_events": ("stream", "hash", "list", "set", "zset", "zset", "zset", *_CACHE_TYPES),
    "retire_timer": ("zset",),
    "put_package": ("hash", "hash", "hash"),
    "delete_package": ("hash", "hash"),
    "forget": ("hash",),  # then any number of sorted-set indexes
    "take": ("stream",),
    "settle": ("stream",),  # then four keys per record (TraceKeys or WorkflowKeys.settled)
}


def key_types(script: str, count: int) -> tuple[str, ...]:
    """The types of the `count` KEYS of a call of `script` ("" where any type may be)."""
    types = SCRIPT_KEY_TYPES[script]
    return (types + ("zset" if script == "forget" else "",) * count)[:count]
