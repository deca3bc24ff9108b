"""Server test fixtures (the helpers live in tests/server_support.py, importable by name)."""

from __future__ import annotations

import pytest

from server_support import LiveServer, browser, deploybot, live

__all__ = ["browser", "deploybot", "live", "pending"]


@pytest.fixture
def pending(live: LiveServer) -> tuple[str, str]:
    """A deploybot thread awaiting approval: (thread id, call id)."""
    thread = live.launch()
    assert thread["status"] == "awaiting_approval"
    return thread["id"], thread["pending_approvals"][0]["call_id"]
