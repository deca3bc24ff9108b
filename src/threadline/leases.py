"""Keeping a lease while work runs: a heartbeat renews it every ttl/3.

A lease lasts `ttl` seconds unless renewed. Whoever advances a thread under a lease (a
worker, the server's runner, the CLI, a parent running its sub-agent's steps) runs this
heartbeat beside the work, so a step longer than the lease (a slow tool, a sub-agent's
turn) keeps it, and no second advancer takes the thread while the first still works on
it. A holder that dies stops renewing: its lease lapses after at most `ttl` seconds and
another worker resumes the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from .errors import LeaseLost
from .stores.base import Lease, Store

__all__ = ["heartbeat", "keep_lease"]

log = logging.getLogger("threadline.worker")


async def keep_lease(store: Store, lease: Lease, ttl: float, lost: asyncio.Event) -> None:
    """Renew `lease` every ttl/3 until cancelled; set `lost` (and stop) if it lapsed.

    It also stops once its task is being cancelled even if the cancellation never reached
    it: a database driver may swallow one that arrives mid-renewal (psycopg's pool waits
    with Python 3.11's `wait_for`, which can lose it), and a heartbeat that carried on would
    renew a thread's lease for ever, its holder stuck awaiting it."""
    interval = ttl / 3
    this = asyncio.current_task()
    while not (this and this.cancelling()):
        started = time.monotonic()
        await asyncio.sleep(interval)
        try:
            await store.renew(lease, ttl=ttl)
        except LeaseLost:
            # The next append will fail with LeaseLost too; nothing more to do here.
            lost.set()
            log.warning(
                "%s: lease on %s lapsed after %.1fs",
                lease.owner,
                lease.thread_id,
                time.monotonic() - started,
            )
            return
        except Exception as exc:  # a blip: try again next beat, the lease may still hold
            log.warning("%s: renewing %s failed: %s", lease.owner, lease.thread_id, exc)


@contextlib.asynccontextmanager
async def heartbeat(store: Store, lease: Lease, ttl: float) -> AsyncIterator[asyncio.Event]:
    """Renew `lease` while the block runs; yields the event set when it lapsed."""
    lost = asyncio.Event()
    beat = asyncio.create_task(keep_lease(store, lease, ttl, lost))
    try:
        yield lost
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat
