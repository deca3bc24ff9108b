"""An in-process store for tests and examples. Same semantics as the durable stores."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ..errors import LeaseLost, StoreError, ThreadNotFound
from ..events import Event, Status, Thread, ToolStarted, utcnow
from .base import (
    Append,
    Lease,
    LeaseQuery,
    Page,
    Store,
    ThreadQuery,
    ThreadSummary,
    check_append,
    fold_for_append,
    page_of,
)
from .budgets import MemoryLedger, ledger_events
from .keys import MemoryDeliveryLog, MemoryKeyStore
from .outbox import MemoryOutbox
from .ratelimits import MemoryRateLimits
from .schedules import MemoryScheduleStore

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Threads in a dict. Appends are serialised by one lock, so races behave like SQL."""

    def __init__(self) -> None:
        self._threads: dict[str, Thread] = {}
        self._summaries: dict[str, ThreadSummary] = {}
        """Built when read (`_summary_of`); an append or a lease change drops its entry."""
        self._updated: dict[str, float] = {}
        """When each thread was created or last appended to (epoch seconds)."""
        self._lock = asyncio.Lock()
        self._leases: dict[str, Lease] = {}
        self._tokens: dict[str, int] = {}
        self._work = asyncio.Event()
        self.keys = MemoryKeyStore()
        """API keys beside the threads (`threadline.stores.key_store`)."""
        self.deliveries = MemoryDeliveryLog()
        """Webhook delivery ids beside the threads (`threadline.stores.delivery_log`)."""
        self.outbox = MemoryOutbox()
        """Channel notices to send beside the threads (`threadline.stores.outbox`)."""
        self.schedules = MemoryScheduleStore()
        """Schedules beside the threads (`threadline.stores.schedule_store`)."""
        self.rate_limits = MemoryRateLimits()
        """Rate-limit counters beside the threads (`threadline.stores.rate_limit_store`)."""
        self.budgets = MemoryLedger()
        """Budgeted trees' totals, kept by appends (`threadline.stores.tree_totals`)."""

    async def create(self, thread: Thread) -> None:
        async with self._lock:
            if thread.id in self._threads:
                raise StoreError(f"thread {thread.id} already exists")
            copy = Thread(
                thread.id,
                thread.agent,
                thread.events,
                metadata=dict(thread.metadata),
                created_at=thread.created_at,
            )
            self._threads[thread.id] = copy
            self._updated[thread.id] = time.time()
            if copy.status == Status.RUNNING:
                self._work.set()

    async def _append(self, append: Append) -> None:
        thread_id, events, expected_seq, lease, _, after, _, _ = append
        if after is not None:
            await after()
        async with self._lock:
            thread = self._require(thread_id)
            if lease is not None:
                self._check_lease(lease)
            check_append(thread_id, len(thread.events), events, expected_seq)
            if any(type(e) is ToolStarted for e in events):  # a write-ahead: checked on the state
                fold_for_append(thread_id, _caught_up(thread).state, events, expected_seq)
            idle = not self._work.is_set()  # else no need to know if it became runnable
            was = _caught_up(thread).status if idle else None
            trees = self.budgets.applied(ledger_events(events))  # raises, nothing changed
            self.budgets.commit(trees)
            # The state is folded when it is read (`_caught_up`): the appender has folded
            # these events into its own copy already, and most appends are not read here.
            thread.events.extend(events)
            self._updated[thread_id] = time.time()  # the summary is built when read
            self._summaries.pop(thread_id, None)
            if idle and _caught_up(thread).status == Status.RUNNING and was != Status.RUNNING:
                self._work.set()

    async def load(self, thread_id: str) -> Thread:
        thread = self._require(thread_id)
        return Thread(
            thread.id,
            thread.agent,
            thread.events,
            metadata=dict(thread.metadata),
            created_at=thread.created_at,
        )

    async def events(self, thread_id: str, *, after: int = -1, limit: int = 1000) -> list[Event]:
        thread = self._require(thread_id)
        return thread.events[after + 1 : after + 1 + limit]

    async def get(self, thread_id: str) -> ThreadSummary:
        self._require(thread_id)
        return self._summary_of(thread_id)

    async def _list(self, query: ThreadQuery) -> Page:
        rows = sorted(map(self._summary_of, self._threads), key=lambda s: s.id, reverse=True)
        out = [
            s
            for s in rows
            if (query.status is None or s.status == query.status)
            and (query.agent is None or s.agent == query.agent)
            and (query.before is None or s.id < query.before)
        ]
        return page_of(out[: query.limit + 1], query.limit)

    async def delete(self, thread_id: str) -> None:
        async with self._lock:
            self._require(thread_id)
            del self._threads[thread_id]
            del self._updated[thread_id]
            self._summaries.pop(thread_id, None)
            self._leases.pop(thread_id, None)

    async def _lease(self, query: LeaseQuery) -> builtins.list[Lease]:
        owner, agents, thread_ids = query.owner, query.agents, query.thread_ids
        async with self._lock:
            now = utcnow()
            out: builtins.list[Lease] = []
            for s in sorted(map(self._summary_of, self._threads), key=lambda s: s.updated_at):
                if len(out) >= query.limit:
                    break
                if agents is not None and s.agent not in agents:
                    continue
                if thread_ids is not None and s.id not in thread_ids:
                    continue
                held = self._leases.get(s.id)
                if held is not None and held.expires > now:
                    continue
                runnable = s.status == Status.RUNNING or (
                    s.status == Status.WAITING and s.due_at is not None and s.due_at <= now
                )
                if not runnable:
                    continue
                token = self._tokens.get(s.id, 0) + 1
                self._tokens[s.id] = token
                lease = Lease(
                    s.id,
                    owner,
                    now + timedelta(seconds=query.ttl),
                    token,
                    taken_over_from=held.owner if held is not None else None,
                )
                self._leases[s.id] = lease
                self._summaries.pop(s.id, None)
                out.append(lease)
            return out

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        async with self._lock:
            self._check_lease(lease)
            renewed = replace(lease, expires=utcnow() + timedelta(seconds=ttl))
            self._leases[lease.thread_id] = renewed
            self._summaries.pop(lease.thread_id, None)
            return renewed

    async def release(self, lease: Lease) -> bool:
        async with self._lock:
            held = self._leases.get(lease.thread_id)
            if held is None or held.owner != lease.owner or held.token != lease.token:
                return False
            self._clear_lease(lease.thread_id)
            return True

    async def break_lease(self, thread_id: str) -> None:
        async with self._lock:
            self._require(thread_id)
            self._tokens[thread_id] = self._tokens.get(thread_id, 0) + 1
            self._clear_lease(thread_id)

    async def wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), seconds)
        self._work.clear()

    def _clear_lease(self, thread_id: str) -> None:
        self._leases.pop(thread_id, None)
        self._summaries.pop(thread_id, None)
        thread = self._threads.get(thread_id)
        if thread is not None and _caught_up(thread).status == Status.RUNNING:
            self._work.set()

    def _check_lease(self, lease: Lease) -> None:
        held = self._leases.get(lease.thread_id)
        if (
            held is None
            or held.owner != lease.owner
            or held.token != lease.token
            or held.expires <= utcnow()
        ):
            raise LeaseLost(lease.thread_id, lease.owner)

    def _require(self, thread_id: str) -> Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise ThreadNotFound(thread_id)
        return thread

    def _summary_of(self, thread_id: str) -> ThreadSummary:
        """The thread's summary as of now: built on the first read after a change (an
        append does not pay for a summary nobody may read)."""
        found = self._summaries.get(thread_id)
        if found is not None:
            return found
        thread = _caught_up(self._threads[thread_id])
        lease = self._leases.get(thread_id)
        found = self._summaries[thread_id] = ThreadSummary(
            id=thread.id,
            agent=thread.agent,
            status=thread.status,
            next_seq=thread.next_seq,
            created_at=thread.created_at,
            updated_at=datetime.fromtimestamp(self._updated[thread_id], UTC),
            metadata=thread.metadata,
            due_at=thread.state.waiting_until,
            lease_owner=lease.owner if lease else None,
            lease_expires=lease.expires if lease else None,
        )
        return found


def _caught_up(thread: Thread) -> Thread:
    """`thread` with its state folded over every event: an append extends a stored
    thread's events only, and the state catches up when it is read."""
    state = thread.state
    if state.next_seq < len(thread.events):
        for event in thread.events[state.next_seq :]:
            state.apply(event)
    return thread
