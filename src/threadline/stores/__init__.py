"""Stores: where threads live (attached resources, chosen by URL)."""

from __future__ import annotations

from datetime import timedelta

from ..errors import ConfigError, StoreError
from .base import Lease, Page, Store, ThreadSummary, new_thread_id
from .budgets import TreeTotals
from .keys import ApiKey, DeliveryLog, KeyStore
from .memory import MemoryStore
from .outbox import Outbox, OutboxEntry
from .ratelimits import RateLimitStore
from .schedules import Schedule, ScheduleStore
from .sql import SQLStore
from .sqlite import SQLiteStore

__all__ = [
    "ApiKey",
    "DeliveryLog",
    "KeyStore",
    "Lease",
    "MemoryStore",
    "Outbox",
    "OutboxEntry",
    "Page",
    "RateLimitStore",
    "SQLStore",
    "SQLiteStore",
    "Schedule",
    "ScheduleStore",
    "Store",
    "ThreadSummary",
    "TreeTotals",
    "delivery_log",
    "key_store",
    "new_thread_id",
    "open_store",
    "outbox",
    "rate_limit_store",
    "schedule_store",
    "tree_totals",
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


def _beside(store: Store, what: str) -> SQLStore | MemoryStore:
    """`store`, when it keeps `what` beside its threads (same database, same connections)."""
    if isinstance(store, SQLStore | MemoryStore):
        return store
    raise StoreError(f"{type(store).__name__} keeps no {what}")


def key_store(store: Store) -> KeyStore:
    """The API keys kept beside `store`'s threads."""
    return _beside(store, "API keys").keys


def delivery_log(store: Store, keep: timedelta | None = None) -> DeliveryLog:
    """The webhook deliveries remembered beside `store`'s threads (ids kept for `keep`,
    default a day; ConfigError if that is too short to refuse replays)."""
    deliveries = _beside(store, "webhook deliveries").deliveries
    return deliveries if keep is None else deliveries.kept_for(keep)


def outbox(store: Store) -> Outbox:
    """The channel outbox and conversation links beside `store`'s threads."""
    return _beside(store, "channel outbox").outbox


def schedule_store(store: Store) -> ScheduleStore:
    """The schedules kept beside `store`'s threads."""
    return _beside(store, "schedules").schedules


def rate_limit_store(store: Store) -> RateLimitStore:
    """The rate-limit counters kept beside `store`'s threads (`threadline.ratelimits`)."""
    return _beside(store, "rate-limit counters").rate_limits


async def tree_totals(store: Store, root: str) -> TreeTotals | None:
    """The budget totals of the tree rooted at thread `root` (None: nothing reserved in
    it yet). See `threadline.budgets`.

    Raises:
        StoreError: `store` keeps no totals beside its threads.
    """
    return await _beside(store, "budget totals").budgets.totals(root)
