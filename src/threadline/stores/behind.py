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
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

from .dialect import Plan
from .grouping import answer
from .write_lock import is_busy

__all__ = ["Behind", "Flusher", "chain"]

Begin = Callable[[Plan[Any]], sqlite3.Connection]
"""Run a plan's statements on the inline connection inside a new `BEGIN IMMEDIATE`, leaving
the transaction open (rolled back if a statement fails); that connection."""
Elsewhere = Callable[[Callable[[], Plan[Any]], int], "Future[None]"]
"""Run a plan to its durable end on the store's own thread, counting `int` appends."""
Count = Callable[[int, float], None]
"""Count a `COMMIT` behind the loop of `int` appends that took `float` seconds."""
Released = Callable[[], None]
"""The inline connection's write transaction ended, committed or rolled back: the write lock
is free (`WriteLock.released`, which wakes a group committer waiting for it)."""
Merge = Callable[[list[Any]], Callable[[], Plan[Any]] | None]
"""Several queued appends' plans as one plan, given what each was queued with (`enqueue`'s
`known`), or None when they cannot be merged (then their plans run one after another)."""
Forget = Callable[[str], None]
"""Forget the state the store remembers for a thread whose append failed here (what it
remembered after that append is not the row's)."""


class Commit:
    """A transaction committing behind the loop: `done` once its `COMMIT` (or the store's
    thread, for `Elsewhere`) returned, with `error` if it failed. Plain fields, set on the
    committing thread before the loop is told (`call_soon_threadsafe`), read on the loop."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


@dataclass(slots=True)
class _Queued:
    thread_id: str
    plan: Callable[[], Plan[Any]]
    durable: asyncio.Future[None]
    known: Any


class Behind:
    """The transaction in flight behind the loop, and the appends queued behind it: of one
    thread at a time (the thread that started it; others append as before)."""

    def __init__(
        self,
        depth: int,
        begin: Begin,
        elsewhere: Elsewhere,
        count: Count,
        forget: Forget,
        merge: Merge | None = None,
        *,
        released: Released,
    ) -> None:
        self.depth = depth
        self._begin, self._elsewhere, self._count = begin, elsewhere, count
        self._released = released
        self._forget, self._merge = forget, merge
        self._flusher: Flusher | None = None
        self._job: Commit | None = None  # the inline connection's COMMIT, or done
        self._thread: str | None = None  # whose transaction is in flight
        self._carried: list[asyncio.Future[None]] = []  # its appends' awaitables
        self._queued: list[_Queued] = []
        self._carrying: Commit | None = None  # what commits them, on its thread
        self._waiting: list[asyncio.Future[None]] = []  # appends waiting at the depth

    def committing(self) -> bool:
        """Whether the inline connection's `COMMIT` is still running (the connection taken)."""
        return self._job is not None and not self._job.done

    def idle(self) -> bool:
        """Whether nothing is in flight or queued here, landed or not: only then may another
        thread's append `begin` (it would take over the state of a transaction whose
        `COMMIT` returned but whose appends the loop has not yet been told of)."""
        return self._carrying is None and not self._queued

    def holds(self, thread_id: str) -> bool:
        """Whether `thread_id` has a transaction in flight here: its next append queues."""
        return self._thread == thread_id and self.depth > 1

    async def drained(self, thread_id: str) -> None:
        """Wait until no append of `thread_id` is in flight or queued here, so that its next
        append may go elsewhere (a group commit) and still be written after them. Raises the
        error of one that failed: the next was built on it, and must not be written."""
        while self._thread == thread_id:
            pending = [*self._carried, *(entry.durable for entry in self._queued)]
            if not pending:
                return
            # Not gather: a caller cancelled here must not cancel the others' awaitables.
            await asyncio.wait(pending)
            for durable in pending:
                if not durable.cancelled() and durable.exception() is not None:
                    raise durable.exception()  # type: ignore[misc]

    def begin(self, plan: Callable[[], Plan[Any]], thread_id: str) -> asyncio.Future[None]:
        """Run `plan`'s statements on the inline connection now (their errors raised here,
        nothing written) and hand its `COMMIT` to the flusher; what completes once it
        returned."""
        conn = self._begin(plan())
        durable = asyncio.get_running_loop().create_future()
        self._hand_off(conn, thread_id, [durable])
        return durable

    async def enqueue(
        self, plan: Callable[[], Plan[Any]], thread_id: str, known: Any = None
    ) -> asyncio.Future[None]:
        """Queue an append of the thread in flight behind its transaction, waiting first
        while that would put more than `depth` of its appends on their way to disk.
        `known`: the append as data, for `merge` (None: not mergeable)."""
        entry = _Queued(thread_id, plan, asyncio.get_running_loop().create_future(), known)
        self._queued.append(entry)
        carrying = self._carrying
        if carrying is not None and carrying.done:
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
            self._flusher = Flusher()
        job = Commit()
        began = threading.Lock()
        began.acquire()
        loop = asyncio.get_running_loop()
        try:
            self._flusher.hand(
                partial(self._flush, conn, began, len(durables)),
                partial(_tell, loop, self._land, job),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            self._released()
            raise
        self._carry(thread_id, durables, job)
        began.acquire(timeout=BEGIN_WAIT)
        self._job = job

    def _carry(self, thread_id: str, durables: list[asyncio.Future[None]], job: Commit) -> None:
        """`job` commits `durables`' appends of `thread_id`: settled when it returns (the
        committing thread tells the loop, `_tell`; never cancelled: the connection stays
        taken until its COMMIT or ROLLBACK has returned)."""
        self._thread, self._carried, self._carrying = thread_id, durables, job

    def _flush(self, conn: sqlite3.Connection, began: threading.Lock, appends: int) -> None:
        """Commit `conn`'s open transaction (on the flusher's thread); `began` is released
        once the `COMMIT` statement runs (SQLite's trace hook), or if it fails."""
        released = False

        def begun(statement: str) -> None:
            nonlocal released
            if not released:
                released = True
                began.release()

        conn.set_trace_callback(begun)
        started = time.perf_counter()
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.set_trace_callback(None)
            begun("")
            self._released()  # committed or rolled back: a committer waiting is told
        self._count(appends, time.perf_counter() - started)

    def _land(self, job: Commit) -> None:
        """On the loop: the transaction in flight returned. Settle its appends, then start
        the queued ones' transaction (or fail them with its error), then wake a waiter.
        Called when the loop hears of it, or earlier by `enqueue` (then again: ignored)."""
        if job is not self._carrying:
            return
        self._carrying = None
        error = job.error
        if error is not None and self._thread is not None:
            self._forget(self._thread)  # before its appends' awaitables fail
        for durable in self._carried:
            answer(durable, error, error is None)
        self._carried = []
        if error is not None:
            self._fail(self._queued, error)
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
        whole = self._merged(batch)
        try:
            conn = self._begin(chain(plans) if whole is None else whole())
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                self._fail(batch, exc)
                self._thread = None
                return
            job = Commit()
            self._carry(thread_id, durables, job)
            loop = asyncio.get_running_loop()
            done = self._elsewhere(whole or partial(chain, plans), len(plans))
            done.add_done_callback(partial(_settle_from, loop, self._land, job))
            return
        except BaseException as exc:  # a conflict or a lost lease: none of them stays
            self._fail(batch, exc)
            self._thread = None
            return
        try:
            self._hand_off(conn, thread_id, durables)
        except BaseException as exc:  # rolled back (no committing thread): none of them stays
            self._fail(batch, exc)
            self._thread = None

    def _merged(self, batch: list[_Queued]) -> Callable[[], Plan[Any]] | None:
        """The batch's appends as one plan (one `UPDATE` and one `INSERT`, `known.py`), or
        None: their plans, one after another."""
        if self._merge is None or len(batch) < 2:
            return None
        return self._merge([entry.known for entry in batch])

    def _fail(self, entries: list[_Queued], error: BaseException) -> None:
        """`entries` are not written: the store forgets their threads' states (remembered
        after them), then their awaitables raise `error`. The store watches no awaitable
        of ours for that (no callback an append)."""
        for thread_id in {entry.thread_id for entry in entries}:
            self._forget(thread_id)
        for entry in entries:
            answer(entry.durable, error, False)

    def close(self, error: BaseException) -> None:
        """The store closes: fail what is queued (never written); wait for a `COMMIT`."""
        self._fail(self._queued, error)
        self._queued = []
        for landed in self._waiting:
            answer(landed, None, True)
        if self._flusher is not None:
            self._flusher.close()


def chain(plans: list[Callable[[], Plan[Any]]]) -> Plan[None]:
    """The plans one after another, as one (their values dropped)."""
    for plan in plans:
        yield from plan()


class Flusher:
    """A thread that runs `COMMIT`s handed to it (the inline connection's here; a slow
    disk's groups, `group_commit.py`), one at a time, each handed over through a queue: no
    executor, future or event a commit (bench/instructions.py).
    A daemon thread, ended by `close` or once its store is collected: a process that exits
    without closing its store has no append acknowledged and not durable (an append is
    acknowledged once its `COMMIT` returned), so nothing need wait for it at exit."""

    def __init__(self, name: str = "threadline-sqlite-commit") -> None:
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=_flushing, args=(self._work,), name=name, daemon=True
        )
        self._thread.start()
        weakref.finalize(self, self._work.put, None)

    def hand(self, flush: Callable[[], None], then: _Then) -> None:
        """Run `flush` on the thread; `then(error)` there once it returned."""
        self._work.put((flush, then))

    def close(self) -> None:
        """Wait for the `COMMIT` in flight, if any, then end the thread."""
        self._work.put(None)
        self._thread.join()


_Then = Callable[[BaseException | None], None]
_Work = tuple[Callable[[], None], _Then]


def _flushing(work: queue.SimpleQueue[_Work | None]) -> None:
    """The flusher's thread: each `COMMIT` handed over, in order, until told to stop."""
    while (item := work.get()) is not None:
        flush, then = item
        try:
            flush()
        except BaseException as exc:
            then(exc)
        else:
            then(None)


def _tell(
    loop: asyncio.AbstractEventLoop,
    land: Callable[[Commit], None],
    job: Commit,
    error: BaseException | None,
) -> None:
    """On the committing thread: `job` returned (with `error`); the loop lands it."""
    job.error, job.done = error, True
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(land, job)


def _settle_from(
    loop: asyncio.AbstractEventLoop,
    land: Callable[[Commit], None],
    job: Commit,
    done: Future[None],
) -> None:
    """`_tell` for a transaction committed on the store's thread (`Elsewhere`)."""
    _tell(loop, land, job, done.exception())


BEGIN_WAIT = 1.0
"""Seconds the loop waits at most for a `COMMIT` behind it to begin (its thread may not get
a CPU at once on a loaded machine); past that it goes on, and the commit with it, later."""
