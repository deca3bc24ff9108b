"""The public eval data lives outside the repo (../shared/data); tests that need it skip
with a message when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import require_shared

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Path:
    path = (ROOT / ".." / "shared" / "data").resolve()
    require_shared(path / "bfcl", path / "when2call")
    return path
