"""Group commit: appends from concurrent threads of one process share one transaction.

At `synchronous=FULL` a SQLite commit costs an fsync, and an fsync costs far more than the
statements of an append. When several threads of one process append at about the same
time (a worker or a server advancing many threads), their appends are queued and one
committer, on the store's own thread, runs them in one `BEGIN IMMEDIATE ... COMMIT`:

* each append runs inside its own `SAVEPOINT`, so one that fails (a conflict, a lost lease,
  an unknown thread) is rolled back alone and its caller gets its own error, while the
  others commit;
* every caller is answered only after the `COMMIT` returned: an append is acknowledged only
  once it is durable (tests/stores/test_group_commit_kill.py kills the process inside group
  commits and finds every acknowledged event);
* if the transaction itself fails (a disk error at `COMMIT`), every caller of the group gets
  the error and nothing of the group was written.

The committer waits at most `window` seconds after the oldest queued append before it
commits (less when every thread that appended recently is already queued), so no append
waits longer than one window plus one commit. A lone thread, threads run one after another,
or threads that append rarely never wait: an append goes to the group only when another
thread that is still running appended within the last window (`crowded`); otherwise the
store runs it at once, inline.

Written here rather than taken from a library: sqlite3 has no group commit, and it needs
the store's plans (`dialect.Plan`) run on the store's own connection and thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .dialect import Plan

__all__ = ["CommitStats", "GroupCommit"]

T = TypeVar("T")

_Drive = Callable[[sqlite3.Connection, Plan[Any]], Any]


@dataclass(slots=True)
class CommitStats:
    """What a store committed: `commits` write transactions (each one fsync of the WAL at
    `synchronous=FULL`; a checkpoint adds its own now and then), holding `appends` appends.
    `groups` of the transactions were run by the group committer, and `grouped` appends
    shared their transaction with another thread's append."""

    commits: int = 0
    appends: int = 0
    grouped: int = 0
    groups: int = 0
    longest_wait: float = 0.0
    """Seconds from a grouped append's arrival to its group's COMMIT returning, at most."""
    group_seconds: float = 0.0
    """Seconds spent inside group transactions (BEGIN to COMMIT), in all."""
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    """The waits (arrival to COMMIT) of the latest grouped appends, in seconds."""


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
        connection: the store's connection (called on the store's thread).
        executor: the store's single thread.
        drive: runs one plan's statements on a connection inside an open transaction.
        stats: the store's counters, updated under `lock`.
        lock: guards `stats` (the inline path counts its commits too).
    """

    def __init__(
        self,
        window: float,
        connection: Callable[[], sqlite3.Connection],
        executor: Executor,
        drive: _Drive,
        stats: CommitStats,
        lock: threading.Lock,
    ) -> None:
        self.window = window
        self._connection = connection
        self._executor = executor
        self._drive = drive
        self.stats = stats
        self._stats_lock = lock
        self._queue: list[_Request] = []
        self._ready = threading.Condition()
        self._busy = False
        self._writers: dict[str, float] = {}

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
            self._queue.append(request)
            start = not self._busy
            self._busy = True
            self._ready.notify()
        if start:
            # Not awaited: the committer answers each request through its future.
            loop.run_in_executor(self._executor, self._commit_while_queued)
        value: T = await request.future
        return value

    def _commit_while_queued(self) -> None:
        """The committer (on the store's thread): commit groups until the queue is empty.

        Every queued request is answered, whatever happens: a committer that stopped with
        requests queued would leave their callers waiting forever."""
        try:
            self._commit_groups()
        except BaseException as exc:
            with self._ready:
                left, self._queue, self._busy = self._queue, [], False
            for request in left:
                _answer(request, exc, False)
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
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in group:
                _answer(request, exc, False)
            if not isinstance(exc, Exception):
                raise
            return
        ended = time.monotonic()
        with self._stats_lock:
            stats = self.stats
            stats.commits += 1
            stats.appends += len(group)
            stats.groups += 1
            stats.group_seconds += ended - began
            stats.longest_wait = max(stats.longest_wait, ended - group[0].arrived)
            stats.waits.extend(ended - r.arrived for r in group)
            if len(group) > 1:
                stats.grouped += len(group)
        for request, value, ok in outcomes:
            _answer(request, value, ok)


def _answer(request: _Request, value: Any, ok: bool) -> None:
    def settle() -> None:
        if request.future.done():  # the caller was cancelled meanwhile
            return
        if ok:
            request.future.set_result(value)
        else:
            request.future.set_exception(value)

    # A closed loop (RuntimeError) means nobody is waiting for the answer any more.
    with contextlib.suppress(RuntimeError):
        request.loop.call_soon_threadsafe(settle)
