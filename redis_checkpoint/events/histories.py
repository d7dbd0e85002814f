"""Workflow histories on Redis: fenced appends, range reads, run chains and the listings
that read the append script's projection (`lua/append_events.lua`).

A history is a stream with entry ids `0-<seq>`, next to a projection hash (head, status,
type, start and end times), under the hash tag of the workflow's virtual shard, beside the
shard's indexes (workflow ids, active workflows, parent links). Listings fan out over the
shards in one pipeline and read projections and indexes, never histories.

An entry's one field names its format: `c` holds the compact form (`encoding.encode_event`),
`e` Aion's JSON, as release 0.1.0 wrote it (still read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from ..client import Miss, RedisBacked, reading, writing
from ..keys import WorkflowKeys, shard_keys
from ..scripts import Reply
from . import arguments
from .encoding import from_micros, micros, projection_fields
from .errors import TREE, BackendError, InvalidArgument, SequenceConflict, SerializationError
from .models import EventBase, WorkflowStatus, parse_event
from .protocol import WriteToken
from .records import RunSummary, WorkflowFilter, WorkflowSummary, run_chain_from_history
from .stored import decode_event

UUID_TEXT = 36


class Histories(RedisBacked):
    """`ReadableEventStore` (less timers) and `WritableEventStore` on Redis."""

    def keys(self, workflow_id: UUID) -> WorkflowKeys:
        """The keys of a workflow (all in one cluster slot)."""
        return WorkflowKeys.build(self.prefix, self.shards, arguments.workflow_id(workflow_id))

    @writing
    async def append(
        self,
        token: WriteToken,
        workflow_id: UUID,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """See `WritableEventStore.append`: one script call, all or nothing.

        A call re-sent after a lost reply is applied once: an attempt that finds the call
        already applied reports success, not a conflict.
        """
        wf, batch, expected = arguments.append(token, workflow_id, events, expected_seq)
        keys = self.keys(wf)
        error = arguments.contiguity_error(batch, expected)
        code, detail = await self._append(keys, expected, error, () if error else batch, b"")
        if code == Reply.MISS:
            raise Miss(keys.workflow_id)
        if code == Reply.BACKPRESSURE:
            raise TREE.backpressure(
                f"the outbox of workflow {keys.workflow_id}'s shard holds max_backlog="
                f"{self.constants['MAX_BACKLOG']} unflushed changes: not applied; retry later"
            )
        if code == Reply.STALE:
            raise TREE.unavailable("a copy of this append arrived too late to tell its outcome")
        if code == Reply.CONFLICT:
            with self.decoding(keys.meta):
                found = int(detail)
            raise SequenceConflict(expected, found)
        if code == Reply.NOT_CONTIGUOUS:
            raise BackendError(detail.decode())

    async def _append(
        self,
        keys: WorkflowKeys,
        expected: int,
        error: str | None,
        batch: Sequence[EventBase],
        warm: bytes,
    ) -> tuple[int, Any]:
        """One call of lua/append_events.lua (`warm`: a lease token, for a tiered cache)."""
        args: list[Any] = [keys.workflow_id, expected, error or "", warm]
        for event in batch:
            kind, extra = projection_fields(event)
            args += (event.seq, kind, micros(event.recorded_at), extra, arguments.stored(event))
        script_keys = keys.cached if self.outbox or warm else keys.script
        code, detail = await self._write("append_events", script_keys, args)
        return code, detail

    @writing
    async def warm(self, workflow_id: UUID, token: bytes, history: Sequence[EventBase]) -> bool:
        """Put the durable store's `history` of a workflow into a tiered store's cache
        under the lease `token` (`lease`). False if it wrote nothing: the cache holds the
        workflow whole (warmed or written since), or a write invalidated it since."""
        code, _ = await self._append(self.keys(workflow_id), 0, None, history, token)
        return bool(code == Reply.OK)

    @reading
    async def cached_history(self, workflow_id: UUID, from_seq: int) -> list[EventBase]:
        """`read_history_from` for a tiered store.

        Raises:
            Miss: the cache does not hold the workflow whole (a volatile-* maxmemory
                policy evicts keys one by one: the warm drops what is left).
        """
        keys = self.keys(workflow_id)
        start = max(arguments.seq(from_seq, "from_seq"), 1)
        commands = [("HMGET", keys.meta, "head", "o", "absent"), ("XLEN", keys.history)]
        commands.append(("XRANGE", keys.history, f"0-{start}", "+"))
        (head, dirty, absent), length, entries = await self._run.atomic(
            commands, self._call_deadline()
        )
        self._raise_for(keys.history, [length, entries])
        if head is None and absent is None:
            raise Miss(keys.workflow_id)
        if length != int(head or 0):
            if dirty is not None:  # only an allkeys-* maxmemory policy evicts these keys
                raise TREE.corrupt(keys.history, "unflushed events were evicted from the cache")
            raise Miss(keys.workflow_id)  # the warm drops what is left, if it still is
        return self._decode_entries(keys, workflow_id, entries)

    @reading
    async def read_history(self, workflow_id: UUID) -> list[EventBase]:
        """See `ReadableEventStore.read_history`."""
        return await self._range(workflow_id, 1, None)

    @reading
    async def read_history_from(
        self, workflow_id: UUID, from_seq: int, *, limit: int | None = None
    ) -> list[EventBase]:
        """See `ReadableEventStore.read_history_from`: one XRANGE from entry `0-<from_seq>`,
        at most `limit` events if given (an addition: page through a long history)."""
        return await self._range(workflow_id, from_seq, limit)

    async def _range(self, workflow_id: UUID, from_seq: int, limit: int | None) -> list[EventBase]:
        keys = self.keys(workflow_id)
        start = max(arguments.seq(from_seq, "from_seq"), 1)
        command: tuple[Any, ...] = ("XRANGE", keys.history, f"0-{start}", "+")
        if limit is not None:
            command += ("COUNT", arguments.limit(limit))
        [entries] = await self._commands([command])
        return self._decode_entries(keys, workflow_id, entries)

    def _decode_entries(
        self, keys: WorkflowKeys, workflow_id: UUID, entries: list[Any]
    ) -> list[EventBase]:
        try:  # the whole history in one comprehension: this is its hot loop
            return [
                decode_event(value, int(entry_id[2:]), workflow_id)
                if field == b"c" and entry_id[:2] == b"0-"
                else _decode(keys, workflow_id, [entry_id, [field, value]])
                for entry_id, (field, value) in entries
            ]
        except (ValueError, TypeError) as exc:
            raise SerializationError(f"undecodable event at key {keys.history!r}: {exc}") from None

    @reading
    async def read_run_chain(self, workflow_id: UUID) -> list[RunSummary]:
        """See `ReadableEventStore.read_run_chain`: reads only the lifecycle events."""
        keys = self.keys(workflow_id)
        [seqs] = await self._commands([("LRANGE", keys.runs, 0, -1)])
        ranges = [("XRANGE", keys.history, f"0-{s.decode()}", f"0-{s.decode()}") for s in seqs]
        found = await self._commands(ranges) if ranges else []
        events = [_decode(keys, workflow_id, entry[0]) for entry in found if entry]
        return run_chain_from_history(events)

    @reading
    async def list_workflow_ids(self) -> list[UUID]:
        """See `ReadableEventStore.list_workflow_ids`. Expired workflows leave the indexes
        (and their parent links) as they are found."""
        ids = await self._index("workflows")
        exists = await self._commands([("EXISTS", self.keys(wf).meta) for wf in ids])
        dead = [wf for wf, found in zip(ids, exists, strict=True) if not found]
        for wf in dead:
            keys = self.keys(wf)
            [links] = await self._commands([("ZRANGE", keys.parents, 0, -1)])
            mine = [link for link in links if link.endswith(keys.workflow_id.encode())]
            indexes = [(keys.workflows, keys.workflow_id), (keys.active, keys.workflow_id)]
            await self._forget(keys.meta, [*indexes, *((keys.parents, link) for link in mine)])
        return [wf for wf, found in zip(ids, exists, strict=True) if found]

    @reading
    async def list_active(self) -> list[UUID]:
        """See `ReadableEventStore.list_active`."""
        return await self._index("active")

    async def _index(self, name: str) -> list[UUID]:
        """Every shard's `name` index, merged, by id text."""
        keys = shard_keys(self.prefix, self.shards, name)
        pages = await self._commands([("ZRANGE", key, 0, -1) for key in keys])
        ids = []
        for key, page in zip(keys, pages, strict=True):
            with self.decoding(key):
                ids += [UUID(raw.decode()) for raw in page]
        return sorted(ids, key=str)

    @reading
    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        """See `ReadableEventStore.query`: from the projections, by (started_at, id text).

        A parent filter reads the parent's children set; a Running filter the active index.
        """
        if not isinstance(filter, WorkflowFilter):
            raise InvalidArgument(f"filter must be a WorkflowFilter, got {filter!r}")
        if filter.parent is not None:
            key = self.keys(filter.parent).children
            [children] = await self._commands([("SMEMBERS", key)])
            with self.decoding(key):
                candidates = [UUID(raw.decode()) for raw in children]
        elif filter.status is not None and not filter.status.is_terminal:
            candidates = await self._index("active")
        else:
            candidates = await self._index("workflows")
        summaries = [s for s in await self._summaries(candidates) if filter.matches(s)]
        return sorted(summaries, key=lambda s: (s.started_at, str(s.workflow_id)))

    async def _summaries(self, ids: list[UUID]) -> list[WorkflowSummary]:
        """The projections of `ids` with their parents; unstarted workflows are left out."""
        metas = [("HMGET", self.keys(wf).meta, "type", "status", "started", "ended") for wf in ids]
        link_keys = shard_keys(self.prefix, self.shards, "parents")
        replies = await self._commands([*metas, *(("ZRANGE", key, 0, -1) for key in link_keys)])
        links: list[str] = []
        for key, members in zip(link_keys, replies[len(ids) :], strict=True):
            with self.decoding(key):
                links += [raw.decode() for raw in members]
        parents: dict[str, str] = {}  # several parents: the lowest id, as InMemoryEventStore
        for link in sorted(links):
            parents.setdefault(link[:UUID_TEXT], link[UUID_TEXT:])
        summaries = []
        for (_, meta, *_), (kind, status, started, ended), wf in zip(
            metas, replies[: len(ids)], ids, strict=True
        ):
            if started is None:
                continue
            parent = parents.get(str(wf))
            with self.decoding(meta):
                summaries.append(
                    WorkflowSummary(
                        workflow_id=wf,
                        workflow_type=kind.decode(),
                        status=WorkflowStatus((status or b"Running").decode()),
                        started_at=from_micros(int(started)),
                        ended_at=None if ended is None else from_micros(int(ended)),
                        parent=None if parent is None else UUID(parent),
                    )
                )
        return summaries


def _decode(keys: WorkflowKeys, workflow_id: UUID, entry: list[Any]) -> EventBase:
    """The event of a raw stream entry `[b"0-<seq>", [field, value]]` (see the module doc)."""
    try:
        entry_id, (field, value) = entry
        if not entry_id.startswith(b"0-"):
            raise ValueError(f"entry id {entry_id!r} is not 0-<seq>")
        if field == b"c":
            return decode_event(value, int(entry_id[2:]), workflow_id)
        if field == b"e":
            return parse_event(value)
        raise ValueError(f"unknown entry field {field!r}")
    except (SerializationError, ValueError, TypeError) as exc:
        raise SerializationError(f"undecodable event at key {keys.history!r}: {exc}") from None
