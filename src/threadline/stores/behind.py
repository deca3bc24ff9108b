"""Commits behind the event loop (SQLite pipelining, docs/core.md "Pipelining").

A lone thread's append runs its statements on the event loop, inside `BEGIN IMMEDIATE` on
the store's inline connection, and its `COMMIT` (the fsync) on a thread of its own, so the
runtime goes on with the next model call meanwhile (`SQLiteStore.run_behind`). An append of
the same thread that arrives while that `COMMIT` is still in flight does not wait for it:
it is *queued*, and when the `COMMIT` returns the queued appends' statements run, in order,
in one transaction with one `COMMIT` (one thread's own group commit). At most `depth`
appends of the thread are on their way to disk at once (returned, not yet durable): one
that would exceed it waits for the `COMMIT` in flight to return, then goes in the next
transaction with the appends queued before it. A transaction of fewer than `depth`
appends begins when the next append fills it or when the loop has nothing else to run
(`_idle`: a model call awaited, a join), whichever is first, so with an instant model
each carries `depth` turns and with a slow one a queued turn commits behind the call.

What holds (tests/stores/test_behind.py, tests/test_pipeline.py):

* A queued append is written after every append queued before it and in the same
  transaction or a later one; its errors (a conflict or a lost lease found by its
  statements, a failed `COMMIT`) are raised by its awaitable, never by the call, and
  nothing of its transaction stays. Every append queued behind a transaction that failed,
  or beside an append whose statements failed, fails with the same error: each was built
  on the ones before it.
* An append's awaitable completes only once its transaction's `COMMIT` returned.
* Statements never run on the inline connection while its `COMMIT` is in flight; a queued
  transaction that finds the write lock taken (another process) runs on the store's own
  thread instead, which waits for the lock, as any append there does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from .dialect import Plan
from .grouping import answer

__all__ = ["Behind", "chain"]

Begin = Callable[[Plan[Any]], sqlite3.Connection]
"""Run a plan's statements on the inline connection inside a new `BEGIN IMMEDIATE`, leaving
the transaction open (rolled back if a statement fails); that connection."""
Elsewhere = Callable[[Callable[[], Plan[Any]], int], "Future[None]"]
"""Run a plan to its durable end on the store's own thread, counting `int` appends."""
Count = Callable[[int, float], None]
"""Count a `COMMIT` behind the loop of `int` appends that took `float` seconds."""


@dataclass(slots=True)
class _Queued:
    thread_id: str
    plan: Callable[[], Plan[Any]]
    durable: asyncio.Future[None]


class Behind:
    """The transaction in flight behind the loop, and the appends queued behind it: of one
    thread at a time (the thread that started it; others append as before)."""

    def __init__(self, depth: int, begin: Begin, elsewhere: Elsewhere, count: Count) -> None:
        self.depth = depth
        self._begin, self._elsewhere, self._count = begin, elsewhere, count
        self._flusher: ThreadPoolExecutor | None = None
        self._job: Future[None] | None = None  # the inline connection's COMMIT, or done
        self._thread: str | None = None  # whose transaction is in flight
        self._carried: list[asyncio.Future[None]] = []  # its appends' awaitables
        self._queued: list[_Queued] = []
        self._carrying: Future[None] | None = None  # what commits them, on its thread
        self._waiting: list[asyncio.Future[None]] = []  # appends waiting at the depth

    def committing(self) -> bool:
        """Whether the inline connection's `COMMIT` is still running (the connection taken)."""
        return self._job is not None and not self._job.done()

    def idle(self) -> bool:
        """Whether nothing is in flight or queued here, landed or not: only then may another
        thread's append `begin` (it would take over the state of a transaction whose
        `COMMIT` returned but whose appends the loop has not yet been told of)."""
        return self._carrying is None and not self._queued

    def holds(self, thread_id: str) -> bool:
        """Whether `thread_id` has a transaction in flight here: its next append queues."""
        return self._thread == thread_id and self.depth > 1

    def begin(self, plan: Callable[[], Plan[Any]], thread_id: str) -> asyncio.Future[None]:
        """Run `plan`'s statements on the inline connection now (their errors raised here,
        nothing written) and hand its `COMMIT` to the flusher; what completes once it
        returned."""
        conn = self._begin(plan())
        durable = asyncio.get_running_loop().create_future()
        self._hand_off(conn, thread_id, [durable])
        return durable

    async def enqueue(self, plan: Callable[[], Plan[Any]], thread_id: str) -> asyncio.Future[None]:
        """Queue an append of the thread in flight behind its transaction, waiting first
        while that would put more than `depth` of its appends on their way to disk."""
        entry = _Queued(thread_id, plan, asyncio.get_running_loop().create_future())
        self._queued.append(entry)
        carrying = self._carrying
        if carrying is not None and carrying.done():
            # It returned, but the loop has not cycled since to hear of it (an instant
            # model does not yield): settle it now, and write this one at once with those
            # queued before it, rather than leave the disk idle until the loop next waits.
            self._land(carrying)
        if not self._carried and len(self._queued) >= self.depth:
            self._next()  # nothing in flight, and enough to fill a transaction: now
        while entry in self._queued and len(self._carried) + len(self._queued) > self.depth:
            landed = asyncio.get_running_loop().create_future()
            self._waiting.append(landed)
            try:
                await landed
            except asyncio.CancelledError:
                if entry in self._queued:  # nothing of it written
                    self._queued.remove(entry)
                    raise
                with contextlib.suppress(BaseException):  # written: it ends durable or not
                    await asyncio.shield(entry.durable)
                raise
        return entry.durable

    def _hand_off(
        self, conn: sqlite3.Connection, thread_id: str, durables: list[asyncio.Future[None]]
    ) -> None:
        """Start the open transaction's `COMMIT` on the flusher's thread, and wait (the GIL
        released) until it has begun: a thread woken while the loop runs Python would wait
        for the GIL up to a switch interval (5 ms) and begin only when the loop next blocks."""
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(1, thread_name_prefix="threadline-sqlite-commit")
        began = threading.Event()
        try:
            job = self._flusher.submit(self._flush, conn, began, len(durables))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._carry(thread_id, durables, job)
        began.wait(BEGIN_WAIT)
        self._job = job

    def _carry(
        self, thread_id: str, durables: list[asyncio.Future[None]], job: Future[None]
    ) -> None:
        """`job` commits `durables`' appends of `thread_id`: settle them when it returns."""
        loop = asyncio.get_running_loop()
        self._thread, self._carried, self._carrying = thread_id, durables, job
        # Never cancelled (a caller that stops waiting cancels only its awaitable): the
        # connection stays taken until its COMMIT or ROLLBACK has returned.
        job.add_done_callback(partial(_on_loop, loop, partial(self._land, job)))

    def _flush(self, conn: sqlite3.Connection, began: threading.Event, appends: int) -> None:
        """Commit `conn`'s open transaction (on the flusher's thread); `began` is set once
        the `COMMIT` statement runs (SQLite's trace hook), or if it fails."""
        conn.set_trace_callback(lambda statement: began.set())
        started = time.perf_counter()
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.set_trace_callback(None)
            began.set()
        self._count(appends, time.perf_counter() - started)

    def _land(self, job: Future[None]) -> None:
        """On the loop: the transaction in flight returned. Settle its appends, then start
        the queued ones' transaction (or fail them with its error), then wake a waiter.
        Called when the loop hears of it, or earlier by `enqueue` (then again: ignored)."""
        if job is not self._carrying:
            return
        self._carrying = None
        error = job.exception()
        for durable in self._carried:
            answer(durable, error, error is None)
        self._carried = []
        if error is not None:
            self._fail([entry.durable for entry in self._queued], error)
            self._queued = []
        elif len(self._queued) >= self.depth:
            self._next()
        waiting, self._waiting = self._waiting, []
        for landed in waiting:
            answer(landed, None, True)
        if self._queued and not self._carried:
            # Fewer than a transaction's worth: committed when the next append fills it,
            # or when the loop has nothing else to run (a model call awaited), whichever is
            # first; a waiter woken above runs before this.
            asyncio.get_running_loop().call_soon(self._idle)
        elif not self._queued and not self._carried:
            self._thread = None

    def _idle(self) -> None:
        """The loop cycled with appends queued and nothing in flight: commit them."""
        if self._queued and not self._carried:
            self._next()

    def _next(self) -> None:
        """The queued appends' statements, in order, in one transaction on the inline
        connection, and its `COMMIT` handed off; on the store's thread if the lock is taken."""
        batch, self._queued = self._queued, []
        thread_id = batch[0].thread_id
        durables = [entry.durable for entry in batch]
        plans = [entry.plan for entry in batch]
        try:
            conn = self._begin(chain(plans))
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                self._fail(durables, exc)
                self._thread = None
                return
            self._carry(thread_id, durables, self._elsewhere(partial(chain, plans), len(plans)))
            return
        except BaseException as exc:  # a conflict or a lost lease: none of them stays
            self._fail(durables, exc)
            self._thread = None
            return
        self._hand_off(conn, thread_id, durables)

    @staticmethod
    def _fail(durables: list[asyncio.Future[None]], error: BaseException) -> None:
        for durable in durables:
            answer(durable, error, False)

    def close(self, error: BaseException) -> None:
        """The store closes: fail what is queued (never written); wait for a `COMMIT`."""
        self._fail([entry.durable for entry in self._queued], error)
        self._queued = []
        for landed in self._waiting:
            answer(landed, None, True)
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)


def chain(plans: list[Callable[[], Plan[Any]]]) -> Plan[None]:
    """The plans one after another, as one (their values dropped)."""
    for plan in plans:
        yield from plan()


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], None], job: Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(call)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


BEGIN_WAIT = 1.0
"""Seconds the loop waits at most for a `COMMIT` behind it to begin (its thread may not get
a CPU at once on a loaded machine); past that it goes on, and the commit with it, later."""
