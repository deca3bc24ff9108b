"""`settle_heap`: start-up's garbage collected, everything alive frozen (the CLI commands'
use of it: tests/cli/test_serve.py, tests/cli/test_ops.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from threadline import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs as it did


def test_alive_objects_are_frozen_and_garbage_is_not() -> None:
    kept = _Node()
    dropped = _Node()
    gone = weakref.ref(dropped)
    del dropped
    frozen = settle_heap()
    assert frozen == gc.get_freeze_count() > 1000  # the modules, classes, ... of start-up
    assert gone() is None  # collected first, not kept forever
    assert not any(o is kept for o in gc.get_objects())  # no longer walked by a collection
    made_after = _Node()
    assert any(o is made_after for o in gc.get_objects())  # what comes later stays walked
