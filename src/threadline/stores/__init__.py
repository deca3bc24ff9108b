"""Stores: where threads live (attached resources, chosen by URL)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Lease, Page, Store, ThreadSummary, new_thread_id
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "Lease",
    "MemoryStore",
    "Page",
    "SQLiteStore",
    "Store",
    "ThreadSummary",
    "new_thread_id",
    "open_store",
]


def open_store(url: str) -> Store:
    """A store from a URL: `sqlite:///path.db`, `memory://`, `postgresql://...`."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteStore.from_url(url)
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore  # lazy: needs threadline[postgres]

        return PostgresStore.from_url(url)
    raise ConfigError(
        f"unknown store URL {url!r}; use sqlite:///path.db, memory:// or postgresql://..."
    )
