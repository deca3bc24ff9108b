"""The public eval data lives outside the repo (../shared/data); tests that need it skip
with a message when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Path:
    path = (ROOT / ".." / "shared" / "data").resolve()
    if not (path / "bfcl").is_dir() or not (path / "when2call").is_dir():
        pytest.skip(f"public eval data not found at {path} (../shared/data)")
    return path
