"""The records an event store returns, and the filters that select them. No I/O here.

Summaries, run chains and visibility rows are projections of a history (`from_history`,
`run_chain_from_history`); the filters' `matches` are the one definition of every query rule,
shared by all backends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, Self, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    model_serializer,
    model_validator,
)

from .errors import BackendError
from .models import (
    Bytes,
    EventBase,
    RunId,
    SearchAttributeType,
    SearchAttributeValue,
    TimerId,
    Timestamp,
    WorkflowId,
    WorkflowStarted,
    WorkflowStatus,
)
from .projections import (
    current_lease_terminal,
    search_attributes_from_events,
    split_runs,
    status_from_events,
)
from .values import U32, Model


def _closed_at(events: Sequence[EventBase]) -> datetime | None:
    terminal = current_lease_terminal(events)
    return None if terminal is None else terminal.recorded_at


def _starts(events: Sequence[EventBase]) -> list[WorkflowStarted]:
    return [e for e in events if isinstance(e, WorkflowStarted)]


class WorkflowSummary(Model):
    """A workflow as `query` reports it: its current run's start and its projected status."""

    workflow_id: WorkflowId
    workflow_type: StrictStr
    status: WorkflowStatus
    started_at: Timestamp
    ended_at: Timestamp | None = None
    parent: WorkflowId | None = None

    @classmethod
    def from_history(cls, events: Sequence[EventBase]) -> WorkflowSummary | None:
        """From the last WorkflowStarted (the current run); None without one. No parent."""
        starts = _starts(events)
        if not starts:
            return None
        start = starts[-1]
        return cls(
            workflow_id=start.envelope.workflow_id,
            workflow_type=start.workflow_type,
            status=status_from_events(events),
            started_at=start.recorded_at,
            ended_at=_closed_at(events),
        )


class WorkflowFilter(Model):
    """`query`'s filter: every field set must match; the default matches everything."""

    workflow_type: StrictStr | None = None
    status: WorkflowStatus | None = None
    started_after: Timestamp | None = None  # inclusive
    started_before: Timestamp | None = None  # inclusive
    parent: WorkflowId | None = None

    def matches(self, summary: WorkflowSummary) -> bool:
        return (
            (self.workflow_type is None or summary.workflow_type == self.workflow_type)
            and (self.status is None or summary.status == self.status)
            and (self.started_after is None or summary.started_at >= self.started_after)
            and (self.started_before is None or summary.started_at <= self.started_before)
            and (self.parent is None or summary.parent == self.parent)
        )


class RunSummary(Model):
    """One run of a continue-as-new chain."""

    run_id: RunId
    parent_run_id: RunId | None = None
    status: WorkflowStatus
    started_at: Timestamp
    closed_at: Timestamp | None = None

    @classmethod
    def of_run(cls, run: Sequence[EventBase]) -> RunSummary:
        """The summary of one run's slice, which starts with its WorkflowStarted."""
        start = cast(WorkflowStarted, run[0])
        return cls(
            run_id=start.run_id,
            parent_run_id=start.parent_run_id,
            status=status_from_events(run),
            started_at=start.recorded_at,
            closed_at=_closed_at(run),
        )


def run_chain_from_history(history: Iterable[EventBase]) -> list[RunSummary]:
    """The continue-as-new chain, oldest first, linked by `WorkflowStarted.parent_run_id`.

    Raises:
        BackendError: not exactly one root run, a run continued twice, or a cycle or runs
            unreachable from the root.
    """
    runs = [RunSummary.of_run(run) for run in split_runs(sorted(history, key=_seq))]
    if not runs:
        return []
    roots = [run for run in runs if run.parent_run_id is None]
    if len(roots) != 1:
        raise BackendError(f"run chain must contain exactly one root, found {len(roots)}")
    continuation: dict[RunId, RunSummary] = {}
    for run in runs:
        if run.parent_run_id is not None:
            if run.parent_run_id in continuation:
                raise BackendError(f"run chain: run {run.parent_run_id} is continued twice")
            continuation[run.parent_run_id] = run
    chain = [roots[0]]
    seen = {roots[0].run_id}
    while (following := continuation.get(chain[-1].run_id)) is not None:
        if following.run_id in seen:
            raise BackendError(f"run chain contains a cycle at run {following.run_id}")
        seen.add(following.run_id)
        chain.append(following)
    if len(chain) != len(runs):
        raise BackendError(f"run chain: {len(runs) - len(chain)} run(s) unreachable from the root")
    return chain


def _seq(event: EventBase) -> int:
    return event.seq


class TimerEntry(Model):
    """A durable timer row, keyed by `(workflow_id, timer_id)`."""

    model_config = ConfigDict(frozen=True)

    workflow_id: WorkflowId
    timer_id: TimerId
    fire_at: Timestamp

    def sort_key(self) -> tuple[datetime, str, str]:
        """Backends return due timers in this order: fire_at, workflow id, timer id text."""
        return (self.fire_at, str(self.workflow_id), str(self.timer_id))


class VisibilityRecord(Model):
    """A workflow's visibility row (also what `list_workflows` returns)."""

    workflow_id: WorkflowId
    run_id: RunId
    workflow_type: StrictStr
    status: WorkflowStatus
    start_time: Timestamp
    close_time: Timestamp | None = None
    search_attributes: dict[str, SearchAttributeValue] = Field(default_factory=dict)

    @classmethod
    def from_history(
        cls, events: Sequence[EventBase], run_id: RunId | None = None
    ) -> VisibilityRecord | None:
        """The row the engine upserts: type and start from the *first* WorkflowStarted,
        `run_id` the caller's run or else the first start's; None without a start."""
        starts = _starts(events)
        if not starts:
            return None
        first = starts[0]
        return cls(
            workflow_id=first.envelope.workflow_id,
            run_id=first.run_id if run_id is None else run_id,
            workflow_type=first.workflow_type,
            status=status_from_events(events),
            start_time=first.recorded_at,
            close_time=_closed_at(events),
            search_attributes=search_attributes_from_events(events),
        )


PredicateKind = Literal["Equals", "GreaterThan", "LessThan", "Contains"]
_ORDERED = (SearchAttributeType.INT, SearchAttributeType.FLOAT, SearchAttributeType.DATETIME)


class SearchAttributePredicate(BaseModel):
    """One search-attribute condition; JSON `{"Equals": {"name": …, "value": …}}` and
    `{"Contains": {"name": …, "keyword": …}}`, as serde writes the Rust enum.

    A missing attribute never matches. GreaterThan and LessThan need the same type on both
    sides, one of Int, Float or Datetime; Contains needs a KeywordList.
    """

    model_config = ConfigDict(frozen=True)

    kind: PredicateKind
    name: StrictStr
    value: SearchAttributeValue | None = None
    keyword: StrictStr | None = None

    @classmethod
    def equals(cls, name: str, value: SearchAttributeValue) -> Self:
        return cls(kind="Equals", name=name, value=value)

    @classmethod
    def greater_than(cls, name: str, value: SearchAttributeValue) -> Self:
        return cls(kind="GreaterThan", name=name, value=value)

    @classmethod
    def less_than(cls, name: str, value: SearchAttributeValue) -> Self:
        return cls(kind="LessThan", name=name, value=value)

    @classmethod
    def contains(cls, name: str, keyword: str) -> Self:
        return cls(kind="Contains", name=name, keyword=keyword)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1 and "kind" not in data:
            [(kind, fields)] = data.items()
            return {"kind": kind, **fields} if isinstance(fields, dict) else data
        return data

    @model_validator(mode="after")
    def _operand_fits_kind(self) -> Self:
        operand, other = ("keyword", "value") if self.kind == "Contains" else ("value", "keyword")
        if getattr(self, operand) is None or getattr(self, other) is not None:
            raise ValueError(f"{self.kind} takes a {operand} and no {other}")
        return self

    @model_serializer(mode="wrap")
    def _to_wire(self, handler: Any) -> dict[str, Any]:
        fields = handler(self)
        operand = "keyword" if self.kind == "Contains" else "value"
        return {self.kind: {"name": fields["name"], operand: fields[operand]}}

    def matches(self, attributes: dict[str, SearchAttributeValue]) -> bool:
        stored = attributes.get(self.name)
        if stored is None:
            return False
        if self.kind == "Contains":
            return stored.type is SearchAttributeType.KEYWORD_LIST and self.keyword in stored.data
        assert self.value is not None
        if self.kind == "Equals":
            return stored == self.value
        if stored.type is not self.value.type or stored.type not in _ORDERED:
            return False
        if self.kind == "GreaterThan":
            return bool(stored.data > self.value.data)
        return bool(stored.data < self.value.data)


class ListWorkflowsFilter(Model):
    """`list_workflows`' filter: all conditions ANDed, then newest first, offset, limit."""

    workflow_type: StrictStr | None = None
    status: WorkflowStatus | None = None
    started_after: Timestamp | None = None
    started_before: Timestamp | None = None
    closed_after: Timestamp | None = None  # a row without close_time never matches
    closed_before: Timestamp | None = None
    search_attributes: list[SearchAttributePredicate] = Field(default_factory=list)
    limit: U32 | None = None
    offset: U32 | None = None

    def matches(self, row: VisibilityRecord) -> bool:
        """Whether `row` passes every condition; pagination is not a condition."""
        start, close = row.start_time, row.close_time
        return (
            (self.workflow_type is None or row.workflow_type == self.workflow_type)
            and (self.status is None or row.status == self.status)
            and (self.started_after is None or start >= self.started_after)
            and (self.started_before is None or start <= self.started_before)
            and (self.closed_after is None or (close is not None and close >= self.closed_after))
            and (self.closed_before is None or (close is not None and close <= self.closed_before))
            and all(p.matches(row.search_attributes) for p in self.search_attributes)
        )

    def select(self, rows: Iterable[VisibilityRecord]) -> list[VisibilityRecord]:
        """The matching rows, newest start first (ties by workflow id text), paginated."""
        found = sorted((r for r in rows if self.matches(r)), key=_by_id)
        found.sort(key=_by_start, reverse=True)  # stable: ties keep id order
        start = self.offset or 0
        return found[start:] if self.limit is None else found[start : start + self.limit]


def _by_id(row: VisibilityRecord) -> str:
    return str(row.workflow_id)


def _by_start(row: VisibilityRecord) -> datetime:
    return row.start_time


class PackageRecord(Model):
    """A deployed workflow package, keyed by `(workflow_type, content_hash)`."""

    workflow_type: StrictStr
    content_hash: StrictStr
    archive: Bytes
    deployed_at: Timestamp

    def sort_key(self) -> tuple[datetime, str, str]:
        """`list_packages` order: deployed_at, then type and hash text."""
        return (self.deployed_at, self.workflow_type, self.content_hash)


class PackageRouteRecord(Model):
    """Which package version serves a workflow type."""

    workflow_type: StrictStr
    content_hash: StrictStr
