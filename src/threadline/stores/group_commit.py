"""Group commit: appends from concurrent threads of one process share one transaction.

At `synchronous=FULL` a SQLite commit costs an fsync, and an fsync costs far more than the
statements of an append. When several threads of one process append at about the same
time (a worker or a server advancing many threads), their appends are queued and one
committer, on a thread and a connection of its own, runs them in one `BEGIN IMMEDIATE ...
COMMIT`:

* each append runs inside its own `SAVEPOINT`, so one that fails (a conflict, a lost lease,
  an unknown thread) is rolled back alone and its caller gets its own error, while the
  others commit;
* every caller is answered only after the `COMMIT` returned: an append is acknowledged only
  once it is durable (tests/stores/test_group_commit.py kills the process inside group
  commits and finds every acknowledged event); the committer answers the group through
  one `loop.call_soon_threadsafe` per event loop as soon as the COMMIT returned;
* if the transaction itself fails (a disk error at `COMMIT`), every caller of the group gets
  the error and nothing of the group was written.

The committer waits at most `window` seconds after the oldest queued append before it
begins (less when every thread that appended recently is already queued), or until the
group ahead committed, whichever is later; every append queued when a group begins is in
it. So an append waits at most for the rest of the group ahead of it, the window and its
own group's transaction; `CommitStats.longest_overrun` measures by how much the committer
began a group later than that (a thread switch, a committer waking up). The committer has
its own thread because the store's thread also runs reads and leases: on one thread a read
waited for every group's fsync, and a group for every read and lease queued before it. A
lone thread, threads run one after another, or threads that append rarely never wait: an
append goes to the group only when another thread that is still running appended within
the last window (`crowded`); otherwise the store runs it at once, inline.

Written here rather than taken from a library: sqlite3 has no group commit, and it needs
the store's plans (`dialect.Plan`) run on a connection of the store's file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import StoreError
from .dialect import Plan
from .grouping import AppendStats, answer

__all__ = ["CommitStats", "GroupCommit"]

T = TypeVar("T")

_Drive = Callable[[sqlite3.Connection, Plan[Any]], Any]


@dataclass(slots=True)
class CommitStats(AppendStats):
    """What a store committed: `commits` write transactions (each one fsync of the WAL at
    `synchronous=FULL`; a checkpoint adds its own now and then), holding `appends` appends.
    `groups` of the transactions were run by the group committer, and `grouped` appends
    shared their transaction with another thread's append. `waits` and `longest_wait` are
    the grouped appends' only (arrival to their group's COMMIT returning)."""

    commits: int = 0
    commit_seconds: float = 0.0
    """Of `group_seconds`, the seconds spent in their COMMIT statements (the fsync)."""
    longest_group: float = 0.0
    """Seconds of the longest group transaction (BEGIN to COMMIT)."""
    behind: int = 0
    """Appends committed behind the event loop (`SQLiteStore.run_behind`: pipelining),
    counted in `commits` and `appends` too."""
    queued: int = 0
    """Of `behind`, the appends that shared their `COMMIT` with an earlier append of their
    thread, queued behind a `COMMIT` in flight (`stores/behind.py`): the fsyncs saved."""
    behind_seconds: float = 0.0
    """Seconds the `COMMIT`s of those appends took, on their own thread."""
    longest_overrun: float = 0.0
    """Seconds a group began after it could have, at most: after the later of its oldest
    append's arrival plus the window and the COMMIT of the group ahead (when that append
    arrived before it). What a grouped append waited beyond the rest of the group ahead,
    the window and its own transaction."""
    longest_lock: float = 0.0
    """Seconds a group's `BEGIN IMMEDIATE` took at most: a wait for another writer's lock
    (this store's `COMMIT` behind the loop, another process), in SQLite's busy handler."""
    over_interval: int = 0
    """Appends the committer ran that waited longer than one commit interval of their own:
    the window plus their group's transaction once it held the write lock (`BEGIN
    IMMEDIATE` returned to `COMMIT` returned). Waiting for the group ahead, for the lock or
    for a late committer counts against it."""
    longest_in_intervals: float = 0.0
    """The longest wait of such an append as a multiple of that interval of its own."""


@dataclass(slots=True)
class _Request:
    plan: Callable[[], Plan[Any]]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    arrived: float


class GroupCommit:
    """The queue of appends waiting to be committed together, and their committer.

    Args:
        window: seconds the committer may wait for more appends after the oldest queued.
        connect: opens the committer's own connection (called once, on its thread).
        drive: runs one plan's statements on a connection inside an open transaction.
        stats: the store's counters, updated under `lock`.
        lock: guards `stats` (the inline path counts its commits too).
    """

    def __init__(
        self,
        window: float,
        connect: Callable[[], sqlite3.Connection],
        drive: _Drive,
        stats: CommitStats,
        lock: threading.Lock,
    ) -> None:
        self.window = window
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        # A thread of its own, not the store's: reads and leases on the store's thread do
        # not wait for a group's fsync, nor a group for them (see the module docstring).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="threadline-group-commit")
        self._drive = drive
        self.stats = stats
        self._stats_lock = lock
        self._queue: list[_Request] = []
        self._ready = threading.Condition()
        self._busy = False
        self._closed = False
        self._writers: dict[str, float] = {}
        self._last_commit = 0.0  # when the latest group's COMMIT returned (monotonic)

    def _connection(self) -> sqlite3.Connection:
        """The committer's connection (on its thread), opened on first use."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        """Commit what is queued, stop the committer and close its connection (blocks)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def crowded(self, writer: str) -> bool:
        """Whether another thread is appending too: one that appended within the window
        and is still running, or an append already queued. Then this append joins a group
        instead of committing alone."""
        now = time.monotonic()
        horizon = now - self.window
        writers = self._writers
        writers.pop(writer, None)
        while writers:  # oldest first (insertion order): forget writers gone quiet
            oldest = next(iter(writers))
            if writers[oldest] >= horizon:
                break
            del writers[oldest]
        crowded = bool(writers) or bool(self._queue)
        writers[writer] = now
        return crowded

    def finished(self, writer: str, running: bool) -> None:
        """`writer`'s append returned: it counts as appending until the window has passed
        since now (a commit may have taken longer than the window), or no more if its
        thread stopped running (ended, waits for someone: its next append is far off)."""
        self._writers.pop(writer, None)
        if running:
            self._writers[writer] = time.monotonic()

    async def submit(self, plan: Callable[[], Plan[T]]) -> T:
        """Queue `plan` for the next group; its value once the group's COMMIT returned."""
        loop = asyncio.get_running_loop()
        request = _Request(plan, loop.create_future(), loop, time.monotonic())
        with self._ready:
            if self._closed:
                raise StoreError("store is closed")
            self._queue.append(request)
            start = not self._busy
            self._busy = True
            self._ready.notify()
        if start:
            # Not awaited: the committer answers each request through its future.
            self._executor.submit(self._commit_while_queued)
        value: T = await request.future
        return value

    def _commit_while_queued(self) -> None:
        """The committer (on its own thread): commit groups until the queue is empty.

        Every queued request is answered, whatever happens: a committer that stopped with
        requests queued would leave their callers waiting forever."""
        try:
            self._commit_groups()
        except BaseException as exc:
            with self._ready:
                left, self._queue, self._busy = self._queue, [], False
            _answer([(request, exc, False) for request in left])
            raise

    def _commit_groups(self) -> None:
        while True:
            with self._ready:
                if not self._queue:
                    self._busy = False
                    return
                deadline = self._queue[0].arrived + self.window
                want = max(2, len(self._writers))
                while len(self._queue) < want:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                group, self._queue = self._queue, []
            self._commit(group)

    def _commit(self, group: list[_Request]) -> None:
        outcomes: list[tuple[_Request, Any, bool]] = []
        began = time.monotonic()
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()  # may fail (the file cannot be opened): answer all
            conn.execute("BEGIN IMMEDIATE")
            locked = time.monotonic()
            for request in group:
                conn.execute("SAVEPOINT threadline_append")
                try:
                    value = self._drive(conn, request.plan())
                except Exception as exc:  # this append's own error: undo it alone
                    conn.execute("ROLLBACK TO threadline_append")
                    conn.execute("RELEASE threadline_append")
                    outcomes.append((request, exc, False))
                else:
                    conn.execute("RELEASE threadline_append")
                    outcomes.append((request, value, True))
            committing = time.monotonic()
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            _answer([(request, exc, False) for request in group])
            if not isinstance(exc, Exception):
                raise
            return
        ended = time.monotonic()
        oldest = group[0].arrived
        ready = oldest + self.window
        if oldest < self._last_commit:  # it arrived while the group ahead was committing
            ready = max(ready, self._last_commit)
        self._last_commit = ended
        with self._stats_lock:
            stats = self.stats
            stats.longest_overrun = max(stats.longest_overrun, began - ready)
            stats.commits += 1
            stats.appends += len(group)
            stats.groups += 1
            stats.group_seconds += ended - began
            stats.commit_seconds += ended - committing
            stats.longest_group = max(stats.longest_group, ended - began)
            stats.longest_lock = max(stats.longest_lock, locked - began)
            waits = [ended - r.arrived for r in group]
            stats.waited(*waits)
            interval = self.window + ended - locked
            stats.over_interval += sum(wait > interval for wait in waits)
            stats.longest_in_intervals = max(stats.longest_in_intervals, max(waits) / interval)
            if len(group) > 1:
                stats.grouped += len(group)
        _answer(outcomes)


def _answer(outcomes: list[tuple[_Request, Any, bool]]) -> None:
    """Settle each request's future with its value (ok) or error, on the request's loop.

    One callback per event loop for the whole group: each `call_soon_threadsafe` writes to
    the loop's wake-up socket, which releases the GIL, and a loop busy with other threads'
    turns then kept it for up to a switch interval (5 ms) each time, delaying the next group.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any, bool]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        # A closed loop (RuntimeError) means nobody is waiting for the answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[tuple[_Request, Any, bool]]) -> None:
    for request, value, ok in outcomes:
        answer(request.future, value, ok)
