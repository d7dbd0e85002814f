"""Reusable pytest suites for store backends.

Mix a suite into a test class and give it a `make_store` fixture: an async factory that
takes store options (`ttl`, `completed_ttl`, `max_envelope_bytes`, `max_batch_bytes`) and
returns a fresh, empty store. Stores made within one test must share their data::

    class TestMyBackend(CheckpointConformance):
        @pytest.fixture
        def make_store(self, my_factory): return my_factory

The suites need pytest; `servers` and `aion` (fixtures) import without it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoints import CheckpointConformance, StoreFactory, envelope, envelope_of_size

__all__ = ["CheckpointConformance", "StoreFactory", "envelope", "envelope_of_size"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # the suites import pytest: only when asked for
        from . import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(name)
