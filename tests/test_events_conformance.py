"""The event-store and visibility conformance suites on every backend."""

import pytest

from redis_checkpoint.conformance.aion import UPSTREAM_CASES, pytest_name
from redis_checkpoint.conformance.events import EventStoreConformance, EventStoreFactory
from redis_checkpoint.conformance.visibility import VisibilityConformance


class TestEventStores(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, event_stores: EventStoreFactory) -> EventStoreFactory:
        return event_stores


def test_every_upstream_case_is_ported_under_its_name() -> None:
    assert len(UPSTREAM_CASES) == 26  # 23 of aion-store 0.6.2 and 3 added later upstream
    missing = [c for c in UPSTREAM_CASES if not hasattr(EventStoreConformance, pytest_name(c))]
    assert missing == []
