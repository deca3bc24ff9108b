"""The embedded default store: SQLite in WAL mode, one file, no server.

All database work runs on one dedicated thread per store (sqlite3 connections are bound to
their thread), so the event loop never blocks on a commit. Several processes may share the
file: writers take the lock up front (`BEGIN IMMEDIATE`) and the seq check happens inside
that transaction, so a conflicting append fails instead of interleaving.

Durability: `synchronous=FULL` by default, so a committed event survives power loss, not
only a process crash. `?synchronous=normal` in the URL trades that for speed.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, CorruptEvent, LeaseLost, StoreError, ThreadNotFound
from ..events import SCHEMA_VERSION, Event, Status, Thread, ThreadState, event_from_json, utcnow
from .base import (
    ApiKey,
    Lease,
    Page,
    Store,
    ThreadSummary,
    fold_for_append,
    list_query,
    page_of,
    state_from_json,
)
from .migrations import apply_sqlite_migrations

__all__ = ["SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(Store):
    """Threads in one SQLite file.

    Args:
        path: database file (created with its folder if missing), or ":memory:".
        synchronous: `full` (default, durable across power loss) or `normal`.
        busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 10.0,
        inline_appends: bool = True,
    ) -> None:
        if synchronous.lower() not in ("full", "normal", "extra", "off"):
            raise ConfigError(
                f"sqlite synchronous must be full, normal, extra or off, not {synchronous!r}"
            )
        self.path = str(path)
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._states: dict[str, ThreadState] = {}
        self._states_lock = threading.Lock()  # appends run on the loop or the store's thread
        self._inline = inline_appends and self.path != ":memory:"
        self._inline_conn: sqlite3.Connection | None = None

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
        inline = query.get("inline_appends", "1").lower() not in ("0", "false", "no", "off")
        return cls(path, synchronous=query.get("synchronous", "full"), inline_appends=inline)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short write transaction, inline when the write lock is free.

        Handing each append to the store's thread and back cost more than the rest of the
        append besides the commit itself (bench/overhead.py), so appends first try on a
        second connection, on the event loop's thread, whose busy timeout is zero: if
        another writer holds the lock, `BEGIN IMMEDIATE` fails at once and the append is
        handed to the store's thread, which waits for the lock there. The loop therefore
        never waits for another writer; it does wait for the commit's own fsync.
        `?inline_appends=0` in the URL sends every append to the store's thread.
        """
        if self._closed:
            raise StoreError("store is closed")
        if self._inline and self._conn is not None:
            if self._inline_conn is None:
                self._inline_conn = self._connect(busy_ms=0, migrate=False)
            try:
                return fn(self._inline_conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
        return await self._run(fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self, *, busy_ms: int | None = None, migrate: bool = True) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms if busy_ms is None else busy_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if migrate:
            apply_sqlite_migrations(conn)
        return conn

    async def create(self, thread: Thread) -> None:
        now = utcnow().isoformat()
        rows = [_event_row(thread.id, e) for e in thread.events]
        state = json.dumps(thread.state.to_dict())

        def go(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                try:
                    conn.execute(
                        "INSERT INTO threads (id, agent, status, next_seq, schema_version, "
                        "metadata, state, created_at, updated_at, due_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            thread.id,
                            thread.agent,
                            thread.status.value,
                            thread.next_seq,
                            SCHEMA_VERSION,
                            json.dumps(thread.metadata),
                            state,
                            thread.created_at.isoformat(),
                            now,
                            _iso(thread.state.waiting_until),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"thread {thread.id} already exists") from None
                conn.executemany(
                    "INSERT INTO events (thread_id, seq, kind, at, body) VALUES (?,?,?,?,?)", rows
                )
            self._remember(thread.id, thread.state.copy())

        await self._run(go)

    async def append(
        self,
        thread_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        lease: Lease | None = None,
    ) -> None:
        if not events:
            return
        rows = [_event_row(thread_id, e) for e in events]

        def go(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT next_seq, lease_owner, lease_expires, lease_token FROM threads "
                    "WHERE id = ?",
                    (thread_id,),
                ).fetchone()
                if row is None:
                    raise ThreadNotFound(thread_id)
                if lease is not None:
                    _check_lease(thread_id, lease, row[1], row[2], row[3])
                state = fold_for_append(
                    thread_id, self._current_state(conn, thread_id, row[0]), events, expected_seq
                )
                conn.executemany(
                    "INSERT INTO events (thread_id, seq, kind, at, body) VALUES (?,?,?,?,?)", rows
                )
                _write_state(conn, thread_id, state)
            self._remember(thread_id, state)

        await self._write(go)

    def _current_state(
        self, conn: sqlite3.Connection, thread_id: str, next_seq: int
    ) -> ThreadState:
        """The folded state at `next_seq`: from this store's cache when it is current (checked
        inside the write transaction, so another process's append is always noticed), else
        parsed from the stored projection."""
        cached = self._states.get(thread_id)
        if cached is not None and cached.next_seq == next_seq:
            return cached
        row = conn.execute("SELECT state FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return state_from_json(thread_id, row[0])

    def _remember(self, thread_id: str, state: ThreadState) -> None:
        # Parsing the JSON projection was a third of an append's CPU time (bench/overhead.py);
        # a small per-store cache of the state after our own writes and loads avoids it.
        # Only the store's thread touches it. Bounded: oldest entries go first.
        with self._states_lock:
            self._states.pop(thread_id, None)
            self._states[thread_id] = state
            if len(self._states) > _STATE_CACHE:
                del self._states[next(iter(self._states))]

    async def load(self, thread_id: str) -> Thread:
        def go(conn: sqlite3.Connection) -> Thread:
            head = conn.execute(
                "SELECT agent, schema_version, metadata, created_at FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
            if head is None:
                raise ThreadNotFound(thread_id)
            rows = conn.execute(
                "SELECT seq, body FROM events WHERE thread_id = ? ORDER BY seq", (thread_id,)
            ).fetchall()
            events = [_parse(thread_id, seq, body, head[1]) for seq, body in rows]
            try:
                thread = Thread(
                    thread_id,
                    head[0],
                    events,
                    metadata=json.loads(head[2]),
                    created_at=datetime.fromisoformat(head[3]),
                )
            except CorruptEvent as exc:
                raise CorruptEvent(thread_id, exc.seq, exc.reason) from None
            self._remember(thread_id, thread.state.copy())
            return thread

        return await self._run(go)

    async def events(self, thread_id: str, *, after: int = -1, limit: int = 1000) -> list[Event]:
        def go(conn: sqlite3.Connection) -> list[Event]:
            head = conn.execute(
                "SELECT schema_version FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            if head is None:
                raise ThreadNotFound(thread_id)
            rows = conn.execute(
                "SELECT seq, body FROM events WHERE thread_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (thread_id, after, limit),
            ).fetchall()
            return [_parse(thread_id, seq, body, head[0]) for seq, body in rows]

        return await self._run(go)

    async def get(self, thread_id: str) -> ThreadSummary:
        def go(conn: sqlite3.Connection) -> ThreadSummary:
            row = conn.execute(
                f"SELECT {_SUMMARY_COLS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            return _summary(row)

        return await self._run(go)

    async def list(
        self,
        *,
        status: Status | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        sql, args = list_query(
            _SUMMARY_COLS, status=status, agent=agent, cursor=cursor, limit=limit, mark="?"
        )

        def go(conn: sqlite3.Connection) -> Page:
            return page_of([_summary(r) for r in conn.execute(sql, args).fetchall()], limit)

        return await self._run(go)

    async def delete(self, thread_id: str) -> None:
        def go(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                # Events first: foreign keys cascade too, but not on connections that
                # turned them off, and an explicit delete states the intent.
                conn.execute("DELETE FROM events WHERE thread_id = ?", (thread_id,))
                if conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount == 0:
                    raise ThreadNotFound(thread_id)

        await self._run(go)

    async def lease(
        self,
        owner: str,
        *,
        ttl: float,
        limit: int = 1,
        agents: Sequence[str] | None = None,
        thread_ids: Sequence[str] | None = None,
    ) -> builtins.list[Lease]:
        # ISO-8601 UTC strings compare in time order ('+' sorts before '.', so a time
        # without microseconds still sorts before the same second with them).
        def go(conn: sqlite3.Connection) -> builtins.list[Lease]:
            now = utcnow()
            expires = now + timedelta(seconds=ttl)
            sql = (
                "SELECT id FROM threads WHERE (status = 'running' OR (status = 'waiting' "
                "AND due_at IS NOT NULL AND due_at <= ?)) "
                "AND (lease_expires IS NULL OR lease_expires <= ?)"
            )
            args: list[Any] = [now.isoformat(), now.isoformat()]
            if agents is not None:
                sql += f" AND agent IN ({','.join('?' * len(agents))})"
                args.extend(agents)
            if thread_ids is not None:
                sql += f" AND id IN ({','.join('?' * len(thread_ids))})"
                args.extend(thread_ids)
            sql += " ORDER BY updated_at LIMIT ?"
            args.append(limit)
            with _transaction(conn):
                ids = [r[0] for r in conn.execute(sql, args).fetchall()]
                out = []
                for thread_id in ids:
                    token = conn.execute(
                        "UPDATE threads SET lease_owner = ?, lease_expires = ?, "
                        "lease_token = lease_token + 1 WHERE id = ? RETURNING lease_token",
                        (owner, expires.isoformat(), thread_id),
                    ).fetchone()[0]
                    out.append(Lease(thread_id, owner, expires, int(token)))
                return out

        if (agents is not None and not agents) or (thread_ids is not None and not thread_ids):
            return []
        return await self._run(go)

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        def go(conn: sqlite3.Connection) -> Lease:
            now = utcnow()
            expires = now + timedelta(seconds=ttl)
            with _transaction(conn):
                row = conn.execute(
                    "UPDATE threads SET lease_expires = ? WHERE id = ? AND lease_owner = ? "
                    "AND lease_token = ? AND lease_expires > ? RETURNING id",
                    (
                        expires.isoformat(),
                        lease.thread_id,
                        lease.owner,
                        lease.token,
                        now.isoformat(),
                    ),
                ).fetchone()
            if row is None:
                raise LeaseLost(lease.thread_id, lease.owner)
            return Lease(lease.thread_id, lease.owner, expires, lease.token)

        return await self._run(go)

    async def release(self, lease: Lease) -> bool:
        def go(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE threads SET lease_owner = NULL, lease_expires = NULL "
                    "WHERE id = ? AND lease_owner = ? AND lease_token = ?",
                    (lease.thread_id, lease.owner, lease.token),
                )
                return cur.rowcount == 1

        return await self._run(go)

    async def break_lease(self, thread_id: str) -> None:
        def go(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE threads SET lease_owner = NULL, lease_expires = NULL, "
                    "lease_token = lease_token + 1 WHERE id = ?",
                    (thread_id,),
                )
                if cur.rowcount == 0:
                    raise ThreadNotFound(thread_id)

        await self._run(go)

    async def create_api_key(self, key: ApiKey, secret_hash: str) -> None:
        def go(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                try:
                    conn.execute(
                        "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at) "
                        "VALUES (?,?,?,?,?)",
                        (
                            key.id,
                            key.name,
                            secret_hash,
                            " ".join(key.scopes),
                            key.created_at.isoformat(),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"API key {key.id} already exists") from None

        await self._run(go)

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        def go(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute(
                f"SELECT {_KEY_COLS} FROM api_keys WHERE secret_hash = ?", (secret_hash,)
            ).fetchone()
            return _api_key(row) if row else None

        return await self._run(go)

    async def list_api_keys(self) -> Sequence[ApiKey]:
        def go(conn: sqlite3.Connection) -> Sequence[ApiKey]:
            rows = conn.execute(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")
            return [_api_key(r) for r in rows.fetchall()]

        return await self._run(go)

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        def go(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (at.isoformat(), key_id),
                )
                return cur.rowcount == 1

        return await self._run(go)

    async def remember_delivery(self, delivery_id: str, *, at: datetime) -> bool:
        def go(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                conn.execute(
                    "DELETE FROM webhook_deliveries WHERE received_at < ?",
                    ((at - timedelta(days=1)).isoformat(),),
                )
                cur = conn.execute(
                    "INSERT OR IGNORE INTO webhook_deliveries (id, received_at) VALUES (?, ?)",
                    (delivery_id, at.isoformat()),
                )
                return cur.rowcount == 1

        return await self._run(go)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return

        def go(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        if self._conn is not None:
            await self._run(go)
            self._conn = None
        self._closed = True
        self._executor.shutdown(wait=True)


_KEY_COLS = "id, name, scopes, created_at, revoked_at"


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        scopes=tuple(row[2].split()),
        created_at=datetime.fromisoformat(row[3]),
        revoked_at=_dt(row[4]),
    )


_STATE_CACHE = 4096

_SUMMARY_COLS = (
    "id, agent, status, next_seq, created_at, updated_at, metadata, due_at, "
    "lease_owner, lease_expires"
)


def _summary(row: tuple[Any, ...]) -> ThreadSummary:
    return ThreadSummary(
        id=row[0],
        agent=row[1],
        status=Status(row[2]),
        next_seq=row[3],
        created_at=datetime.fromisoformat(row[4]),
        updated_at=datetime.fromisoformat(row[5]),
        metadata=json.loads(row[6]),
        due_at=_dt(row[7]),
        lease_owner=row[8],
        lease_expires=_dt(row[9]),
    )


def _event_row(thread_id: str, event: Event) -> tuple[str, int, str, str, str]:
    return (thread_id, event.seq, event.kind, event.at.isoformat(), event.model_dump_json())


def _parse(thread_id: str, seq: int, body: str, schema_version: int) -> Event:
    try:
        event = event_from_json(body, schema_version=schema_version, thread_id=thread_id)
    except CorruptEvent as exc:
        raise CorruptEvent(thread_id, seq, exc.reason) from None
    if event.seq != seq:
        raise CorruptEvent(thread_id, seq, f"row seq {seq} holds an event with seq {event.seq}")
    return event


def _write_state(conn: sqlite3.Connection, thread_id: str, state: ThreadState) -> None:
    conn.execute(
        "UPDATE threads SET state = ?, status = ?, next_seq = ?, updated_at = ?, due_at = ? "
        "WHERE id = ?",
        (
            json.dumps(state.to_dict()),
            state.status.value,
            state.next_seq,
            utcnow().isoformat(),
            _iso(state.waiting_until),
            thread_id,
        ),
    )


def _check_lease(
    thread_id: str, lease: Lease, owner: str | None, expires: str | None, token: int | None
) -> None:
    if (
        owner != lease.owner
        or token != lease.token
        or expires is None
        or datetime.fromisoformat(expires) <= utcnow()
    ):
        raise LeaseLost(thread_id, lease.owner)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolling back on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
