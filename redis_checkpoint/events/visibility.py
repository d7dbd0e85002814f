"""Visibility rows on Redis: one row per workflow, under one hash tag of their own,
`{<prefix>:vis}`. Listing reads every row and filters here (O(rows))."""

from __future__ import annotations

from ..client import RedisBacked, reading, writing
from ..keys import shard_tag
from . import arguments
from .errors import SerializationError
from .records import ListWorkflowsFilter, VisibilityRecord

check = arguments.check


class Visibility(RedisBacked):
    """`VisibilityStore` on Redis."""

    def _rows_key(self) -> str:
        return f"{shard_tag(self.prefix, 'vis')}:rows"

    @writing
    async def record_visibility(self, record: VisibilityRecord) -> None:
        """See `VisibilityStore.record_visibility`: one row per workflow id (one HSET)."""
        check.instance(record, VisibilityRecord, "record")
        row = record.model_dump_json().encode()
        await self._command("HSET", self._rows_key(), str(record.workflow_id), row)

    @reading
    async def list_workflows(self, filter: ListWorkflowsFilter) -> list[VisibilityRecord]:
        """See `VisibilityStore.list_workflows`. Reads every row: O(rows), filtered here."""
        check.instance(filter, ListWorkflowsFilter, "filter")
        return filter.select(await self._rows())

    @reading
    async def count_workflows(self, filter: ListWorkflowsFilter) -> int:
        """See `VisibilityStore.count_workflows`."""
        check.instance(filter, ListWorkflowsFilter, "filter")
        return sum(filter.matches(row) for row in await self._rows())

    async def _rows(self) -> list[VisibilityRecord]:
        [rows] = await self._commands([("HVALS", self._rows_key())])
        try:
            return [VisibilityRecord.model_validate_json(row) for row in rows]
        except ValueError as exc:
            message = f"undecodable visibility row at key {self._rows_key()!r}: {exc}"
            raise SerializationError(message) from None
