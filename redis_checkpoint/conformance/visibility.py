"""The visibility-store conformance suite: Aion's VisibilityStore rules (reference §2.4,
§5.4-5.6) and its backends' unit tests (§7.5), with the libSQL choices: one row per
workflow id, newest first, and `offset` without `limit` working.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from ..events import (
    ListWorkflowsFilter,
    SearchAttributePredicate,
    SearchAttributeValue,
    WorkflowStatus,
)
from .aion import (
    ATTRIBUTES,
    T,
    int_value,
    rid,
    visibility,
    wid,
)
from .events import EventStoreFactory


class VisibilityConformance:
    """Subclasses provide `make_store`, as for `EventStoreConformance`."""

    @pytest.fixture
    async def store(self, make_store: EventStoreFactory) -> Any:
        return await make_store()

    # -- visibility (reference §2.4, §7.5) --

    async def test_visibility_upsert_keeps_one_row_per_workflow(self, store: Any) -> None:
        wf = wid()
        await store.record_visibility(visibility(wf, 1))
        latest = visibility(wf, 1, status=WorkflowStatus.COMPLETED, close=5, run=rid(9))
        await store.record_visibility(latest)
        assert await store.list_workflows(ListWorkflowsFilter()) == [latest]

    async def test_visibility_filters(self, store: Any) -> None:
        running, done, billing = wid(), wid(), wid()
        rows = [
            visibility(running, 1),
            visibility(done, 2, status=WorkflowStatus.COMPLETED, close=5),
            visibility(billing, 3, workflow_type="billing", close=9),
        ]
        for row in rows:
            await store.record_visibility(row)

        async def ids(**conditions: Any) -> list[UUID]:
            found = await store.list_workflows(ListWorkflowsFilter(**conditions))
            return [row.workflow_id for row in found]

        assert await ids() == [billing, done, running]
        assert await ids(workflow_type="billing") == [billing]
        assert await ids(status=WorkflowStatus.COMPLETED) == [done]
        assert await ids(started_after=T(2), started_before=T(3)) == [billing, done]
        assert await ids(closed_after=T(5)) == [billing, done]  # running rows never match
        assert await ids(closed_before=T(5)) == [done]

    async def test_visibility_search_attribute_predicates(self, store: Any) -> None:
        vip, plain = wid(), wid()
        await store.record_visibility(visibility(vip, 1, attributes=ATTRIBUTES))
        await store.record_visibility(visibility(plain, 2))

        async def ids(*predicates: SearchAttributePredicate) -> list[UUID]:
            found = await store.list_workflows(
                ListWorkflowsFilter(search_attributes=list(predicates))
            )
            return [row.workflow_id for row in found]

        string, three = SearchAttributeValue.of("gold"), int_value(3)
        assert await ids(SearchAttributePredicate.equals("tier", string)) == [vip]
        assert await ids(SearchAttributePredicate.greater_than("count", int_value(2))) == [vip]
        assert await ids(SearchAttributePredicate.less_than("count", int_value(4))) == [vip]
        assert await ids(SearchAttributePredicate.contains("tags", "vip")) == [vip]
        assert await ids(SearchAttributePredicate.greater_than("tier", string)) == []
        assert await ids(SearchAttributePredicate.contains("tier", "gold")) == []
        assert await ids(SearchAttributePredicate.equals("count", three)) == [vip]
        assert await ids(SearchAttributePredicate.equals("missing", three)) == []

    async def test_visibility_newest_first_with_offset_and_limit(self, store: Any) -> None:
        old, middle, new = wid(), wid(), wid()
        for wf, k in ((middle, 2), (old, 1), (new, 3)):
            await store.record_visibility(visibility(wf, k))

        async def ids(**page: Any) -> list[UUID]:
            found = await store.list_workflows(ListWorkflowsFilter(**page))
            return [row.workflow_id for row in found]

        assert await ids() == [new, middle, old]
        assert await ids(limit=1, offset=1) == [middle]
        assert await ids(offset=1) == [middle, old]
        assert await ids(limit=2) == [new, middle]
        assert await ids(offset=5) == []
        everything = ListWorkflowsFilter(limit=1, offset=1)
        assert await store.count_workflows(everything) == 3
        assert await store.count_workflows(ListWorkflowsFilter(status=WorkflowStatus.FAILED)) == 0
