"""Pure key builders: virtual shards, one hash tag per write, escaped ids.

Every key of a trace (or workflow) starts with the hash tag `{<prefix>:<shard>}`, with
`shard = crc32(utf8(trace_id)) % shards`, and the shard's own indexes share that tag. So
one script can touch a trace's keys and its shard's indexes in one Redis Cluster slot.

    {rc:17}:t:<id>:s    stream  envelopes, entry id 0-<ordinal>, field e = msgpack envelope
    {rc:17}:t:<id>:m    hash    circuit, schematic_version, completion, resumed, counts, tags
    {rc:17}:t:<id>:i    list    interventions (msgpack)
    {rc:17}:traces      zset    trace ids by last update (ms): listing
    {rc:17}:expiry      zset    trace ids by expiry deadline (ms): index cleanup
    {rc:17}:w:<wf>:h    stream  Aion events as JSON, entry id 0-<seq>, field e
    {rc:17}:w:<wf>:m    hash    projection: head, status, type, started, ended (µs), tag
    {rc:17}:w:<wf>:r    list    seqs of lifecycle events (the run chain's skeleton)
    {rc:17}:w:<wf>:c    set     child workflow ids (a parent's children, in its shard)
    {rc:17}:workflows   zset    workflow ids (score 0: text order)
    {rc:17}:active      zset    started workflows whose status is Running
    {rc:17}:parents     set     "<child id><parent id>", for parents in this shard
    {rc:17}:timers      zset    "<wf><timer id JSON>" by fire time (µs)
    {rc:pkg}:archives   hash    '["<type>","<hash>"]' -> archive bytes
    {rc:pkg}:deployed   hash    '["<type>","<hash>"]' -> deployed_at (µs)
    {rc:pkg}:routes     hash    workflow type -> content hash
    {rc:vis}:rows       hash    workflow id -> VisibilityRecord JSON
    rc:config           hash    shards = the deployment's shard count

Ids are percent-escaped (`%`, `{`, `}`, `:`), so no id can close the hash tag or reach into
another trace's keys.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from uuid import UUID

from .errors import InvalidInput

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", ":": "%3A"})


def utf8(value: str, field: str) -> bytes:
    """Encode an id as UTF-8, refusing empty strings and lone surrogates."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must be a non-empty string, got {value!r}")
    try:
        return value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{field} is not valid Unicode text: {exc}") from None


def shard_of(raw_id: bytes, shards: int) -> int:
    """The virtual shard of an already encoded id."""
    return zlib.crc32(raw_id) % shards


def check_prefix(prefix: str) -> str:
    """A prefix may not contain braces: it sits inside the hash tag."""
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise InvalidInput(f"prefix must be a non-empty string without braces, got {prefix!r}")
    return prefix


@dataclass(frozen=True, slots=True)
class TraceKeys:
    """All keys of one trace plus its shard's indexes; every one shares one hash tag."""

    trace_id: str
    raw_id: bytes
    stream: str
    meta: str
    interventions: str
    index: str
    expiry: str

    @classmethod
    def build(cls, prefix: str, shards: int, trace_id: str) -> TraceKeys:
        raw = utf8(trace_id, "trace_id")
        tag = shard_tag(prefix, shard_of(raw, shards))
        base = f"{tag}:t:{trace_id.translate(_ESCAPES)}"
        return cls(
            trace_id, raw, f"{base}:s", f"{base}:m", f"{base}:i", f"{tag}:traces", f"{tag}:expiry"
        )

    @property
    def own(self) -> tuple[str, str, str]:
        """The keys that belong to this trace alone (the shard indexes are shared)."""
        return (self.stream, self.meta, self.interventions)

    @property
    def script(self) -> tuple[str, str, str, str, str]:
        """KEYS[1..5] of every trace script, in the order `lua/_trace.lua` names them."""
        return (self.stream, self.meta, self.interventions, self.index, self.expiry)


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

    @classmethod
    def build(cls, prefix: str, shards: int, workflow_id: UUID) -> WorkflowKeys:
        text = str(workflow_id)
        tag = shard_tag(prefix, shard_of(text.encode(), shards))
        base = f"{tag}:w:{text}"
        return cls(
            text,
            *(f"{base}:{suffix}" for suffix in "hmrc"),
            *(f"{tag}:{index}" for index in ("workflows", "active", "parents", "timers")),
        )

    @property
    def own(self) -> tuple[str, str, str, str]:
        """The keys that belong to this workflow alone; `completed_ttl` expires them."""
        return (self.history, self.meta, self.runs, self.children)

    @property
    def script(self) -> tuple[str, ...]:
        """KEYS[1..7] of `lua/append_events.lua`, in the order it names them."""
        return (*self.own, self.workflows, self.active, self.parents)


def shard_tag(prefix: str, shard: int | str) -> str:
    return f"{{{prefix}:{shard}}}"


def shard_keys(prefix: str, shards: int, index: str) -> list[str]:
    """The key of the shard index `index` in every shard, shard 0 first."""
    return [f"{shard_tag(prefix, shard)}:{index}" for shard in range(shards)]


def config_key(prefix: str) -> str:
    return f"{prefix}:config"
