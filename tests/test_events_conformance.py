"""The event-store and visibility conformance suites on every backend."""

import pytest

from redis_checkpoint.conformance.events import EventStoreConformance, EventStoreFactory
from redis_checkpoint.conformance.visibility import VisibilityConformance


class TestInMemory(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, memory_event_stores: EventStoreFactory) -> EventStoreFactory:
        return memory_event_stores


class TestFakeRedis(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, fakeredis_event_stores: EventStoreFactory) -> EventStoreFactory:
        return fakeredis_event_stores


class TestRedis(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, redis_event_stores: EventStoreFactory) -> EventStoreFactory:
        return redis_event_stores


class TestValkey(EventStoreConformance, VisibilityConformance):
    @pytest.fixture
    def make_store(self, valkey_event_stores: EventStoreFactory) -> EventStoreFactory:
        return valkey_event_stores
