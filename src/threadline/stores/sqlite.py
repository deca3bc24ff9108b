"""The embedded default store: SQLite in WAL mode, one file, no server.

The queries are `SQLStore`'s; this module holds the connections. All database work runs on
one dedicated thread per store (sqlite3 connections are bound to their thread), so the
event loop never blocks on a commit, except appends, which run inline while the write lock
is free (see `SQLiteStore.run`) or, while several threads append at once, in a group
commit on the committer's own thread and connection (`group_commit.py`). A pipelined
append (`run_behind`) runs its statements inline and its `COMMIT` on a thread of its own,
returning before the fsync; the thread's next appends queue behind that `COMMIT` and share
the next one (`behind.py`). Several processes
may share the file: writers take the lock up front (`BEGIN IMMEDIATE`) and the seq check
happens inside that transaction, so a conflicting append fails instead of interleaving.
Times are stored as ISO-8601 UTC text, which compares in time order.

Durability: `synchronous=FULL` by default, so a committed event survives power loss, not
only a process crash. `?synchronous=normal` in the URL trades that for speed.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, Unpack
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, StoreError
from ..events import Status, ThreadState, utcnow
from .behind import Behind
from .dialect import SQLITE, DuplicateKey, Plan, Query, Result, Tx
from .group_commit import GroupCommit
from .grouping import CommitStats
from .known import KnownAppend, merged
from .migrations import SQLITE_MIGRATIONS
from .rows import Projected
from .sql import BehindOptions, SQLStore, Write
from .write_lock import WriteLock, is_busy

__all__ = ["SQLiteStore"]

T = TypeVar("T")

PIPELINE_DEPTH = 6
"""A lone thread's appends on their way to disk at once, by default (`pipeline_depth`); a
crash loses at most that many read-only turns, none acknowledged. 6 since a `COMMIT` then
carries about three turns instead of two: 0.90 of depth 3's turn (docs/performance.md,
"Pipeline depth 6 by default"; 3 was faster than 2, "Pipeline depth 3 by default")."""


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
        pipeline_depth: how many of a lone thread's appends may be on their way to disk at
            once (returned, not yet durable): its appends that arrive while its `COMMIT` is
            in flight queue and share the next one (`behind.py`). 1: each waits for the one
            before to be durable first. A crash loses at most these (none acknowledged),
            and their model calls are made again on resume (docs/core.md, "Pipelining").
        group_window: seconds an append may wait for other threads' appends to share its
            commit (`group_commit.py`); 0 commits each append alone.

    `stats` counts the write transactions committed (`CommitStats`; `behind`: the
    pipelined appends, see `run_behind`; `queued`: of them, those that shared a `COMMIT`).
    """

    queues_behind = True

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 10.0,
        inline_appends: bool = True,
        pipelined: bool = True,
        pipeline_depth: int = PIPELINE_DEPTH,
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
        self._inline_loop: asyncio.AbstractEventLoop | None = None  # `_owns_inline`
        if group_window < 0:
            raise ConfigError(f"sqlite group_window must be >= 0 seconds, not {group_window}")
        if pipeline_depth < 1:
            raise ConfigError(f"sqlite pipeline_depth must be >= 1, not {pipeline_depth}")
        self.stats = CommitStats()
        self._stats_lock = threading.Lock()
        self._write_lock = WriteLock()
        self._behind = Behind(
            pipeline_depth,
            self._begin_inline,
            self._elsewhere,
            self._behind_count,
            self._forget,
            self._merged,
            released=self._write_lock.released,
        )
        self._group: GroupCommit | None = None
        if group_window > 0 and self.path != ":memory:":
            self._group = GroupCommit(
                group_window,
                lambda: self._connect(busy_ms=0, migrate=False),
                _steps,
                self.stats,
                self._stats_lock,
                (lambda: self._connect(busy_ms=0, migrate=False)) if self._inline else None,
                write_lock=self._write_lock,
                busy_timeout=busy_timeout,
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
            depth = int(query.get("pipeline_depth", str(PIPELINE_DEPTH)))
        except ValueError:
            raise ConfigError(
                f"group_window_ms and pipeline_depth in {url!r} must be numbers"
            ) from None
        return cls(
            path,
            synchronous=query.get("synchronous", "full"),
            inline_appends=inline,
            pipelined=pipelined,
            pipeline_depth=depth,
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
        if self._group is not None:
            self._group.due()  # whatever the store is asked, a due group goes first
        if append_to is not None and self._conn is not None:
            group = self._group
            if group is not None and group.crowded(append_to):
                return await group.submit(plan)
            if self._inline and not self._behind.committing() and self._owns_inline():
                try:
                    value = _drive(self._inline_connection(), plan(), tx, self._write_lock)
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                else:
                    self._count(appends=1)
                    return value
            if group is not None:
                return await group.submit(plan)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, plan, tx, append_to)

    async def run_behind(
        self, plan: Write, tx: Tx, *, append_to: str, **options: Unpack[BehindOptions]
    ) -> Awaitable[None] | None:
        """`run` for an append that may return before its `COMMIT` returned (pipelining,
        see docs/core.md): None once durable, else what completes when it is.

        If the thread's own transaction is in flight behind the loop, the append queues
        behind it (`Behind.enqueue`: `ready` is not awaited; its errors, and the plan's, are
        raised by the awaitable) and shares the next `COMMIT`, unless other threads are
        appending too: then it waits for that transaction to be durable (raising its error
        if it failed: nothing built on it is written) and goes on as below, to their group
        commit, which would otherwise wait for the lock that thread's own transactions
        keep taking. Otherwise `ready` is awaited,
        then, if `ahead`, the statements run on the event loop inside `BEGIN IMMEDIATE`,
        as an inline append's do (the expected seq and the lease checked there: a conflict
        or a lost lease is raised here), and the `COMMIT` goes on on a thread of its own;
        until it returned the inline connection is taken, and other threads' appends go to
        the group commit or the store's thread and wait for the write lock there. Without
        `ahead` (the caller waits for durability at once), and for grouped appends (other
        threads appending) and appends that find the lock taken, this is `run`.
        """
        behind = self._behind
        group = self._group
        if behind.holds(append_to) and not self._closed:
            if group is None or not group.crowded(append_to):
                return await behind.enqueue(plan, append_to, options.get("known"))
            # Other threads are appending: this thread joins their group commit rather than
            # keep a transaction of its own behind the loop, whose lock the group would
            # wait for (SQLite's busy handler sleeps 1, 2, 5, 10, 15 ms...), once its own
            # appends in flight are durable (they come first).
            await behind.drained(append_to)
        ready = options.get("ready")
        if ready is not None:
            await ready()
        if (
            not options.get("ahead", True)
            or self._closed
            or self._conn is None
            or not self._pipelined
            or not behind.idle()
            or not self._owns_inline()
            or (group is not None and group.crowded(append_to))
        ):
            await self.run(plan, tx, append_to=append_to)
            return None
        try:
            return behind.begin(plan, append_to)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        await self.run(plan, tx, append_to=append_to)
        return None

    def _settled(self, thread_id: str, durable: Awaitable[None]) -> Awaitable[None]:
        """`durable` itself when it is `Behind`'s (a future): `Behind` forgets the state
        remembered for the thread when an append fails, before its awaitable does, so
        nothing need watch it (no callback, and no loop cycle to run one, an append).
        One that failed already (while it waited at the depth, before the state after it
        was remembered) is forgotten here."""
        if isinstance(durable, asyncio.Future):
            if durable.done() and (durable.cancelled() or durable.exception() is not None):
                self._forget(thread_id)
            return durable
        return super()._settled(thread_id, durable)

    def _merged(self, parts: list[KnownAppend | None]) -> Write | None:
        """Queued known-state appends of a thread as one write (`known.merged`), or None."""
        whole = merged(parts, self.dialect)
        return None if whole is None else partial(self._write_known, whole, True)

    def _begin_inline(self, plan: Plan[object]) -> sqlite3.Connection:
        """`plan`'s statements on the inline connection, its transaction left open for a
        `COMMIT` behind the loop (`Behind`)."""
        conn = self._inline_connection()
        _drive(conn, plan, Tx.ATOMIC, self._write_lock, commit=False)
        return conn

    def _behind_count(self, appends: int, seconds: float) -> None:
        """A `COMMIT` behind the loop of `appends` appends returned after `seconds` (the
        write lock let go: `Behind` told the group committer)."""
        with self._stats_lock:
            self.stats.commits += 1
            self.stats.appends += appends
            self.stats.behind += appends
            self.stats.queued += appends - 1
            self.stats.behind_seconds += seconds

    def _elsewhere(self, plan: Write, appends: int) -> Future[None]:
        """Queued appends whose transaction found the write lock taken: on the store's
        thread, which waits for it (`Behind`)."""

        def go() -> None:
            _drive(self._store_conn(), plan(), Tx.ATOMIC, self._write_lock)
            self._count(appends=appends)

        return self._executor.submit(go)

    def due(self) -> None:
        if self._group is not None:
            self._group.due()

    def _owns_inline(self) -> bool:
        """Whether the running event loop may use the inline connection (and `Behind`): the
        first loop that did, until it is closed. Another loop on another OS thread (two
        threads each in `run_sync`) running statements on it at the same time would begin
        a transaction inside the other's ("cannot start a transaction within a
        transaction"): its appends go to the store's thread (or a group) instead."""
        loop = asyncio.get_running_loop()
        owner = self._inline_loop
        if owner is loop:
            return True
        if owner is not None and not owner.is_closed():
            return False
        self._inline_loop = loop
        return True

    def _inline_connection(self) -> sqlite3.Connection:
        """The connection of inline appends (opened on first use), busy timeout zero."""
        if self._inline_conn is None:
            self._inline_conn = self._connect(busy_ms=0, migrate=False)
        return self._inline_conn

    def _call(self, plan: Callable[[], Plan[T]], tx: Tx, append_to: str | None = None) -> T:
        if tx is Tx.READ:
            return _drive(self._store_conn(), plan(), tx)
        value = _drive(self._store_conn(), plan(), tx, self._write_lock)
        self._count(appends=int(append_to is not None))
        return value

    def _appended(self, thread_id: str, state: ThreadState | Projected) -> None:
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

        self._behind.close(StoreError("store is closed"))  # a COMMIT behind the loop ends first
        if self._group is not None:
            self._group.drain_here(asyncio.get_running_loop())
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


def _drive(
    conn: sqlite3.Connection,
    plan: Plan[T],
    tx: Tx,
    lock: WriteLock | None = None,
    *,
    commit: bool = True,
) -> T:
    """Run `plan` on `conn`; writes in one `BEGIN IMMEDIATE` transaction, rolled back on error
    (left open, the statements done, without `commit`). `lock` is told when a write
    transaction that began here ended, committed or rolled back (`WriteLock.released`: a
    group committer waiting for the lock is woken); one that could not begin took nothing."""
    writes = tx is not Tx.READ
    if writes:
        conn.execute("BEGIN IMMEDIATE")
    try:
        value = _steps(conn, plan)
        if writes and commit:
            conn.execute("COMMIT")
            if lock is not None:
                lock.released()
        return value
    except BaseException:
        if writes:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if lock is not None:
                lock.released()
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
            try:
                rows = cur.fetchall() if cur.description is not None else []
            except sqlite3.OperationalError as exc:
                # Unfinished, its statement would hold a read snapshot open for as long as
                # the cursor lives (a traceback keeps it): this connection would read that
                # snapshot and never write again ("database is locked").
                cur.close()
                if many or "decode to UTF-8" not in str(exc):
                    raise
                rows = _undecoded(conn, sql, params)
            sql, params, many = plan.send(Result(rows, cur.rowcount))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        plan.close()


def _undecoded(conn: sqlite3.Connection, sql: str, params: Any) -> builtins.list[Any]:
    """The rows of a read that met text which is not UTF-8 (a damaged file, a foreign
    writer), read again with such text as bytes, so that whoever reads the rows says which
    one is damaged (an event's body: `CorruptEvent` naming its thread and seq) instead of
    the driver failing the whole read without naming any."""
    conn.text_factory = _text_or_bytes
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


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


_APPLIED = "SELECT version, name, applied_at FROM threadline_migrations ORDER BY version"


def _is_duplicate(exc: sqlite3.IntegrityError) -> bool:
    """A PRIMARY KEY or UNIQUE constraint refused the row (not NOT NULL, CHECK, ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "UNIQUE" in str(exc)
    return int(code) in (sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE)
