"""The production store: PostgreSQL through psycopg 3 and a connection pool.

Many workers on many machines share one database. The same invariants as every store
(see `base.py`) hold across processes:

* An append is one short transaction: `SELECT ... FOR UPDATE` on the thread row, check the
  expected seq and the writer's lease (owner, fencing token, expiry against the database
  clock), insert the events, update the projection. Two racing appends serialise on the row
  lock; the loser sees the new seq and raises `AppendConflict` having written nothing.
* Leasing is `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`: concurrent workers skip
  rows another worker is leasing instead of queueing behind it, and each lease bumps the
  fencing token. Expiry is judged by the database's `now()`, so worker clocks may drift.
* An append that makes a thread runnable sends `NOTIFY threadline_runnable` in its
  transaction (delivered on commit); idle workers `LISTEN` and poll as a fallback.
* The schema is versioned by numbered migrations recorded in `threadline_migrations`,
  applied only by `threadline db migrate` (`migrate()`); a store whose database is older
  than this code refuses to work with `SchemaOutOfDate` naming that command.

Events are stored as JSONB with `(thread_id, seq)` as the primary key.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import (
    ConfigError,
    CorruptEvent,
    LeaseLost,
    MissingExtraError,
    SchemaOutOfDate,
    StoreError,
    ThreadNotFound,
)
from ..events import SCHEMA_VERSION, Event, Status, Thread, event_from_json
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

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

__all__ = ["NOTIFY_CHANNEL", "POSTGRES_MIGRATIONS", "PostgresStore"]

NOTIFY_CHANNEL = "threadline_runnable"
"""The LISTEN/NOTIFY channel (suffixed `_<schema>` for a store on its own schema); the
payload is the id of the thread that became runnable."""

Migration = tuple[int, str, str]

POSTGRES_MIGRATIONS: list[Migration] = [
    (
        1,
        "threads and events",
        """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            next_seq INTEGER NOT NULL,
            schema_version INTEGER NOT NULL,
            metadata JSONB NOT NULL,
            state JSONB NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            due_at TIMESTAMPTZ,
            lease_owner TEXT,
            lease_expires TIMESTAMPTZ,
            lease_token BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX threads_status ON threads (status, id);
        CREATE INDEX threads_agent ON threads (agent, id);
        CREATE INDEX threads_runnable ON threads (updated_at)
            WHERE status IN ('running', 'waiting');
        CREATE TABLE events (
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            body JSONB NOT NULL,
            PRIMARY KEY (thread_id, seq)
        );
        """,
    ),
    (
        2,
        "server API keys and webhook deliveries",
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        );
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            received_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
        """,
    ),
]
"""Numbered, append-only: a released migration is never edited, only followed."""

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS threadline_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
)
_MIGRATION_LOCK = 7_265_430_101
"""pg_advisory_xact_lock key serialising concurrent `db migrate` runs."""


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("postgres", exc.name or "psycopg") from None
    return psycopg, psycopg_pool


class PostgresStore(Store):
    """Threads in PostgreSQL.

    Args:
        conninfo: a libpq URL or DSN (`postgresql://user@host:5432/db`).
        schema: the schema holding the tables (default: the connection's search_path,
            normally `public`). Created by `migrate()` if missing.
        min_size / max_size: connection pool bounds.
        migrate: apply pending migrations on first use instead of refusing to start
            (tests and single-process demos; production runs `threadline db migrate`).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = False,
    ) -> None:
        if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise ConfigError(f"postgres schema name {schema!r} must be a plain identifier")
        self.conninfo = conninfo
        self.schema = schema
        self._min = min_size
        self._max = max_size
        self._auto_migrate = migrate
        self._pool: AsyncConnectionPool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._checked = False
        self._closed = False
        # NOTIFY channels are per database, not per schema: stores on different schemas of
        # one database (tests, tenants) must not wake each other's workers.
        self.channel = f"{NOTIFY_CHANNEL}_{schema}" if schema else NOTIFY_CHANNEL

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """`postgresql://user@host/db?schema=name&pool_max=10&migrate=auto`.

        `schema`, `pool_min`, `pool_max` and `migrate` are Threadline's own parameters;
        every other query parameter is passed to libpq.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigError(f"not a postgresql URL: {url!r}")
        own: dict[str, str] = {}
        rest = []
        for key, value in parse_qsl(parts.query):
            if key in ("schema", "pool_min", "pool_max", "migrate"):
                own[key] = value
            else:
                rest.append((key, value))
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
        try:
            min_size = int(own.get("pool_min", 1))
            max_size = int(own.get("pool_max", 10))
        except ValueError:
            raise ConfigError(f"pool_min and pool_max in {url!r} must be integers") from None
        return cls(
            conninfo,
            schema=own.get("schema"),
            min_size=min_size,
            max_size=max_size,
            migrate=own.get("migrate", "").lower() in ("auto", "1", "true", "yes"),
        )

    # -- connections and schema ----------------------------------------------------------

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._closed:
            raise StoreError("store is closed")
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                _, psycopg_pool = _import_psycopg()
                pool = psycopg_pool.AsyncConnectionPool(
                    self.conninfo,
                    min_size=self._min,
                    max_size=self._max,
                    open=False,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                )
                try:
                    await pool.open(wait=True, timeout=10)
                except Exception as exc:
                    await pool.close()
                    raise StoreError(f"cannot connect to PostgreSQL: {_short(exc)}") from None
                self._pool = pool
            return self._pool

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.schema:
            await conn.execute(f'SET search_path TO "{self.schema}"')

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection on a schema this code understands."""
        psycopg, psycopg_pool = _import_psycopg()
        pool = await self._get_pool()
        try:
            if not self._checked:
                await self._check_schema(pool)
            async with pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # The server went away or the pool is exhausted: one clear StoreError line.
            raise StoreError(f"PostgreSQL unavailable: {_short(exc)}") from exc

    async def _check_schema(self, pool: AsyncConnectionPool) -> None:
        if self._auto_migrate:
            await self.migrate()
        have = await self.schema_version()
        want = POSTGRES_MIGRATIONS[-1][0]
        if have < want:
            raise SchemaOutOfDate(have, want)
        if have > want:
            raise StoreError(
                f"database schema is at migration {have}, newer than this code "
                f"({want}); upgrade threadline"
            )
        self._checked = True

    async def schema_version(self) -> int:
        """The newest migration applied to the database (0: none)."""
        pool = await self._get_pool()
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT to_regclass('threadline_migrations') IS NOT NULL")
            ).fetchone()
            if not row or not row[0]:
                return 0
            row = await (
                await conn.execute("SELECT COALESCE(MAX(version), 0) FROM threadline_migrations")
            ).fetchone()
            return int(row[0]) if row else 0

    async def migrate(self) -> builtins.list[int]:
        """Apply every pending migration, each in its own transaction; return their numbers.

        Safe to run from several processes at once: an advisory lock serialises them and the
        version is re-read under it.
        """
        pool = await self._get_pool()
        applied: builtins.list[int] = []
        async with pool.connection() as conn:
            if self.schema:
                # Under the lock: two racing CREATE SCHEMA IF NOT EXISTS can still collide.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for number, name, sql in POSTGRES_MIGRATIONS:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(_MIGRATIONS_TABLE)
                    row = await (
                        await conn.execute(
                            "SELECT 1 FROM threadline_migrations WHERE version = %s", (number,)
                        )
                    ).fetchone()
                    if row:
                        continue
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO threadline_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, now())",
                        (number, name),
                    )
                    applied.append(number)
        return applied

    async def migrations(self) -> builtins.list[tuple[int, str, datetime]]:
        """The applied migrations: (number, name, applied_at), oldest first."""
        if await self.schema_version() == 0:
            return []
        pool = await self._get_pool()
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT version, name, applied_at FROM threadline_migrations ORDER BY version"
                )
            ).fetchall()
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]

    # -- threads and events --------------------------------------------------------------

    async def create(self, thread: Thread) -> None:
        psycopg, _ = _import_psycopg()
        rows = [_event_row(thread.id, e) for e in thread.events]
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO threads (id, agent, status, next_seq, schema_version, "
                        "metadata, state, created_at, updated_at, due_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, now(), %s)",
                        (
                            thread.id,
                            thread.agent,
                            thread.status.value,
                            thread.next_seq,
                            SCHEMA_VERSION,
                            json.dumps(thread.metadata),
                            json.dumps(thread.state.to_dict()),
                            thread.created_at,
                            thread.state.waiting_until,
                        ),
                    )
                    if rows:
                        async with conn.cursor() as cur:
                            await cur.executemany(_INSERT_EVENT, rows)
                    if thread.status == Status.RUNNING:
                        await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, thread.id))
            except psycopg.errors.UniqueViolation:
                raise StoreError(f"thread {thread.id} already exists") from None

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
        psycopg, _ = _import_psycopg()
        rows = [_event_row(thread_id, e) for e in events]
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    row = await (
                        await conn.execute(
                            "SELECT state, status, lease_owner, lease_token, "
                            "lease_expires IS NOT NULL AND lease_expires > now() "
                            "FROM threads WHERE id = %s FOR UPDATE",
                            (thread_id,),
                        )
                    ).fetchone()
                    if row is None:
                        raise ThreadNotFound(thread_id)
                    if lease is not None and (
                        row[2] != lease.owner or row[3] != lease.token or not row[4]
                    ):
                        raise LeaseLost(thread_id, lease.owner)
                    state = fold_for_append(
                        thread_id, state_from_json(thread_id, row[0]), events, expected_seq
                    )
                    # Events and projection in one statement (one round trip fewer).
                    values = ", ".join(["(%s, %s, %s, %s, %s::jsonb)"] * len(rows))
                    await conn.execute(
                        f"WITH new_events AS (INSERT INTO events (thread_id, seq, kind, at, "
                        f"body) VALUES {values}) "
                        "UPDATE threads SET state = %s::jsonb, status = %s, next_seq = %s, "
                        "updated_at = now(), due_at = %s WHERE id = %s",
                        (
                            *(value for row in rows for value in row),
                            json.dumps(state.to_dict()),
                            state.status.value,
                            state.next_seq,
                            state.waiting_until,
                            thread_id,
                        ),
                    )
                    if state.status == Status.RUNNING and row[1] != Status.RUNNING.value:
                        await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, thread_id))
            except psycopg.errors.UniqueViolation:
                # Only reachable if a row was written behind the row lock's back.
                raise StoreError(f"thread {thread_id}: duplicate event seq") from None

    async def load(self, thread_id: str) -> Thread:
        async with self._conn() as conn:
            head = await (
                await conn.execute(
                    "SELECT agent, schema_version, metadata, created_at FROM threads WHERE id = %s",
                    (thread_id,),
                )
            ).fetchone()
            if head is None:
                raise ThreadNotFound(thread_id)
            rows = await (
                await conn.execute(
                    "SELECT seq, body::text FROM events WHERE thread_id = %s ORDER BY seq",
                    (thread_id,),
                )
            ).fetchall()
        events = [_parse(thread_id, seq, body, head[1]) for seq, body in rows]
        try:
            return Thread(thread_id, head[0], events, metadata=dict(head[2]), created_at=head[3])
        except CorruptEvent as exc:
            raise CorruptEvent(thread_id, exc.seq, exc.reason) from None

    async def events(
        self, thread_id: str, *, after: int = -1, limit: int = 1000
    ) -> builtins.list[Event]:
        async with self._conn() as conn:
            head = await (
                await conn.execute("SELECT schema_version FROM threads WHERE id = %s", (thread_id,))
            ).fetchone()
            if head is None:
                raise ThreadNotFound(thread_id)
            rows = await (
                await conn.execute(
                    "SELECT seq, body::text FROM events WHERE thread_id = %s AND seq > %s "
                    "ORDER BY seq LIMIT %s",
                    (thread_id, after, limit),
                )
            ).fetchall()
        return [_parse(thread_id, seq, body, head[0]) for seq, body in rows]

    async def get(self, thread_id: str) -> ThreadSummary:
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    f"SELECT {_SUMMARY_COLS} FROM threads WHERE id = %s", (thread_id,)
                )
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return _summary(row)

    async def list(
        self,
        *,
        status: Status | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        sql, args = list_query(
            _SUMMARY_COLS, status=status, agent=agent, cursor=cursor, limit=limit, mark="%s"
        )
        async with self._conn() as conn:
            rows = [_summary(r) for r in await (await conn.execute(sql, args)).fetchall()]
        return page_of(rows, limit)

    async def delete(self, thread_id: str) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("DELETE FROM events WHERE thread_id = %s", (thread_id,))
            cur = await conn.execute("DELETE FROM threads WHERE id = %s", (thread_id,))
            if cur.rowcount == 0:
                raise ThreadNotFound(thread_id)

    # -- API keys and webhook deliveries -------------------------------------------------

    async def create_api_key(self, key: ApiKey, secret_hash: str) -> None:
        psycopg, _ = _import_psycopg()
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (key.id, key.name, secret_hash, " ".join(key.scopes), key.created_at),
                )
            except psycopg.errors.UniqueViolation:
                raise StoreError(f"API key {key.id} already exists") from None

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    f"SELECT {_KEY_COLS} FROM api_keys WHERE secret_hash = %s", (secret_hash,)
                )
            ).fetchone()
        return _api_key(row) if row else None

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        async with self._conn() as conn:
            rows = await (
                await conn.execute(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")
            ).fetchall()
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (at, key_id),
            )
            return cur.rowcount == 1

    async def remember_delivery(self, delivery_id: str, *, at: datetime) -> bool:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM webhook_deliveries WHERE received_at < %s", (at - timedelta(days=1),)
            )
            cur = await conn.execute(
                "INSERT INTO webhook_deliveries (id, received_at) VALUES (%s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (delivery_id, at),
            )
            return cur.rowcount == 1

    # -- leases --------------------------------------------------------------------------

    async def lease(
        self,
        owner: str,
        *,
        ttl: float,
        limit: int = 1,
        agents: Sequence[str] | None = None,
        thread_ids: Sequence[str] | None = None,
    ) -> builtins.list[Lease]:
        if (agents is not None and not agents) or (thread_ids is not None and not thread_ids):
            return []
        filter_agents = "AND agent = ANY(%s)" if agents is not None else ""
        filter_agents += " AND id = ANY(%s)" if thread_ids is not None else ""
        args: builtins.list[Any] = [owner, ttl]
        if agents is not None:
            args.append(list(agents))
        if thread_ids is not None:
            args.append(list(thread_ids))
        args.append(limit)
        async with self._conn() as conn:
            rows = await (
                await conn.execute(
                    "UPDATE threads t SET lease_owner = %s, "
                    "lease_expires = now() + make_interval(secs => %s), "
                    "lease_token = t.lease_token + 1 "
                    "FROM (SELECT id FROM threads "
                    "      WHERE (status = 'running' OR (status = 'waiting' AND due_at <= now())) "
                    "        AND (lease_expires IS NULL OR lease_expires <= now()) "
                    f"       {filter_agents} "
                    "      ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED) c "
                    "WHERE t.id = c.id RETURNING t.id, t.lease_expires, t.lease_token",
                    args,
                )
            ).fetchall()
        return [Lease(r[0], owner, r[1], int(r[2])) for r in rows]

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    "UPDATE threads SET lease_expires = now() + make_interval(secs => %s) "
                    "WHERE id = %s AND lease_owner = %s AND lease_token = %s "
                    "AND lease_expires > now() RETURNING lease_expires",
                    (ttl, lease.thread_id, lease.owner, lease.token),
                )
            ).fetchone()
        if row is None:
            raise LeaseLost(lease.thread_id, lease.owner)
        return Lease(lease.thread_id, lease.owner, row[0], lease.token)

    async def release(self, lease: Lease) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE threads SET lease_owner = NULL, lease_expires = NULL "
                "WHERE id = %s AND lease_owner = %s AND lease_token = %s RETURNING status",
                (lease.thread_id, lease.owner, lease.token),
            )
            row = await cur.fetchone()
            if row is not None and row[0] == Status.RUNNING.value:
                # Released while still runnable (shutdown, step limit): wake another worker.
                await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, lease.thread_id))
        return row is not None

    async def break_lease(self, thread_id: str) -> None:
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE threads SET lease_owner = NULL, lease_expires = NULL, "
                "lease_token = lease_token + 1 WHERE id = %s RETURNING status",
                (thread_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            if row[0] == Status.RUNNING.value:
                await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, thread_id))

    async def wait_for_work(self, seconds: float) -> None:
        """Wait for a NOTIFY on `threadline_runnable` (or `seconds`).

        One dedicated LISTEN connection per store, outside the pool; if it breaks, this
        falls back to sleeping and reconnects on the next call.
        """
        psycopg, _ = _import_psycopg()
        try:
            if self._listener is None or self._listener.closed:
                self._listener = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                )
                await self._listener.execute(f"LISTEN {self.channel}")
            listener = self._listener
            async for _ in listener.notifies(timeout=seconds, stop_after=1):
                pass
        except psycopg.Error:
            await self._drop_listener()
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            # Interrupted mid-wait: the connection's state is unknown, so start afresh.
            await self._drop_listener()
            raise

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._drop_listener()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


_INSERT_EVENT = (
    "INSERT INTO events (thread_id, seq, kind, at, body) VALUES (%s, %s, %s, %s, %s::jsonb)"
)

_KEY_COLS = "id, name, scopes, created_at, revoked_at"


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0], name=row[1], scopes=tuple(row[2].split()), created_at=row[3], revoked_at=row[4]
    )


_SUMMARY_COLS = (
    "id, agent, status, next_seq, created_at, updated_at, metadata, due_at, "
    "lease_owner, lease_expires"
)


def _summary(row: Sequence[Any]) -> ThreadSummary:
    return ThreadSummary(
        id=row[0],
        agent=row[1],
        status=Status(row[2]),
        next_seq=row[3],
        created_at=row[4],
        updated_at=row[5],
        metadata=dict(row[6]),
        due_at=row[7],
        lease_owner=row[8],
        lease_expires=row[9],
    )


def _event_row(thread_id: str, event: Event) -> tuple[str, int, str, datetime, str]:
    return (thread_id, event.seq, event.kind, event.at, event.model_dump_json())


def _parse(thread_id: str, seq: int, body: str, schema_version: int) -> Event:
    try:
        event = event_from_json(body, schema_version=schema_version, thread_id=thread_id)
    except CorruptEvent as exc:
        raise CorruptEvent(thread_id, seq, exc.reason) from None
    if event.seq != seq:
        raise CorruptEvent(thread_id, seq, f"row seq {seq} holds an event with seq {event.seq}")
    return event


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
