"""The checkpoint conformance suite on every backend."""

import pytest

from redis_checkpoint.conformance import CheckpointConformance, StoreFactory


class TestInMemory(CheckpointConformance):
    @pytest.fixture
    def make_store(self, memory_stores: StoreFactory) -> StoreFactory:
        return memory_stores


class TestFakeRedis(CheckpointConformance):
    @pytest.fixture
    def make_store(self, fakeredis_stores: StoreFactory) -> StoreFactory:
        return fakeredis_stores


class TestRedis(CheckpointConformance):
    @pytest.fixture
    def make_store(self, redis_stores: StoreFactory) -> StoreFactory:
        return redis_stores


class TestValkey(CheckpointConformance):
    @pytest.fixture
    def make_store(self, valkey_stores: StoreFactory) -> StoreFactory:
        return valkey_stores
