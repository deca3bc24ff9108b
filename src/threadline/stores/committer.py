"""The group committer's thread: groups whose event loop could not have the write lock.

A group is committed on the event loop its appends came from (`group_commit.py`) unless
`BEGIN IMMEDIATE` finds the write lock taken for longer than two windows, or the store
has no inline appends (`?inline_appends=0`): then it is handed here. The committer is a
thread and a connection of its own that waits for the lock (`WriteLock`: told when one
of the store's own write transactions ends, polling for other processes), runs the group
(`GroupCommit._run_group`, the same as on the loop) and answers through one
`loop.call_soon_threadsafe` per event loop.

Every request handed here is answered, whatever happens: a committer that stopped with
requests queued would leave their callers waiting for ever.
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
from typing import Any

from ..errors import StoreError
from .dialect import Plan
from .grouping import answer
from .write_lock import WriteLock

__all__ = ["Committer", "Outcomes", "Request", "answer_all", "settle"]


@dataclass(slots=True, eq=False)  # each request is itself (`withdraw` finds it by identity)
class Request:
    """One queued append: its plan, its caller's future and loop, when it arrived."""

    plan: Callable[[], Plan[Any]]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    arrived: float


Outcomes = list[tuple[Request, Any, bool]]
"""Each request, its value (ok) or its error."""

RunGroup = Callable[[sqlite3.Connection, list[Request], float], Outcomes]
"""Run a group in the transaction a connection began at a time: each request's outcome."""


class Committer:
    """The thread that commits the groups handed to it, one after another.

    Args:
        window: seconds it may wait for more appends after the oldest queued.
        connect: opens its own connection (called once, on its thread).
        run_group: a group's appends and `COMMIT` in the transaction begun on it.
        wanted: how many appends make a group worth committing before its window ends.
        write_lock: the store's write transactions' ends, waited for while it is taken.
        busy_timeout: seconds it waits for the lock at most.
    """

    def __init__(
        self,
        window: float,
        connect: Callable[[], sqlite3.Connection],
        run_group: RunGroup,
        wanted: Callable[[], int],
        *,
        write_lock: WriteLock,
        busy_timeout: float,
    ) -> None:
        self.window = window
        self._connect = connect
        self._run_group = run_group
        self._wanted = wanted
        self._lock = write_lock
        self._busy_timeout = busy_timeout
        self.conn: sqlite3.Connection | None = None
        # A thread of its own, not the store's: reads and leases on the store's thread do
        # not wait for a group's fsync, nor a group for them.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="threadline-group-commit")
        self.queue: list[Request] = []
        self._ready = threading.Condition()
        self._busy = False
        self._started = False
        self.closed = False

    def started(self) -> bool:
        """Whether it was ever handed a group (the tests check that groups stayed on their
        loop)."""
        return self._started

    def connection(self) -> sqlite3.Connection:
        """Its connection (on its thread), opened on first use."""
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    def close(self) -> None:
        """Commit what is queued, then stop the thread (blocks); the connection stays open
        for the caller to close."""
        with self._ready:
            self.closed = True
            self._ready.notify_all()
        self._executor.shutdown(wait=True)

    def enqueue(self, requests: list[Request]) -> None:
        """Queue `requests`, starting the thread if it is idle (or fail them: the store
        closed, the thread stopped)."""
        with self._ready:
            if self.closed:
                settle([(request, StoreError("store is closed"), False) for request in requests])
                return
            self.queue.extend(requests)
            start = not self._busy
            self._busy = self._started = True
            self._ready.notify()
            if start:
                # Not awaited: the committer answers each request through its future.
                # Under `_ready`: `close` cannot shut the executor down in between.
                self._executor.submit(self._commit_while_queued)

    def withdraw(self, request: Request) -> None:
        """`request`'s caller was cancelled: not written if its group has not begun."""
        with self._ready:
            if request in self.queue:
                self.queue.remove(request)

    def _commit_while_queued(self) -> None:
        """On its thread: commit groups until the queue is empty, answering every request
        even if it fails."""
        try:
            self._commit_groups()
        except BaseException as exc:
            with self._ready:
                left, self.queue, self._busy = self.queue, [], False
            answer_all([(request, exc, False) for request in left])
            raise

    def _commit_groups(self) -> None:
        while True:
            with self._ready:
                if not self.queue:
                    self._busy = False
                    return
                deadline = self.queue[0].arrived + self.window
                want = self._wanted()
                while len(self.queue) < want:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                group, self.queue = self.queue, []
            if group:  # empty if every caller in it was cancelled meanwhile (`withdraw`)
                self._commit(group)

    def _commit(self, group: list[Request]) -> None:
        """A group on its own connection, once it has the write lock."""
        began = time.monotonic()
        try:
            conn = self.connection()  # may fail (the file cannot be opened): answer all
            self._lock.begin(conn, self._busy_timeout)
        except BaseException as exc:
            answer_all([(request, exc, False) for request in group])
            if not isinstance(exc, Exception):
                raise
            return
        answer_all(self._run_group(conn, group, began))


def answer_all(outcomes: Outcomes) -> None:
    """Settle each request's future with its value (ok) or error, on the request's loop.

    One callback per event loop for the whole group: each `call_soon_threadsafe` writes to
    the loop's wake-up socket, which releases the GIL, and a loop busy with other threads'
    turns then kept it for up to a switch interval (5 ms) each time, delaying the next group.
    """
    by_loop: dict[asyncio.AbstractEventLoop, Outcomes] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        # A closed loop (RuntimeError) means nobody is waiting for the answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, settled)


def settle(outcomes: Outcomes) -> None:
    """Settle each request's future (on its loop's thread)."""
    for request, value, ok in outcomes:
        answer(request.future, value, ok)
