"""`RedisEventStore`: Aion's event store on Redis; every mutation is one Lua script call.

Keys follow `keys.py`: a workflow's history is a stream with entry ids `0-<seq>`, next to a
projection hash the append script keeps (head, status, type, start and end times), under
the hash tag of the workflow's virtual shard, beside the shard's indexes (workflow ids,
active workflows, parent links, timers). Listings fan out over the shards in one pipeline
and read projections and indexes, never histories. Packages and visibility rows are small
and global: they live under one tag each, `{<prefix>:pkg}` and `{<prefix>:vis}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..client import RedisBacked
from ..keys import WorkflowKeys, shard_keys, shard_tag
from ..models import as_ttl_ms
from ..scripts import ScriptRunner
from .codec import (
    as_instant,
    as_limit,
    as_seq,
    as_text,
    as_timer_id,
    as_workflow_id,
    check_append,
    check_instance,
    contiguity_error,
    from_micros,
    micros,
    projection_fields,
)
from .errors import (
    BackendError,
    InvalidArgument,
    SequenceConflict,
    SerializationError,
    StoreUnavailableError,
)
from .models import EventBase, TimerId, WorkflowStatus, dump_event, parse_event
from .protocol import WriteToken
from .records import (
    ListWorkflowsFilter,
    PackageRecord,
    PackageRouteRecord,
    RunSummary,
    TimerEntry,
    VisibilityRecord,
    WorkflowFilter,
    WorkflowSummary,
    run_chain_from_history,
)

_KEY_TYPES = {  # each script's KEYS, by the type the store keeps there
    "append_events": ("stream", "hash", "list", "set", "zset", "zset", "set"),
    "forget_workflow": ("hash", "zset", "zset"),
    "schedule_timer": ("zset",),
    "retire_timer": ("zset",),
    "put_package": ("hash", "hash", "hash"),
    "delete_package": ("hash", "hash"),
    "put_package_route": ("hash",),
    "record_visibility": ("hash",),
}
_CONFLICT, _NOT_CONTIGUOUS = 1, 2
_UUID_TEXT = 36


class RedisEventStore(RedisBacked):
    """An `EventStore` and `VisibilityStore` on Redis (or Valkey, or fakeredis).

    Args:
        redis: an async client; the store does not close it unless it opened it.
        prefix: the key prefix; stores sharing a prefix share workflows.
        shards: virtual shards, fixed per prefix (recorded at first use and checked).
        completed_ttl: seconds a workflow's keys live once its status is terminal; an
            append that reopens it removes the expiry. None keeps workflows forever.
    """

    unavailable = StoreUnavailableError
    mismatch = BackendError
    refused = BackendError

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "rc",
        shards: int = 64,
        completed_ttl: float | None = None,
        owns_client: bool = False,
    ) -> None:
        super().__init__(redis, prefix, shards, owns_client)
        self._completed_ttl = as_ttl_ms(completed_ttl, "completed_ttl")
        self._run = ScriptRunner(redis, tuple(_KEY_TYPES), prelude=None)
        self._pkg = shard_tag(self.prefix, "pkg")
        self._vis = f"{shard_tag(self.prefix, 'vis')}:rows"

    def corrupt(self, key: str, detail: str) -> Exception:
        return BackendError(f"corrupt record at key {key!r}: {detail}")

    def keys(self, workflow_id: UUID) -> WorkflowKeys:
        """The keys of a workflow (all in one cluster slot)."""
        return WorkflowKeys.build(self.prefix, self.shards, as_workflow_id(workflow_id))

    def _shard_keys(self, index: str) -> list[str]:
        return shard_keys(self.prefix, self.shards, index)

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        await self._configure()
        try:
            return await self._io(self._run(name, tuple(keys), tuple(args)))
        except ResponseError as exc:
            raise await self._diagnose(exc, tuple(keys), _KEY_TYPES[name], keys[0]) from exc

    async def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run read commands in one round trip and return their raw replies (a bytes command
        name skips redis-py's reply callbacks); a wrong-typed key is a BackendError."""
        await self._configure()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, *args in commands:
                pipe.execute_command(name.encode(), *args)
            replies = await self._io(pipe.execute(raise_on_error=False))
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, ResponseError):
                raise self.corrupt(str(command[1]), str(reply))
        return replies

    # -- history --

    async def append(
        self,
        token: WriteToken,
        workflow_id: UUID,
        events: Sequence[EventBase],
        expected_seq: int,
    ) -> None:
        """See `WritableEventStore.append`: one script call, all or nothing.

        A call retried after a lost reply is applied once: its tag travels with every
        attempt, and an attempt that finds its own tag on the head reports success.
        """
        wf, batch, expected = check_append(token, workflow_id, events, expected_seq)
        keys = self.keys(wf)
        error = contiguity_error(batch, expected)
        args: list[Any] = [keys.workflow_id, expected, self._completed_ttl, os.urandom(8)]
        args.append(error or "")
        for event in () if error else batch:
            kind, extra = projection_fields(event)
            args += (event.seq, kind, micros(event.recorded_at), extra, dump_event(event))
        code, detail = await self._script("append_events", keys.script, args)
        if code == _CONFLICT:
            raise SequenceConflict(expected, int(detail))
        if code == _NOT_CONTIGUOUS:
            raise BackendError(detail.decode())

    async def read_history(self, workflow_id: UUID) -> list[EventBase]:
        """See `ReadableEventStore.read_history`."""
        return await self.read_history_from(workflow_id, 1)

    async def read_history_from(
        self, workflow_id: UUID, from_seq: int, *, limit: int | None = None
    ) -> list[EventBase]:
        """See `ReadableEventStore.read_history_from`: one XRANGE from entry `0-<from_seq>`,
        at most `limit` events if given (an addition: page through a long history)."""
        keys = self.keys(workflow_id)
        start = max(as_seq(from_seq, "from_seq"), 1)
        command: tuple[Any, ...] = ("XRANGE", keys.history, f"0-{start}", "+")
        if limit is not None:
            command += ("COUNT", as_limit(limit))
        [entries] = await self._pipeline([command])
        return [_decode(keys.history, fields) for _, fields in entries]

    async def read_run_chain(self, workflow_id: UUID) -> list[RunSummary]:
        """See `ReadableEventStore.read_run_chain`: reads only the lifecycle events."""
        keys = self.keys(workflow_id)
        [seqs] = await self._pipeline([("LRANGE", keys.runs, 0, -1)])
        ranges = [("XRANGE", keys.history, f"0-{s.decode()}", f"0-{s.decode()}") for s in seqs]
        found = await self._pipeline(ranges) if ranges else []
        events = [_decode(keys.history, entry[0][1]) for entry in found if entry]
        return run_chain_from_history(events)

    # -- listings --

    async def list_workflow_ids(self) -> list[UUID]:
        """See `ReadableEventStore.list_workflow_ids`. Ids of expired workflows are dropped
        from the index as they are found."""
        ids = await self._index("workflows")
        metas = [self.keys(wf).meta for wf in ids]
        exists = await self._pipeline([("EXISTS", meta) for meta in metas])
        for wf, found in zip(ids, exists, strict=True):
            if not found:
                keys = self.keys(wf)
                forget = (keys.meta, keys.workflows, keys.active)
                await self._script("forget_workflow", forget, [keys.workflow_id])
        return [wf for wf, found in zip(ids, exists, strict=True) if found]

    async def list_active(self) -> list[UUID]:
        """See `ReadableEventStore.list_active`."""
        return await self._index("active")

    async def _index(self, name: str) -> list[UUID]:
        """Every shard's `name` index, merged, by id text."""
        pages = await self._pipeline([("ZRANGE", key, 0, -1) for key in self._shard_keys(name)])
        return sorted((UUID(raw.decode()) for page in pages for raw in page), key=str)

    async def query(self, filter: WorkflowFilter) -> list[WorkflowSummary]:
        """See `ReadableEventStore.query`: from the projections, by (started_at, id text).

        A parent filter reads the parent's children set; a Running filter the active index.
        """
        if not isinstance(filter, WorkflowFilter):
            raise InvalidArgument(f"filter must be a WorkflowFilter, got {filter!r}")
        if filter.parent is not None:
            parent_keys = self.keys(filter.parent)
            [children] = await self._pipeline([("SMEMBERS", parent_keys.children)])
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
        links = [("SMEMBERS", key) for key in self._shard_keys("parents")]
        replies = await self._pipeline([*metas, *links])
        parents: dict[str, str] = {}  # several parents: the lowest id, as InMemoryEventStore
        for link in sorted(raw.decode() for members in replies[len(ids) :] for raw in members):
            parents.setdefault(link[:_UUID_TEXT], link[_UUID_TEXT:])
        summaries = []
        for wf, (kind, status, started, ended) in zip(ids, replies[: len(ids)], strict=True):
            if started is None:
                continue
            parent = parents.get(str(wf))
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

    # -- timers --

    async def schedule_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> None:
        """See `ReadableEventStore.schedule_timer`: one sorted-set upsert."""
        keys = self.keys(workflow_id)
        member = _timer_member(keys, as_timer_id(timer_id))
        await self._script("schedule_timer", [keys.timers], [member, _score(fire_at, "fire_at")])

    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        """See `ReadableEventStore.expired_timers`: a score range per shard, one round trip,
        so the cost follows the due timers, not all timers."""
        limit = _score(as_of, "as_of")
        ranges = [
            ("ZRANGEBYSCORE", key, "-inf", limit, "WITHSCORES")
            for key in self._shard_keys("timers")
        ]
        due = [
            _timer_entry(key, member, score)
            for key, page in zip(
                self._shard_keys("timers"), await self._pipeline(ranges), strict=True
            )
            for member, score in _pairs(page)
        ]
        return sorted(due, key=TimerEntry.sort_key)

    async def retire_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> bool:
        """Delete the timer row if it still fires at `fire_at`, so a timer service can clean
        up what it fired; False if it is absent or was re-armed meanwhile (the re-arm wins).
        """
        keys = self.keys(workflow_id)
        member = _timer_member(keys, as_timer_id(timer_id))
        args = [member, _score(fire_at, "fire_at")]
        return bool(await self._script("retire_timer", [keys.timers], args))

    # -- packages --

    async def put_package(self, record: PackageRecord) -> None:
        """See `PackageStore.put_package`: archive and route in one script."""
        check_instance(record, PackageRecord)
        field = _package_field(record.workflow_type, record.content_hash)
        keys = [f"{self._pkg}:archives", f"{self._pkg}:deployed", f"{self._pkg}:routes"]
        deployed = micros(record.deployed_at)
        args = [field, record.archive, deployed, record.workflow_type, record.content_hash]
        await self._script("put_package", keys, args)

    async def list_packages(self) -> list[PackageRecord]:
        """See `PackageStore.list_packages`."""
        archives, deployed = await self._pipeline(
            [("HGETALL", f"{self._pkg}:archives"), ("HGETALL", f"{self._pkg}:deployed")]
        )
        times = dict(_pairs(deployed))
        records = []
        for field, archive in _pairs(archives):
            workflow_type, content_hash = json.loads(field)
            at = from_micros(int(times[field]))
            records.append(
                PackageRecord(
                    workflow_type=workflow_type,
                    content_hash=content_hash,
                    archive=archive,
                    deployed_at=at,
                )
            )
        return sorted(records, key=PackageRecord.sort_key)

    async def delete_package(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.delete_package`."""
        field = _package_field(workflow_type, content_hash)
        keys = [f"{self._pkg}:archives", f"{self._pkg}:deployed"]
        await self._script("delete_package", keys, [field])

    async def put_package_route(self, workflow_type: str, content_hash: str) -> None:
        """See `PackageStore.put_package_route`."""
        args = [as_text(workflow_type, "workflow_type"), as_text(content_hash, "content_hash")]
        await self._script("put_package_route", [f"{self._pkg}:routes"], args)

    async def list_package_routes(self) -> list[PackageRouteRecord]:
        """See `PackageStore.list_package_routes`."""
        [routes] = await self._pipeline([("HGETALL", f"{self._pkg}:routes")])
        found = [
            PackageRouteRecord(workflow_type=t.decode(), content_hash=h.decode())
            for t, h in _pairs(routes)
        ]
        return sorted(found, key=lambda r: r.workflow_type)

    # -- visibility --

    async def record_visibility(self, record: VisibilityRecord) -> None:
        """See `VisibilityStore.record_visibility`: one row per workflow id."""
        check_instance(record, VisibilityRecord)
        args = [str(record.workflow_id), record.model_dump_json()]
        await self._script("record_visibility", [self._vis], args)

    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        """See `VisibilityStore.list_workflows`. Reads every row: O(rows), filtered here."""
        check_instance(filter, ListWorkflowsFilter)
        return filter.select(await self._visibility_rows())

    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        """See `VisibilityStore.count_workflows`."""
        check_instance(filter, ListWorkflowsFilter)
        return sum(filter.matches(row) for row in await self._visibility_rows())

    async def _visibility_rows(self) -> list[VisibilityRecord]:
        [rows] = await self._pipeline([("HVALS", self._vis)])
        try:
            return [VisibilityRecord.model_validate_json(row) for row in rows]
        except ValueError as exc:
            message = f"undecodable visibility row at key {self._vis!r}: {exc}"
            raise SerializationError(message) from None


def _decode(key: str, fields: list[bytes]) -> EventBase:
    try:
        return parse_event(fields[1])
    except (SerializationError, IndexError) as exc:
        raise SerializationError(f"undecodable event at key {key!r}: {exc}") from None


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """Field-value pairs of a raw HGETALL or WITHSCORES reply: a flat list in RESP2, a map
    or a list of pairs in RESP3 (fakeredis answers in RESP3 form)."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list):
        return [(first, second) for first, second in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _timer_member(keys: WorkflowKeys, timer_id: TimerId) -> str:
    return keys.workflow_id + timer_id.model_dump_json()


def _timer_entry(key: str, member: bytes, score: bytes) -> TimerEntry:
    try:
        text = member.decode()
        return TimerEntry(
            workflow_id=UUID(text[:_UUID_TEXT]),
            timer_id=TimerId.model_validate_json(text[_UUID_TEXT:]),
            fire_at=from_micros(int(float(score))),
        )
    except ValueError as exc:
        raise SerializationError(f"undecodable timer {member!r} at key {key!r}: {exc}") from None


def _score(at: datetime, field: str) -> int:
    return micros(as_instant(at, field))


def _package_field(workflow_type: str, content_hash: str) -> str:
    """One hash field per `(type, hash)`: a JSON array, unambiguous for any two strings."""
    pair = [as_text(workflow_type, "workflow_type"), as_text(content_hash, "content_hash")]
    return json.dumps(pair, ensure_ascii=False)
