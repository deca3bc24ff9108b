"""Integration test fixtures (the helpers live in mcp_support.py, importable by name)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp_support import http_shop, shop_log  # noqa: E402

__all__ = ["http_shop", "shop_log"]
