"""The public test material in ../shared/data: present in CI, maybe absent on a laptop.

Tests that drive real recorded conversations or public eval sets call `require_shared`.
Outside CI a missing folder skips the test with the reason; under `CI=true` it fails,
because a silent skip there would hide that the real-material tests did not run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT / ".." / "shared" / "data").resolve()


def require_shared(*paths: Path) -> None:
    """Skip (or, in CI, fail) unless every path exists."""
    missing = [str(p) for p in paths if not p.exists()]
    if not missing:
        return
    message = f"shared data absent: {', '.join(missing)} (see ../shared/data/README.md)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)
