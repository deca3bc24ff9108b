"""Server test fixtures (the helpers live in server_support.py, importable by name)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_support import deploybot, live  # noqa: E402

__all__ = ["deploybot", "live"]
