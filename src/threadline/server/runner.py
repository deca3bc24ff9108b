"""Background execution: advance threads in the server's own event loop, under leases.

`ThreadRunner.kick(thread_id)` makes sure a task is advancing the thread: at most one task
per thread exists at a time, and a kick that arrives while one runs makes it go round once
more (the action may have landed after the task's last `decide`). A thread's progress lives
only in the store, so a task that dies, or a server that stops, loses nothing: the next
kick, or the next start (`resume_running`), continues from the last event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import ThreadlineError
from ..events import Status, utcnow
from ..runtime import Runtime
from ..schedules import RECOVER_EVERY, Scheduler, scheduler_for
from ..worker import PoisonGuard, advance_exclusively, default_owner

if TYPE_CHECKING:
    from ..observability.metrics import RuntimeMetrics

__all__ = ["ThreadRunner"]

log = logging.getLogger("threadline.server.runner")


class ThreadRunner:
    """Advances threads in background tasks.

    Args:
        runtime: the runtime whose `advance` does the work.
        enabled: False makes every kick a no-op (API-only servers; workers advance).
        concurrency: threads advanced at once (model calls and tools in flight).
        timer_interval: seconds between passes over due waits (`start_timers`).
        metrics: counts the lease expiries and takeovers of its advances.
        max_failures: failed advances of one thread in a row before it becomes `failed`
            (`threadline.worker.PoisonGuard`), so a thread every kick or timer pass would
            fail on is not retried forever.
        retry_after: seconds before a thread whose advance failed is kicked again (it is
            left `running`, and nothing else would advance it before the next restart).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        enabled: bool = True,
        concurrency: int = 32,
        timer_interval: float = 1.0,
        metrics: RuntimeMetrics | None = None,
        max_failures: int = 3,
        retry_after: float = 10.0,
    ) -> None:
        self.runtime = runtime
        self.enabled = enabled
        self.timer_interval = timer_interval
        self.metrics = metrics
        self._timers: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self.failures = 0
        self.poison = PoisonGuard(runtime.store, max_failures)
        self.retry_after = retry_after
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self.owner = f"server:{default_owner()}"
        self.scheduler: Scheduler | None = scheduler_for(runtime)
        """Fires the schedules of the served agents with the timer pass (None: the store
        keeps no schedules)."""

    @property
    def active(self) -> int:
        return len(self._tasks)

    def kick(self, thread_id: str) -> None:
        """Advance `thread_id` in the background (no-op when disabled or stopping)."""
        if not self.enabled or self.runtime.stopping:
            return
        task = self._tasks.get(thread_id)
        if task is not None and not task.done():
            self._again.add(thread_id)
            return
        self._tasks[thread_id] = asyncio.get_running_loop().create_task(
            self._drive(thread_id), name=f"advance {thread_id}"
        )

    async def _drive(self, thread_id: str) -> None:
        try:
            async with self._slots:
                while not self.runtime.stopping:
                    self._again.discard(thread_id)
                    try:
                        # Under a lease: a `threadline worker` sharing the store (or another
                        # server) can never advance the same thread at the same time.
                        await advance_exclusively(
                            self.runtime, thread_id, owner=self.owner, metrics=self.metrics
                        )
                    except Exception as exc:
                        # The thread stays as its last event left it; a later kick retries,
                        # until it has failed `max_failures` times in a row.
                        self.failures += 1
                        if isinstance(exc, ThreadlineError):
                            log.warning(
                                "advancing %s stopped: %s: %s", thread_id, type(exc).__name__, exc
                            )
                        else:
                            log.exception("advancing %s failed", thread_id)
                        await self._count_failure(thread_id, exc)
                        return
                    self.poison.succeeded(thread_id)
                    if thread_id not in self._again:
                        return
        finally:
            self._again.discard(thread_id)
            if self._tasks.get(thread_id) is asyncio.current_task():
                del self._tasks[thread_id]

    async def _count_failure(self, thread_id: str, exc: Exception) -> None:
        """Count the failure; unless it made the thread `failed`, try again later (a thread
        left `running` with no task advancing it would sit until the next restart)."""
        try:
            if await self.poison.failed(thread_id, exc, None):
                return
        except Exception as again:  # the store is away: the next failure counts again
            log.warning("could not count the failure of %s: %s", thread_id, again)
        if not self.runtime.stopping:
            loop = asyncio.get_running_loop()
            self._retries[thread_id] = loop.call_later(self.retry_after, self._retry, thread_id)

    def _retry(self, thread_id: str) -> None:
        self._retries.pop(thread_id, None)
        self.kick(thread_id)

    async def resume_running(self) -> int:
        """Kick every thread a previous process left `running` whose agent is served here."""
        if not self.enabled:
            return 0
        count, cursor = 0, None
        while True:
            page = await self.runtime.store.list(status=Status.RUNNING, limit=200, cursor=cursor)
            for summary in page.items:
                if summary.agent in self.runtime.agents:
                    self.kick(summary.id)
                    count += 1
            cursor = page.cursor
            if cursor is None:
                return count

    async def wake_due(self) -> int:
        """Kick every `waiting` thread served here whose wait is due (a `sleep_until`, a
        breaker wait, a `wait_for_event` timeout); the kick advances it under a lease, as a
        worker would. Returns how many were kicked."""
        if not self.enabled:
            return 0
        now, count, cursor = utcnow(), 0, None
        while True:
            page = await self.runtime.store.list(status=Status.WAITING, limit=200, cursor=cursor)
            for summary in page.items:
                due = summary.due_at is not None and summary.due_at <= now
                if due and summary.agent in self.runtime.agents:
                    self.kick(summary.id)
                    count += 1
            cursor = page.cursor
            if cursor is None:
                return count

    def start_timers(self) -> None:
        """Start the periodic pass over due waits (every `timer_interval` seconds) until
        `drain`: without it only a `threadline worker` would wake them."""
        if self.enabled and self._timers is None:
            self._timers = asyncio.get_running_loop().create_task(
                self._timer_loop(), name="wake due waits"
            )

    async def fire_schedules(self, *, recover: bool = False) -> int:
        """Fire the due schedule ticks of the served agents (exactly once per tick across
        every server and worker sharing the store) and kick the threads launched."""
        if not self.enabled or self.scheduler is None:
            return 0
        fired = await self.scheduler.recover() if recover else []
        fired += await self.scheduler.fire_due()
        for thread in fired:
            self.kick(thread.id)
        return len(fired)

    async def _timer_loop(self) -> None:
        passes = 0
        while not self.runtime.stopping:
            try:
                await self.wake_due()
            except Exception as exc:  # the store away for a moment: try again next pass
                log.warning("waking due waits failed: %s: %s", type(exc).__name__, exc)
            try:
                await self.fire_schedules(recover=passes % RECOVER_EVERY == 0)
            except Exception as exc:
                log.warning("firing schedules failed: %s: %s", type(exc).__name__, exc)
            passes += 1
            await asyncio.sleep(self.timer_interval)

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` seconds for running tasks (each stops after its step).

        Returns True if all finished; stragglers are cancelled (their last checkpoint stands).
        """
        if self._timers is not None:
            self._timers.cancel()
            await asyncio.gather(self._timers, return_exceptions=True)
            self._timers = None
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        tasks = [t for t in self._tasks.values() if not t.done()]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return not pending
