"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server_support import serve_calculator


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A served calculator (`threadline serve` on loopback): its URL and environment."""
    with serve_calculator(tmp_path) as served:
        yield served
