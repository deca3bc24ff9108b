"""Channel test fixtures: the deploybot *agent* (the server tests' fixture, not the module)."""

from __future__ import annotations

from server_support import deploybot

__all__ = ["deploybot"]
