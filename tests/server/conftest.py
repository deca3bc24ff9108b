"""Server test fixtures (the helpers live in tests/server_support.py, importable by name)."""

from __future__ import annotations

from server_support import deploybot, live

__all__ = ["deploybot", "live"]
