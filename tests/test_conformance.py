"""The checkpoint conformance suite on every backend."""

import pytest

from redis_checkpoint.conformance import CheckpointConformance, StoreFactory


class TestCheckpoints(CheckpointConformance):
    @pytest.fixture
    def make_store(self, checkpoint_stores: StoreFactory) -> StoreFactory:
        return checkpoint_stores
