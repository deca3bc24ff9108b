"""The embedded default store: SQLite in WAL mode, one file, no server.

The queries are `SQLStore`'s; this module holds the connections. All database work runs on
one dedicated thread per store (sqlite3 connections are bound to their thread), so the
event loop never blocks on a commit, except appends, which run inline while the write lock
is free (see `SQLiteStore.run`) or, while several threads append at once, in a group
commit on the committer's own thread and connection (`group_commit.py`). A pipelined
append (`run_behind`) runs its statements inline and its `COMMIT` on a thread of its own,
returning before the fsync. Several processes
may share the file: writers take the lock up front (`BEGIN IMMEDIATE`) and the seq check
happens inside that transaction, so a conflicting append fails instead of interleaving.
Times are stored as ISO-8601 UTC text, which compares in time order.

Durability: `synchronous=FULL` by default, so a committed event survives power loss, not
only a process crash. `?synchronous=normal` in the URL trades that for speed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, StoreError
from ..events import Status, ThreadState, utcnow
from .dialect import SQLITE, DuplicateKey, Plan, Query, Result, Tx
from .group_commit import CommitStats, GroupCommit
from .grouping import answer
from .migrations import SQLITE_MIGRATIONS
from .sql import SQLStore

__all__ = ["SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(SQLStore):
    """Threads in one SQLite file.

    Args:
        path: database file (created with its folder if missing), or ":memory:".
        synchronous: `full` (default, durable across power loss) or `normal`.
        busy_timeout: seconds to wait for another process's write lock.
        inline_appends: run a lone thread's appends on the event loop while the write
            lock is free.
        pipelined: let a lone thread's read-only turn return before its `COMMIT` when a
            model call follows (`run_behind`; needs inline appends).
        group_window: seconds an append may wait for other threads' appends to share its
            commit (`group_commit.py`); 0 commits each append alone.

    `stats` counts the write transactions committed (`CommitStats`; `behind`: the
    pipelined ones, see `run_behind`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 10.0,
        inline_appends: bool = True,
        pipelined: bool = True,
        group_window: float = 0.005,
    ) -> None:
        if synchronous.lower() not in ("full", "normal", "extra", "off"):
            raise ConfigError(
                f"sqlite synchronous must be full, normal, extra or off, not {synchronous!r}"
            )
        super().__init__(SQLITE)
        self.path = str(path)
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._inline = inline_appends and self.path != ":memory:"
        self._pipelined = pipelined and self._inline
        self._inline_conn: sqlite3.Connection | None = None
        self._flusher: ThreadPoolExecutor | None = None  # COMMITs behind the loop (run_behind)
        self._flushing: Future[None] | None = None  # the one in flight, or done
        if group_window < 0:
            raise ConfigError(f"sqlite group_window must be >= 0 seconds, not {group_window}")
        self.stats = CommitStats()
        self._stats_lock = threading.Lock()
        self._group: GroupCommit | None = None
        if group_window > 0 and self.path != ":memory:":
            self._group = GroupCommit(
                group_window,
                lambda: self._connect(migrate=False),
                _steps,
                self.stats,
                self._stats_lock,
            )

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite://:memory:`."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path = parts.netloc + parts.path if parts.netloc == ":memory:" else parts.path[1:]
        if not path:
            raise ConfigError(f"sqlite URL {url!r} names no file; e.g. sqlite:///threads.db")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        inline, pipelined = (
            query.get(key, "1").lower() not in ("0", "false", "no", "off")
            for key in ("inline_appends", "pipelined")
        )
        try:
            window = float(query.get("group_window_ms", "5")) / 1000
        except ValueError:
            raise ConfigError(f"group_window_ms in {url!r} must be a number") from None
        return cls(
            path,
            synchronous=query.get("synchronous", "full"),
            inline_appends=inline,
            pipelined=pipelined,
            group_window=window,
        )

    async def run(self, plan: Callable[[], Plan[T]], tx: Tx, *, append_to: str | None = None) -> T:
        """Run `plan` on the store's thread; an append inline or in a group commit.

        Handing each append to the store's thread and back cost more than the rest of the
        append besides the commit itself (bench/overhead.py), so an append from a lone
        thread runs on a second connection, on the event loop's thread, whose busy timeout
        is zero: if another writer holds the lock, `BEGIN IMMEDIATE` fails at once and the
        append goes to the store's thread, which waits for the lock there. The loop
        therefore never waits for another writer; it does wait for the commit's own fsync.
        When other threads of this process are appending too, the append joins a group
        commit instead (`group_commit.py`): one transaction and one fsync for the group,
        committed on the committer's thread while the loop goes on. `?inline_appends=0` in the
        URL sends every lone append to the store's thread; `?group_window_ms=0` turns
        grouping off.
        """
        if self._closed:
            raise StoreError("store is closed")
        if append_to is not None and self._conn is not None:
            group = self._group
            if group is not None and group.crowded(append_to):
                return await group.submit(plan)
            if self._inline and not self._committing():
                try:
                    value = _drive(self._inline_connection(), plan(), tx)
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
                else:
                    self._count(appends=1)
                    return value
            if group is not None:
                return await group.submit(plan)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, plan, tx, append_to)

    async def run_behind(
        self, plan: Callable[[], Plan[T]], tx: Tx, *, append_to: str
    ) -> tuple[T, Awaitable[None] | None]:
        """`run`, except that an inline append returns once its statements ran, its `COMMIT`
        (the fsync) going on on a thread of its own (pipelining, see docs/core.md).

        The statements run on the event loop as an inline append's do, inside `BEGIN
        IMMEDIATE`: the expected seq and the lease are checked there, so a conflict or a
        lost lease is raised here, and once they ran no other writer can come between them
        and the `COMMIT`. The loop waits until the `COMMIT` has begun (a thread woken while
        the loop runs Python would wait for the GIL up to a switch interval, 5 ms, and
        begin only when the loop next blocks); the fsync then goes on without the GIL. The
        awaitable returned completes when the `COMMIT` returned, or raises its error (the
        transaction rolled back: nothing of the append stays). Until then the inline
        connection is taken: other appends go to the group commit or the store's thread
        and wait for the write lock there. Grouped appends (other threads appending) and
        appends that find the lock taken run as `run` runs them: durable on return.
        """
        group = self._group
        if (
            self._closed
            or self._conn is None
            or not self._pipelined
            or self._committing()
            or (group is not None and group.crowded(append_to))
        ):
            return await self.run(plan, tx, append_to=append_to), None
        conn = self._inline_connection()
        try:
            value = _drive(conn, plan(), tx, commit=False)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            return await self.run(plan, tx, append_to=append_to), None
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(1, thread_name_prefix="threadline-sqlite-commit")
        began = threading.Event()
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        try:
            job = self._flusher.submit(self._flush, conn, began)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # The job is never cancelled (a caller that stops waiting cancels only `durable`):
        # the connection stays taken until its COMMIT or ROLLBACK has returned.
        job.add_done_callback(partial(_report, loop, durable))
        began.wait(_BEGIN_WAIT)
        self._flushing = job
        return value, durable

    def _flush(self, conn: sqlite3.Connection, began: threading.Event) -> None:
        """Commit the inline connection's open transaction (on the flusher's thread); `began`
        is set once the `COMMIT` statement runs (SQLite's trace hook), or if it fails."""
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
        took = time.perf_counter() - started
        with self._stats_lock:
            self.stats.commits += 1
            self.stats.appends += 1
            self.stats.behind += 1
            self.stats.behind_seconds += took

    def _committing(self) -> bool:
        """Whether the inline connection's `COMMIT` behind the loop is still running."""
        return self._flushing is not None and not self._flushing.done()

    def _inline_connection(self) -> sqlite3.Connection:
        """The connection of inline appends (opened on first use), busy timeout zero."""
        if self._inline_conn is None:
            self._inline_conn = self._connect(busy_ms=0, migrate=False)
        return self._inline_conn

    def _call(self, plan: Callable[[], Plan[T]], tx: Tx, append_to: str | None = None) -> T:
        value = _drive(self._store_conn(), plan(), tx)
        if tx is not Tx.READ:
            self._count(appends=int(append_to is not None))
        return value

    def _appended(self, thread_id: str, state: ThreadState) -> None:
        super()._appended(thread_id, state)
        if self._group is not None:
            self._group.finished(thread_id, state.status is Status.RUNNING)

    def _store_conn(self) -> sqlite3.Connection:
        """The store thread's connection (opened, and the schema migrated, on first use)."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _count(self, *, appends: int) -> None:
        with self._stats_lock:
            self.stats.commits += 1
            self.stats.appends += appends

    def _connect(self, *, busy_ms: int | None = None, migrate: bool = True) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms if busy_ms is None else busy_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if migrate:
            _migrate(conn)
        return conn

    async def migrations(self) -> builtins.list[tuple[int, str, datetime]]:
        """The applied migrations: (number, name, applied_at), oldest first.

        Opening the store applies pending ones, so this lists every migration it knows.
        """

        def plan() -> Plan[builtins.list[tuple[int, str, datetime]]]:
            found = yield Query(_APPLIED)
            return [(int(n), str(name), datetime.fromisoformat(at)) for n, name, at in found.rows]

        return await self.run(plan, Tx.READ)

    async def close(self) -> None:
        if self._closed:
            return

        def go(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._flusher is not None:  # a COMMIT behind the loop ends first
            self._flusher.shutdown(wait=True)
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        loop = asyncio.get_running_loop()
        if self._group is not None:
            await loop.run_in_executor(self._executor, self._group.close)
        if self._conn is not None:
            await loop.run_in_executor(self._executor, go, self._conn)
            self._conn = None
        self._closed = True
        self._executor.shutdown(wait=True)


def _report(
    loop: asyncio.AbstractEventLoop, durable: asyncio.Future[None], job: Future[None]
) -> None:
    """On the flusher's thread: settle `durable` with the job's outcome, on its loop."""
    error = job.exception()
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(answer, durable, error, error is None)


def _drive(conn: sqlite3.Connection, plan: Plan[T], tx: Tx, *, commit: bool = True) -> T:
    """Run `plan` on `conn`; writes in one `BEGIN IMMEDIATE` transaction, rolled back on error
    (left open, the statements done, without `commit`)."""
    writes = tx is not Tx.READ
    if writes:
        conn.execute("BEGIN IMMEDIATE")
    try:
        value = _steps(conn, plan)
        if writes and commit:
            conn.execute("COMMIT")
        return value
    except BaseException:
        if writes and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _steps(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run `plan`'s statements on `conn` (inside whatever transaction is open) to its value."""
    try:
        # Stepped by hand rather than through `advance`: this loop is an inline append's
        # whole overhead over its SQL, so it sends results straight in.
        sql, params, many = next(plan)
        while True:
            try:
                cur = conn.executemany(sql, params) if many else conn.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                if not _is_duplicate(exc):
                    raise
                sql, params, many = plan.throw(DuplicateKey(str(exc)))
                continue
            rows = cur.fetchall() if cur.description is not None else []
            sql, params, many = plan.send(Result(rows, cur.rowcount))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        plan.close()


def _migrate(conn: sqlite3.Connection) -> builtins.list[int]:
    """Apply every migration newer than the database, each in its own transaction.

    Returns the numbers applied. Concurrent processes are safe: the version is re-read
    inside the write transaction, so a migration is applied once.
    """
    applied = []
    conn.execute(
        "CREATE TABLE IF NOT EXISTS threadline_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for number, name, sql in SQLITE_MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            have = conn.execute("SELECT MAX(version) FROM threadline_migrations").fetchone()[0]
            if (have or 0) >= number:
                conn.execute("COMMIT")
                continue
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO threadline_migrations (version, name, applied_at) VALUES (?,?,?)",
                (number, name, utcnow().isoformat()),
            )
            conn.execute("COMMIT")
            applied.append(number)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


_BEGIN_WAIT = 1.0
"""Seconds the loop waits at most for a `COMMIT` behind it to begin (its thread may not get
a CPU at once on a loaded machine); past that it goes on, and the commit with it, later."""

_APPLIED = "SELECT version, name, applied_at FROM threadline_migrations ORDER BY version"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _is_duplicate(exc: sqlite3.IntegrityError) -> bool:
    """A PRIMARY KEY or UNIQUE constraint refused the row (not NOT NULL, CHECK, ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "UNIQUE" in str(exc)
    return int(code) in (sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE)
