"""Group commit: appends from concurrent threads of one process share one transaction.

At `synchronous=FULL` a SQLite commit costs an fsync, and an fsync costs far more than the
statements of an append. When several threads of one process append at about the same
time (a worker or a server advancing many threads), their appends are queued and run in one
`BEGIN IMMEDIATE ... COMMIT`:

* each append runs inside its own `SAVEPOINT`, so one that fails (a conflict, a lost lease,
  an unknown thread) is rolled back alone and its caller gets its own error, while the
  others commit;
* every caller is answered only after the `COMMIT` returned: an append is acknowledged only
  once it is durable (tests/stores/test_group_commit.py kills the process inside group
  commits and finds every acknowledged event);
* if the transaction itself fails (a disk error at `COMMIT`), every caller of the group gets
  the error and nothing of the group was written; so does every caller when the group
  cannot begin (its connection cannot be opened, whatever the error);
* an append whose caller is cancelled before its group began is withdrawn, never written
  (`_withdraw`): a loop that ends with appends queued on it keeps no group behind.

**Where a group is committed.** On the event loop its appends came from, on a connection of
its own whose busy timeout is zero (`submit`, `_flush`), by whatever runs there first once
the group is due: an append joining it, a store call, a turn beginning (the runtime calls
`Store.due`), the loop going round once with nobody joining (`_idle`: threads appending one
after another do not wait for the window), or the loop's timer. A group is due when every
thread that appended recently is in it, or when its oldest append's window ends before the
loop is likely to look again. The loop holds the GIL anyway: a committer thread had to win
it back from a loop running 64 threads' Python after every statement, up to a switch
interval (5 ms) each time, which made a group's transaction ten times its statements and an
append wait three to six commit intervals (docs/performance.md, "Group commit on the event
loop"). The loop waits for the group's fsync, as for a lone thread's inline append, unless
a `COMMIT` takes more than half the window (smoothed over the latest groups: a slow disk,
whose fsync would stall every thread on the loop a third of its time or more): then the
statements run on the loop and the `COMMIT` on a thread of its own (`_commit_behind`). The
loop never waits for another writer's lock: if `BEGIN IMMEDIATE` finds it taken (this
store's `COMMIT` behind the loop; another process), the loop tries again at its next look
while the group is younger than two windows, then hands the group to the **committer**
(`committer.py`), a thread and a connection of its own that waits for the lock
(`write_lock.py`) and answers through one `loop.call_soon_threadsafe` per event loop; so it
does every group when the store has no inline appends (`?inline_appends=0`). Several event
loops (each on its thread) each commit their own groups, one at a time on the connection: a
loop that finds another's group running there treats the lock as taken.

So an append waits at most for its group's window and its transaction (plus a lock held by
another writer); `CommitStats.longest_overrun` measures by how much a group began later than
its window, or than the group ahead's `COMMIT`. A lone thread, or threads that append rarely,
never wait: an append goes to a group only when another thread that is still running
appended within the last window (`crowded`); otherwise the store runs it at once, inline.

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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import StoreError
from .behind import Flusher
from .committer import Committer, Outcomes, Request, answer_all, settle
from .dialect import Plan
from .grouping import CommitStats
from .looks import COLLECTIONS, Looks
from .write_lock import WriteLock, is_busy

__all__ = ["GroupCommit"]

T = TypeVar("T")

_Drive = Callable[[sqlite3.Connection, Plan[Any]], Any]


@dataclass(slots=True)
class _Here:
    """The appends queued on one event loop for a group committed on it (`GroupCommit`)."""

    requests: list[Request] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    checking: bool = False  # an idle check is scheduled (`GroupCommit._idle`)


class GroupCommit:
    """The queue of appends waiting to be committed together, and their committer.

    Args:
        window: seconds the committer may wait for more appends after the oldest queued.
        connect: opens the committer's own connection (called once, on its thread).
        drive: runs one plan's statements on a connection inside an open transaction.
        stats: the store's counters, updated under `lock`.
        lock: guards `stats` (the inline path counts its commits too).
        connect_here: opens the connection groups are committed on on the event loop (busy
            timeout zero: the loop never waits for the lock); without it every group is
            committed on the committer's thread.
        write_lock: the store's write transactions' ends, which the committer waits for
            while the lock is taken (`write_lock.py`); each group here tells of its own.
        busy_timeout: seconds the committer waits for the lock at most.
    """

    def __init__(
        self,
        window: float,
        connect: Callable[[], sqlite3.Connection],
        drive: _Drive,
        stats: CommitStats,
        lock: threading.Lock,
        connect_here: Callable[[], sqlite3.Connection] | None = None,
        *,
        write_lock: WriteLock,
        busy_timeout: float,
    ) -> None:
        self.window = window
        self._lock = write_lock
        self._busy_timeout = busy_timeout
        self._connect_here = connect_here
        self._conn_here: sqlite3.Connection | None = None
        self._flushing = threading.Lock()  # a group on `_conn_here` (`_flush`)
        self._here: dict[asyncio.AbstractEventLoop, _Here] = {}
        self._drive = drive
        self.stats = stats
        self._stats_lock = lock
        self._committer = Committer(
            window,
            connect,
            self._run_group,
            lambda: max(2, len(self._writers)),
            write_lock=write_lock,
            busy_timeout=busy_timeout,
        )
        self._writers: dict[str, float] = {}
        self._last_commit = 0.0  # when the latest group's COMMIT returned (monotonic)
        self._looks = Looks(window)  # when the loop is likely to look at a group again
        self._fsync = 0.0  # the seconds a group's COMMIT takes, smoothed
        self._flusher: Flusher | None = None  # a slow disk's COMMITs (`_commit_behind`)
        self._behind = False  # one of them in flight

    def close(self) -> None:
        """Commit what is queued, stop the committer and close its connection (blocks).
        Appends queued on an event loop are committed first, on it (`drain_here`); a group
        running on another loop's thread ends before the loop's connection is closed."""
        self._committer.close()  # closed: every later group is refused (`closed`)
        if self._flusher is not None:
            self._flusher.close()  # a COMMIT behind the loop returns first
        # A group running on another loop's thread ends first (closed under it, it would
        # never be answered); any group after this finds the store closed (`_begin_here`).
        with self._flushing:
            for conn in (self._committer.conn, self._conn_here):
                if conn is not None:
                    conn.close()
            self._committer.conn = self._conn_here = None

    def crowded(self, writer: str) -> bool:
        """Whether another thread is appending too (one that appended within the window
        and is still running, or an append queued): then this append joins a group."""
        now = time.monotonic()
        horizon = now - self.window
        writers = self._writers
        writers.pop(writer, None)
        while writers:  # oldest first (insertion order): forget writers gone quiet
            oldest = next(iter(writers))
            if writers[oldest] >= horizon:
                break
            del writers[oldest]
        crowded = bool(writers) or bool(self._committer.queue) or bool(self._here)
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
        """Queue `plan` for the next group; its value once the group's COMMIT returned.

        With an inline connection the group is committed on the event loop itself, by
        whatever runs there first once it is due (`_due`): an append joining it (this
        call), a turn beginning (`due`, which the runtime calls), the loop going round once
        with nobody else joining (`_idle`), or the loop's timer. The loop holds the GIL
        anyway, whereas a committer thread has to win it back from a loop running other
        threads' Python after every statement it steps, up to a switch interval (5 ms)
        each time: with 64 threads that made a group's transaction about ten times its
        statements (docs/performance.md, "What the group committer waits for"). The
        committer's thread still takes a group whose write lock stays taken (`_flush`)."""
        loop = asyncio.get_running_loop()
        if self._committer.closed:
            raise StoreError("store is closed")
        request = Request(plan, loop.create_future(), loop, time.monotonic())
        if self._connect_here is None:
            self._committer.enqueue([request])
        else:
            here = self._here.get(loop)
            if here is None:
                here = self._here[loop] = _Here()
            here.requests.append(request)
            if self._due(here, request.arrived):
                self._flush(loop)
            else:
                if here.timer is None:  # the loop idle otherwise: ends within the window
                    wake = self.window - self._looks.margin()
                    here.timer = loop.call_later(wake, self._flush, loop)
                if not here.checking:
                    here.checking = True
                    loop.call_soon(self._idle, loop, len(here.requests))
        try:
            value: T = await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise
        return value

    def _withdraw(self, request: Request) -> None:
        """Its caller was cancelled: if its group has not begun, the append is not written
        (as one cancelled while it waits at the pipeline depth, `behind.py`), and a loop
        left with nothing queued keeps no group. A loop that ends (`asyncio.run` cancels
        what is left) would otherwise keep one for ever: nothing flushes it, and every later
        append of the store is taken for crowded (grouped, never inline nor pipelined)."""
        here = self._here.get(request.loop)
        if here is not None and request in here.requests:
            here.requests.remove(request)
            if not here.requests:
                self._forget_here(request.loop)
            return
        self._committer.withdraw(request)

    def _due(self, here: _Here, now: float) -> bool:
        """Whether a loop's queued group should be committed now: every thread that
        appended recently is in it, or its oldest append's window ends before the loop is
        likely to look again (`Looks`: the loop looks between steps, at an append, a store
        call, a turn's beginning). So a group is committed at the last look within its
        window rather than the first one after it, which on a loop busy with many threads'
        steps came a step late (a garbage collection, a long render)."""
        requests = here.requests
        # A group's first look is not counted: the time since the last group's last look
        # was that group's COMMIT, or idle.
        margin = self._looks.look(now, first=now == requests[0].arrived)
        if len(requests) >= max(2, len(self._writers)):
            return True
        return now + margin >= requests[0].arrived + self.window

    def due(self) -> None:
        """On an event loop, between steps: commit its queued group now if it is due. On a
        loop busy with many threads' turns, a timer runs only once the loop has gone round
        all of them, which takes longer than the window."""
        here = self._here.get(asyncio.get_running_loop())
        if here is not None and here.requests and self._due(here, time.monotonic()):
            self._flush(asyncio.get_running_loop())

    def _idle(self, loop: asyncio.AbstractEventLoop, seen: int) -> None:
        """The loop went round once since `seen` appends were queued on it: if none joined
        meanwhile, none is on its way (each thread's next append follows its own step), so
        the group is committed now rather than at the end of its window."""
        here = self._here.get(loop)
        if here is None:
            return
        if len(here.requests) == seen:
            here.checking = False
            self._flush(loop)
        else:
            loop.call_soon(self._idle, loop, len(here.requests))

    def drain_here(self, loop: asyncio.AbstractEventLoop) -> None:
        """The store closes: what is queued on `loop` is committed now, on it, or handed to
        the committer's thread (whose `close` commits it) if the write lock is taken."""
        self._flush(loop, patient=False)

    def _flush(self, loop: asyncio.AbstractEventLoop, *, patient: bool = True) -> None:
        """Commit the group queued on `loop` (on its thread) if the write lock can be had at
        once. If not (the store's own `COMMIT` behind the loop, about one commit; the
        committer's thread; another process), try again at the next chance while the group
        is younger than two windows, then leave it to the committer's thread, which waits
        for the lock (`WriteLock`)."""
        here = self._here.get(loop)
        if here is None or not here.requests:
            return
        group = here.requests
        if self._committer.closed:  # another loop's group, after the store closed: never written
            self._forget_here(loop)
            settle([(request, StoreError("store is closed"), False) for request in group])
            return
        began = time.monotonic()
        conn: sqlite3.Connection | None = None
        # One group at a time on the connection: another event loop's, on its own thread,
        # may be running (the loop never waits for it: the lock is as good as taken).
        if self._flushing.acquire(blocking=False):
            try:
                conn = self._begin_here()
            except BaseException as exc:  # the file itself fails (or its folder): the group too
                self._flushing.release()
                self._forget_here(loop)
                settle([(request, exc, False) for request in group])
                if not isinstance(exc, Exception):
                    raise
                return
            if conn is None:
                self._flushing.release()
        if conn is None:
            # Our own COMMIT behind the loop lands here: wait for it, not for the committer.
            if patient and (self._behind or began - group[0].arrived < 2 * self.window):
                if here.timer is not None:
                    here.timer.cancel()
                here.timer = loop.call_later(self.window / 10, self._flush, loop)
                return
            self._forget_here(loop)
            self._committer.enqueue(group)
            return
        self._forget_here(loop)
        if self._fsync > self.window / 2:
            self._commit_behind(loop, conn, group, began)
            return
        try:
            settle(self._run_group(conn, group, began))
        finally:
            self._flushing.release()
        COLLECTIONS.collect_now()  # none queued here: no append waits for it

    def _commit_behind(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: sqlite3.Connection,
        group: list[Request],
        began: float,
    ) -> None:
        """A slow disk's group: its statements on the loop, its `COMMIT` on a thread, so
        that the loop goes on with the other threads' turns during the fsync. That thread
        needs the GIL once, after the fsync; the committer needed it after every statement
        (up to 5 ms each: a group took 30-45 ms, not 2-4; docs/performance.md, "A slow
        disk's groups, and the committer's lock wait"). The connection stays taken
        (`_flushing`) until the `COMMIT` returned; the loop is told then (`_landed`)."""
        locked = time.monotonic()
        try:
            outcomes = self._statements(conn, group)
        except BaseException as exc:
            try:
                settle(self._failed(conn, group, exc))
            finally:
                self._flushing.release()
            return
        committing = time.monotonic()

        def commit() -> None:
            try:
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:  # the COMMIT failed
                    conn.execute("ROLLBACK")

        def then(error: BaseException | None) -> None:  # on the flusher's thread
            ended = time.monotonic()
            done = outcomes if error is None else [(r, error, False) for r in group]
            try:
                self._lock.released()
                if error is None:
                    self._record(conn, group, began, locked, committing, ended, measured=False)
            finally:  # whatever happens, the connection is let go and the group answered
                self._behind = False
                self._flushing.release()
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(self._landed, loop, done)

        if self._flusher is None:
            self._flusher = Flusher("threadline-group-commit-behind")
        self._behind = True
        self._flusher.hand(commit, then)

    def _landed(self, loop: asyncio.AbstractEventLoop, outcomes: Outcomes) -> None:
        """A `COMMIT` behind the loop returned: answer its group; the next goes if due."""
        settle(outcomes)
        here = self._here.get(loop)
        if here is None or not here.requests:
            COLLECTIONS.collect_now()  # none queued: no append waits for it
        elif self._due(here, time.monotonic()):
            self._flush(loop)

    def _begin_here(self) -> sqlite3.Connection | None:
        """`BEGIN IMMEDIATE` on the loop's connection: it, or None if the lock is taken."""
        if (
            self._committer.closed
        ):  # closed since this loop looked (`close`): the connection is gone
            raise StoreError("store is closed")
        try:
            conn = self._here_connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise
        return conn

    def _here_connection(self) -> sqlite3.Connection:
        """The connection of groups committed on the event loop, opened on first use."""
        if self._conn_here is None:
            assert self._connect_here is not None
            self._conn_here = self._connect_here()
        return self._conn_here

    def _forget_here(self, loop: asyncio.AbstractEventLoop) -> None:
        """`loop`'s group is gone (committed, handed over or withdrawn): the next starts."""
        self._looks.next_group()
        here = self._here.pop(loop)
        if here.timer is not None:
            here.timer.cancel()

    def _run_group(self, conn: sqlite3.Connection, group: list[Request], began: float) -> Outcomes:
        """The group's appends in the transaction `conn` began at `began`, each in its own
        savepoint, then its `COMMIT`: each request's outcome (all failed if the transaction
        did; a `BaseException` is raised once every request has its outcome)."""
        locked = time.monotonic()
        try:
            outcomes = self._statements(conn, group)
            committing = time.monotonic()
            conn.execute("COMMIT")
        except BaseException as exc:
            return self._failed(conn, group, exc)
        ended = time.monotonic()
        self._lock.released()
        self._record(conn, group, began, locked, committing, ended)
        return outcomes

    def _statements(self, conn: sqlite3.Connection, group: list[Request]) -> Outcomes:
        """The group's appends in the open transaction, each in a savepoint of its own."""
        outcomes: Outcomes = []
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
        return outcomes

    def _failed(
        self, conn: sqlite3.Connection, group: list[Request], exc: BaseException
    ) -> Outcomes:
        """The group's transaction failed with `exc`: rolled back (the lock let go), every
        request failed with it; a `BaseException` is raised once every request has it."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        self._lock.released()
        failed = [(request, exc, False) for request in group]
        if isinstance(exc, Exception):
            return failed
        answer_all(failed)
        raise exc

    def _record(
        self,
        conn: sqlite3.Connection,
        group: list[Request],
        began: float,
        locked: float,
        committing: float,
        ended: float,
        *,
        measured: bool = True,
    ) -> None:
        """Count a group committed on `conn`: BEGIN at `began`, the lock held at `locked`,
        its COMMIT from `committing` to `ended` (not `measured`: on another thread)."""
        oldest = group[0].arrived
        ready = oldest + self.window
        if oldest < self._last_commit:  # it arrived while the group ahead was committing
            ready = max(ready, self._last_commit)
        self._last_commit = ended
        if measured and conn is self._conn_here:
            self._fsync += (ended - committing - self._fsync) / 8
        else:
            # On another thread a COMMIT's time includes winning the GIL back from a busy
            # loop (up to 5 ms), not only the disk's: it decays instead, so that the loop
            # commits on itself again after a few groups and measures the disk itself.
            self._fsync *= 7 / 8
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
