"""Observability test fixtures (server helpers live in tests/server_support.py)."""

from __future__ import annotations

from server_support import deploybot

__all__ = ["deploybot"]
