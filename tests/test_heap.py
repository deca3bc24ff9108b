"""`settle_heap`: start-up's garbage collected, everything alive frozen (the CLI commands'
use of it: tests/cli/test_serve.py, tests/cli/test_ops.py; the benchmarks' here)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from threadline import settle_heap

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.slow
def test_the_overhead_bench_s_concurrency_runs_frozen_as_bench_concurrency_does(
    tmp_path: Path,
) -> None:
    """`bench/overhead.py --only concurrency` measures the threads as bench/concurrency.py
    and `threadline worker` run them: the heap frozen after the warm-up round, once;
    `--no-settle` leaves it unfrozen, as bench/concurrency.py's flag does."""
    figures = {}
    for flag in ("", "--no-settle"):
        out = tmp_path / f"overhead{flag}.json"
        run = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "overhead.py"), "--only", "concurrency"]
            + ["--quick", "--threads", "2", "--json", str(out), *([flag] if flag else [])],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        figures[flag] = (json.loads(out.read_text())["concurrency"]["heap_frozen"], run.stdout)
    frozen, said = figures[""]
    assert frozen > 10_000 and f"heap frozen: {frozen} objects" in said.replace("\n", " ")
    assert figures["--no-settle"][0] == 0 and "heap not frozen" in figures["--no-settle"][1]
