"""Fixtures shared by every test folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_support import pg_schema, postgres_url  # noqa: E402

__all__ = ["pg_schema", "postgres_url"]
