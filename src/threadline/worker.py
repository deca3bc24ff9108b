"""Workers: stateless processes that lease runnable threads and advance them (factors 6, 8, 9).

    while not stopping:
        leases = store.lease(owner, ttl, free_slots)      # SKIP LOCKED on PostgreSQL
        for lease in leases:                               # up to `concurrency` at once
            heartbeat renews the lease every ttl/3
            runtime.advance(thread, lease=lease)           # every append checks the lease
            release the lease
        nothing to do: wait for NOTIFY (PostgreSQL) or poll

Invariants:
    * A worker appends only while it holds the thread's lease; the store checks owner,
      fencing token and expiry in the append's transaction. A worker that lost its lease
      (frozen, cut off, too slow) gets `LeaseLost` and abandons the thread; it never writes.
    * Nothing lives in the worker: after a crash the lease expires and any worker resumes
      the thread from its last event. A `tool_started` without an outcome is resolved by
      `decide` (idempotent tools re-run with the same key, others escalate).
    * Poison threads: a thread whose advance raises `max_failures` times in a row (no event
      appended in between: a corrupt row, a renderer or tool wrapper that crashes, a bug)
      becomes `failed` with the reason (a `failed` event), instead of being re-leased
      every lease TTL forever. `threadline threads stuck` lists it, `threadline threads
      retry` re-arms it once fixed. Store outages (`StoreError`, `OSError`) do not count:
      they are not the thread's fault, and the thread waits them out.
    * Graceful shutdown (`stop()`, SIGTERM, SIGINT): no new leases; running threads finish
      their current step (`Runtime.stop`), are checkpointed, and their leases released;
      `run()` returns within `shutdown_timeout` seconds, abandoning (not releasing) any
      thread still mid-step, whose lease then expires.

Beside the worker loop: `advance_exclusively` (one thread under a lease, for the server's
runner and the CLI), `advance_or_take_over` (the same, taking over the lease of a crashed
process on this host at once instead of waiting for it to expire) and `stuck_threads`
(what operators look at when nothing moves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, CorruptEvent, LeaseLost, StoreError, ThreadlineError
from .events import Failed, Status, utcnow
from .leases import keep_lease
from .runtime import Runtime, compact_error
from .schedules import keep_firing, scheduler_for
from .stores.base import Lease, Store, ThreadSummary

if TYPE_CHECKING:
    from .observability.metrics import RuntimeMetrics

__all__ = [
    "Advanced",
    "PoisonGuard",
    "Worker",
    "WorkerStats",
    "advance_exclusively",
    "advance_or_take_over",
    "default_owner",
    "owner_is_gone",
    "stuck_threads",
    "summaries",
]

log = logging.getLogger("threadline.worker")


@dataclass
class WorkerStats:
    """What one worker did since it started."""

    leased: int = 0
    advanced: int = 0
    released: int = 0
    lost: int = 0
    """Leases lost mid-work (another worker took the thread; nothing was written)."""
    failed: int = 0
    """Advances that raised; their leases were left to expire (a back-off)."""
    steps: int = 0
    """Events appended by this worker (a proxy for steps)."""
    taken_over: int = 0
    """Leases taken from a holder whose lease lapsed (it crashed or stalled)."""
    poisoned: int = 0
    """Threads this worker marked `failed` after `max_failures` failed advances in a row."""
    fired: int = 0
    """Schedule ticks this worker claimed and launched (`threadline.schedules`)."""
    fire_lost: int = 0
    """Schedule ticks another process claimed first."""


class PoisonGuard:
    """Counts failed attempts to advance each thread; the `limit`-th in a row (nothing
    appended in between) appends a `failed` event with the reason.

    Only failures that are the thread's own count: a `StoreError` (other than a corrupt
    event) or an `OSError` is the database or the network, and the thread waits it out.
    Memory is one entry per thread currently failing.
    """

    def __init__(self, store: Store, limit: int = 3) -> None:
        if limit < 1:
            raise ConfigError(f"max_failures must be at least 1, not {limit}")
        self.store = store
        self.limit = limit
        self._failing: dict[str, tuple[int, int]] = {}

    def succeeded(self, thread_id: str) -> None:
        """The thread advanced without an error: its count starts again."""
        self._failing.pop(thread_id, None)

    async def failed(self, thread_id: str, exc: BaseException, lease: Lease | None) -> bool:
        """Count one failed advance; True when this one made the thread `failed`."""
        if isinstance(exc, StoreError | OSError) and not isinstance(exc, CorruptEvent):
            return False
        seq = (await self.store.get(thread_id)).next_seq
        at_seq, count = self._failing.get(thread_id, (-1, 0))
        count = count + 1 if at_seq == seq else 1
        if count < self.limit:
            self._failing[thread_id] = (seq, count)
            return False
        reason = (
            f"advancing the thread failed {count} times in a row; the last error: "
            f"{type(exc).__name__}: {compact_error(exc)} (fix it, then: threadline threads "
            f"retry {thread_id})"
        )
        event = Failed(seq=seq, at=utcnow(), reason=reason)
        # Forgotten only once written: if the append is refused (the lease lapsed while the
        # thread failed), the next failure marks it, not the `limit`-th after that.
        await self.store.append(thread_id, [event], expected_seq=seq, lease=lease)
        self._failing.pop(thread_id, None)
        log.error("thread %s failed: %s", thread_id, reason)
        return True


class Worker:
    """Leases runnable threads from the runtime's store and advances them.

    Args:
        runtime: the runtime (store, agents, model) to advance threads with. Only threads
            of the runtime's agents are leased.
        concurrency: threads advanced at once by this process.
        lease_ttl: seconds a lease lasts without a heartbeat; the time a crashed worker's
            threads wait before another worker resumes them.
        poll_interval: seconds between polls when the store cannot wake the worker.
        owner: the lease owner name (default `hostname:pid:random`).
        shutdown_timeout: seconds `run()` waits, once stopping, for current steps to end.
        metrics: counts lease expiries and takeovers (`threadline worker --metrics-port`).
        max_failures: failed advances of one thread in a row before it becomes `failed`
            (see `PoisonGuard`).
        schedules: also fire the due ticks of the schedules of the runtime's agents (a
            pass every `poll_interval` seconds at most, sooner when a tick is due).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int = 4,
        lease_ttl: float = 30.0,
        poll_interval: float = 1.0,
        owner: str | None = None,
        shutdown_timeout: float = 30.0,
        metrics: RuntimeMetrics | None = None,
        max_failures: int = 3,
        schedules: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"worker concurrency must be at least 1, not {concurrency}")
        if lease_ttl <= 0 or poll_interval <= 0:
            raise ConfigError("worker lease_ttl and poll_interval must be positive")
        self.runtime = runtime
        self.store = runtime.store
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.owner = owner or default_owner()
        self.shutdown_timeout = shutdown_timeout
        self.metrics = metrics
        self.stats = WorkerStats()
        self.poison = PoisonGuard(runtime.store, max_failures)
        self.scheduler = scheduler_for(runtime) if schedules else None
        # Keyed by lease, not thread: after a lapsed lease this worker may lease the same
        # thread again while the old task winds down (its next append gets LeaseLost).
        self._active: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._work_signal = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop leasing; let current steps finish (safe to call from a signal handler)."""
        if not self._stopping.is_set():
            log.info("worker %s stopping", self.owner)
        self._stopping.set()
        self.runtime.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call `stop()` (on the running event loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Lease and advance threads until `stop()` (or, with `until_idle`, until a poll
        finds nothing to do and nothing is running). Returns the stats."""
        await self.store.ping()  # refuses to start on an out-of-date schema
        agents = sorted(self.runtime.agents)
        if not agents:
            raise ConfigError("the worker's runtime has no agents; it could advance nothing")
        log.info(
            "worker %s started: agents=%s concurrency=%d", self.owner, agents, self.concurrency
        )
        listener = asyncio.create_task(self._listen())
        firing = asyncio.create_task(self._fire_schedules()) if self.scheduler else None
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._active)
                leases: Sequence[Lease] = []
                if free > 0:
                    try:
                        leases = await self.store.lease(
                            self.owner, ttl=self.lease_ttl, limit=free, agents=agents
                        )
                    except Exception as exc:
                        # A database restart or network blip must not kill the worker:
                        # threads in flight carry on or lose their leases; try again later.
                        self.stats.failed += 1
                        log.warning("worker %s: leasing failed, retrying: %s", self.owner, exc)
                        await asyncio.sleep(self.poll_interval)
                        continue
                for lease in leases:
                    self.stats.leased += 1
                    if lease.taken_over_from is not None:
                        self.stats.taken_over += 1
                        _count_takeover(self.metrics, lease)
                    task = asyncio.create_task(self._work(lease))
                    self._active[lease.thread_id, lease.token] = task
                if leases and len(leases) == free:
                    continue  # maybe more work waiting: lease again once a slot frees
                if until_idle and not leases and not self._active:
                    break
                await self._idle(full=free <= 0)
        finally:
            for background in (listener, firing):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await background
            if self.scheduler is not None:
                self.stats.fired = self.scheduler.stats.fired
                self.stats.fire_lost = self.scheduler.stats.lost
            await self._drain()
        return self.stats

    async def _idle(self, *, full: bool) -> None:
        """Wait for a slot to free (when full) or for work to appear (NOTIFY or poll)."""
        self._slot_free.clear()
        events = [self._slot_free, self._stopping] + ([] if full else [self._work_signal])
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        self._work_signal.clear()

    async def _listen(self) -> None:
        """Turn the store's wake-ups (LISTEN/NOTIFY on PostgreSQL) into `_work_signal`.

        A task of its own, never cancelled mid-wait except at shutdown, so the store's
        listening connection is not interrupted by every idle period. It also checks
        whether it is being cancelled: a driver may swallow a cancellation mid-wait.
        """
        this = asyncio.current_task()
        while not self._stopping.is_set() and not (this and this.cancelling()):
            try:
                await self.store.wait_for_work(self.poll_interval)
            except Exception as exc:  # the poll loop still runs; this is only a speed-up
                log.warning("worker %s: waiting for work failed: %s", self.owner, exc)
                await asyncio.sleep(self.poll_interval)
            self._work_signal.set()

    async def _fire_schedules(self) -> None:
        """Fire due schedule ticks until `run` ends; the launched threads are then leased
        like any other (this worker is told at once; others by NOTIFY or their poll)."""
        if self.scheduler is None:
            return

        await keep_firing(
            self.scheduler,
            interval=self.poll_interval,
            stopping=self._stopping.is_set,
            on_fired=lambda _: self._work_signal.set(),
            who=f"worker {self.owner}",
        )

    async def _drain(self) -> None:
        """Let running threads finish their current step, then give up the rest."""
        if not self._active:
            return
        self.runtime.stop()
        tasks = list(self._active.values())
        _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
        for task in pending:
            task.cancel()  # abandoned mid-step: the lease expires, another worker resumes
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if pending:
            log.warning(
                "worker %s abandoned %d thread(s) at the shutdown deadline",
                self.owner,
                len(pending),
            )

    # -- one thread ----------------------------------------------------------------------

    async def _work(self, lease: Lease) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(keep_lease(self.store, lease, self.lease_ttl, lost))
        release = True
        try:
            thread = await self.store.load(lease.thread_id)
            before = thread.next_seq
            thread = await self.runtime.wake_if_due(thread, lease=lease)
            thread = await self.runtime.advance(thread, lease=lease)
            self.poison.succeeded(lease.thread_id)
            self.stats.steps += thread.next_seq - before
            self.stats.advanced += 1
            if (
                thread.next_seq == before
                and not self.runtime.stopping
                and thread.status in (Status.RUNNING, Status.WAITING)
            ):
                # Runnable by its status yet nothing to do (e.g. a wait not due by this
                # worker's clock): hold the lease to its expiry instead of spinning on it.
                release = False
        except LeaseLost:
            self.stats.lost += 1
            release = False
            if self.metrics is not None:
                self.metrics.lease_expired()
            log.warning(
                "worker %s lost the lease on %s; abandoning it", self.owner, lease.thread_id
            )
        except asyncio.CancelledError:
            release = False
            raise
        except Exception as exc:
            # Keep the lease until it expires: a natural back-off before another try.
            self.stats.failed += 1
            release = False
            _log_step_failure(self.owner, lease.thread_id, exc)
            with contextlib.suppress(Exception):  # marking it is best effort; the next try counts
                if await self.poison.failed(lease.thread_id, exc, lease):
                    self.stats.poisoned += 1
                    release = True
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat
            if release and not lost.is_set():
                with contextlib.suppress(Exception):
                    if await self.store.release(lease):
                        self.stats.released += 1
            self._active.pop((lease.thread_id, lease.token), None)
            self._slot_free.set()


def _count_takeover(metrics: RuntimeMetrics | None, lease: Lease) -> None:
    log.info(
        "%s took over %s from %s, whose lease lapsed",
        lease.owner,
        lease.thread_id,
        lease.taken_over_from,
    )
    if metrics is not None:
        metrics.lease_taken_over()


def _log_step_failure(owner: str, thread_id: str, exc: BaseException) -> None:
    """One warning line for a failed step; the traceback only at debug level.

    An expected failure (a `ThreadlineError` such as a lost database connection, or an
    `OSError`) is one line per failure, not a traceback per step while the database is away;
    anything else is a bug and keeps its traceback.
    """
    if isinstance(exc, ThreadlineError | OSError):
        log.warning(
            "worker %s: advancing %s failed (%s): %s",
            owner,
            thread_id,
            type(exc).__name__,
            exc,
        )
        log.debug("worker %s: traceback of the failed step on %s", owner, thread_id, exc_info=exc)
        return
    log.error(
        "worker %s: advancing %s failed (bug, %s): %s",
        owner,
        thread_id,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


def default_owner() -> str:
    """A lease owner naming this host and process, unique per call."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def owner_is_gone(owner: str) -> bool:
    """True if a lease owner (`[role:]host:pid:tag`) is a process on this host that no
    longer exists: a crashed CLI or worker, whose lease can be taken over at once."""
    parts = owner.rsplit(":", 3)
    if len(parts) < 3 or not parts[-2].isdigit() or parts[-3] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


async def advance_exclusively(
    runtime: Runtime,
    thread_id: str,
    *,
    owner: str | None = None,
    ttl: float = 30.0,
    metrics: RuntimeMetrics | None = None,
) -> bool:
    """Lease `thread_id`, advance it under the lease (with a heartbeat), release it.

    The way any process other than a worker (the server's background runner, the CLI)
    advances a thread that workers may share: the lease makes it the only advancer, so
    two processes can never both call the model or run a tool for the same step. Returns
    False, doing nothing, when the thread is not runnable or another holder has it (that
    holder advances it). Errors propagate after the lease is released.
    """
    owner = owner or default_owner()
    leases = await runtime.store.lease(owner, ttl=ttl, thread_ids=[thread_id])
    if not leases:
        return False
    lease = leases[0]
    if lease.taken_over_from is not None:
        _count_takeover(metrics, lease)
    lost = asyncio.Event()
    heartbeat = asyncio.create_task(keep_lease(runtime.store, lease, ttl, lost))
    try:
        thread = await runtime.store.load(thread_id)
        thread = await runtime.wake_if_due(thread, lease=lease)
        await runtime.advance(thread, lease=lease)
    except LeaseLost:
        if metrics is not None:
            metrics.lease_expired()
        raise
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await heartbeat
        if not lost.is_set():
            with contextlib.suppress(Exception):
                await runtime.store.release(lease)
    return True


@dataclass(frozen=True, slots=True)
class Advanced:
    """What `advance_or_take_over` did.

    Attributes:
        advanced: this process advanced the thread (under its own lease).
        took_over_from: the crashed owner whose lease was broken first, if any.
        held_by: the live owner advancing the thread instead (nothing was done here).
    """

    advanced: bool
    took_over_from: str | None = None
    held_by: str | None = None


async def advance_or_take_over(
    runtime: Runtime, thread_id: str, *, owner: str, ttl: float = 10.0
) -> Advanced:
    """`advance_exclusively`, taking over at once from a crashed owner on this host.

    A lease held by a process that no longer exists (a CLI killed mid-step) would block the
    thread until it expires; since the owner is provably gone, its lease is broken and the
    thread advanced here. A lease held by a live process is left alone: that process is
    advancing the thread, and `held_by` names it.
    """
    if await advance_exclusively(runtime, thread_id, owner=owner, ttl=ttl):
        return Advanced(advanced=True)
    summary = await runtime.store.get(thread_id)
    holder = summary.lease_owner
    if not holder or summary.status not in (Status.RUNNING, Status.WAITING):
        return Advanced(advanced=False)
    if not owner_is_gone(holder):
        return Advanced(advanced=False, held_by=holder)
    await runtime.store.break_lease(thread_id)
    advanced = await advance_exclusively(runtime, thread_id, owner=owner, ttl=ttl)
    return Advanced(advanced=advanced, took_over_from=holder)


async def summaries(
    store: Store, status: Status | None = None, agent: str | None = None
) -> AsyncIterator[ThreadSummary]:
    """Every thread of the store (optionally of one status or agent), page by page."""
    cursor = None
    while True:
        page = await store.list(status=status, agent=agent, limit=500, cursor=cursor)
        for item in page.items:
            yield item
        cursor = page.cursor
        if cursor is None:
            return


async def stuck_threads(
    store: Store, *, grace: timedelta, now: datetime | None = None
) -> list[tuple[ThreadSummary, str]]:
    """Threads no worker is making progress on, each with the reason.

    * running with a lease that expired more than `grace` ago (its worker died and no
      worker has taken it since: are any workers running for its agent?);
    * running with no lease, untouched for more than `grace` (nobody is working on it);
    * waiting with a due time more than `grace` in the past (no worker woke it);
    * failed: its advance kept failing (a poison thread, see `PoisonGuard`), with why.
    """
    now = now or utcnow()
    out = []
    async for s in summaries(store, Status.RUNNING):
        if s.lease_expires is not None and s.lease_expires < now - grace:
            out.append((s, f"lease of {s.lease_owner} expired at {s.lease_expires:%F %T}Z"))
        elif s.lease_owner is None and s.updated_at < now - grace:
            out.append((s, f"runnable, no worker since {s.updated_at:%F %T}Z"))
    async for s in summaries(store, Status.WAITING):
        if s.due_at is not None and s.due_at < now - grace:
            out.append((s, f"wait was due at {s.due_at:%F %T}Z"))
    async for s in summaries(store, Status.FAILED):
        out.append((s, await _failure_reason(store, s)))
    return out


async def _failure_reason(store: Store, summary: ThreadSummary) -> str:
    """Why a failed thread failed: its last event's reason (read alone, so a thread whose
    earlier events are damaged still says)."""
    try:
        last = await store.events(summary.id, after=summary.next_seq - 2, limit=1)
    except ThreadlineError as exc:
        return f"failed; its last event is unreadable: {exc}"
    if last and isinstance(last[-1], Failed):
        return f"failed: {last[-1].reason}"
    return "failed"
