"""Durable timers on Redis: a sorted set per shard, member `<workflow id><timer id JSON>`,
scored by fire time in microseconds (exact in a double for years 1685-2255)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ..client import RedisBacked, pairs, reading, writing
from ..keys import WorkflowKeys, shard_keys
from . import arguments
from .encoding import from_micros, micros
from .errors import SerializationError
from .histories import UUID_TEXT
from .models import TimerId
from .records import TimerEntry


class Timers(RedisBacked):
    """The timer part of `ReadableEventStore`, plus `retire_timer`."""

    def _timer(self, workflow_id: UUID, timer_id: TimerId) -> tuple[str, str]:
        """The shard's timers key and the timer's member in it."""
        keys = WorkflowKeys.build(self.prefix, self.shards, arguments.workflow_id(workflow_id))
        return keys.timers, keys.workflow_id + arguments.timer_id(timer_id).model_dump_json()

    @writing
    async def schedule_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> None:
        """See `ReadableEventStore.schedule_timer`: one sorted-set upsert."""
        key, member = self._timer(workflow_id, timer_id)
        score = micros(arguments.instant(fire_at, "fire_at"))
        await self._command("ZADD", key, score, member)

    @reading
    async def expired_timers(self, as_of: datetime) -> list[TimerEntry]:
        """See `ReadableEventStore.expired_timers`: a score range per shard, one round trip,
        so the cost follows the due timers, not all timers."""
        limit = micros(arguments.instant(as_of, "as_of"))
        keys = shard_keys(self.prefix, self.shards, "timers")
        pages = await self._commands(
            [("ZRANGEBYSCORE", k, "-inf", limit, "WITHSCORES") for k in keys]
        )
        due = [
            _entry(key, member, score)
            for key, page in zip(keys, pages, strict=True)
            for member, score in pairs(page)
        ]
        return sorted(due, key=TimerEntry.sort_key)

    @writing
    async def retire_timer(self, workflow_id: UUID, timer_id: TimerId, fire_at: datetime) -> bool:
        """Delete the timer row if it still fires at `fire_at`, so a timer service can clean
        up what it fired; False if it is absent or was re-armed meanwhile (the re-arm wins).
        """
        key, member = self._timer(workflow_id, timer_id)
        score = micros(arguments.instant(fire_at, "fire_at"))
        return bool(await self._script("retire_timer", [key], [member, score]))


def _entry(key: str, member: bytes, score: bytes) -> TimerEntry:
    try:
        text = member.decode()
        return TimerEntry(
            workflow_id=UUID(text[:UUID_TEXT]),
            timer_id=TimerId.model_validate_json(text[UUID_TEXT:]),
            fire_at=from_micros(int(float(score))),
        )
    except ValueError as exc:
        raise SerializationError(f"undecodable timer {member!r} at key {key!r}: {exc}") from None
