"""Waiting for SQLite's write lock when this process's own connections hold it.

SQLite's busy handler (`PRAGMA busy_timeout`) sleeps between tries, 1, 2, 5, 10, 15, 20,
25 ms and on, whoever holds the lock: it cannot know when the lock is let go. When the
holder is this process (a group committed on the event loop, a `COMMIT` behind the loop,
an inline append: each about one fsync), its sleeps are the wait. On a disk whose fsync
takes 1-2 ms, a group committer whose `BEGIN IMMEDIATE` met the loop's group four times
in a row slept 33 ms for a lock that had been free for most of it, and its appends waited
five commit intervals (docs/performance.md, "A slow disk's groups, and the committer's
lock wait").

`WriteLock.begin` tries `BEGIN IMMEDIATE` on a connection whose busy timeout is zero and,
while the lock is taken, waits to be told (`released`) that one of the store's own write
transactions ended, then tries again at once. Another process's lock tells nothing: it is
tried again every `POLL` seconds, as SQLite's handler would, more often. The store calls
`released` after each of its own write transactions that ends, committed or rolled back,
in three places: `sqlite._drive` (inline appends, the store's thread, a pipelined
transaction whose statements fail), `Behind` (a `COMMIT` behind the loop, failed or not)
and `GroupCommit` (a group, on the loop, behind it or on the committer's thread); it costs
one attribute read when nobody waits.

Written here rather than taken from a library: Python's sqlite3 exposes only the busy
timeout, not `sqlite3_busy_handler`, and no handler could hear of a lock let go in-process.
"""

from __future__ import annotations

import sqlite3
import threading
import time

__all__ = ["POLL", "WriteLock", "is_busy"]

POLL = 0.001
"""Seconds between tries while the lock stays taken and nobody here lets it go (another
process holds it)."""


class WriteLock:
    """The store's own write transactions' ends, told to whoever waits for the lock."""

    def __init__(self) -> None:
        self._ended = threading.Condition()
        self._waiting = 0  # read without the condition's lock by `released`

    def released(self) -> None:
        """One of the store's write transactions ended (committed or rolled back): wake the
        waiters. Called after the `COMMIT` or `ROLLBACK` returned, on any thread."""
        if self._waiting:
            with self._ended:
                self._ended.notify_all()

    def begin(self, conn: sqlite3.Connection, timeout: float) -> float:
        """`BEGIN IMMEDIATE` on `conn` (busy timeout zero), waiting for the lock up to
        `timeout` seconds (then SQLite's busy error is raised); the seconds it waited.

        The waiter is counted before its first try, under the condition's lock, which
        `released` takes to notify: a transaction that ends after a try failed tells this
        waiter (it is in `wait`, or the notify waits until it is), and one that ended
        before the try let that try succeed."""
        started = time.monotonic()
        with self._ended:
            self._waiting += 1
            try:
                while True:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        if not is_busy(exc):
                            raise
                        left = started + timeout - time.monotonic()
                        if left <= 0:
                            raise
                        self._ended.wait(min(POLL, left))
                    else:
                        return time.monotonic() - started
            finally:
                self._waiting -= 1


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
