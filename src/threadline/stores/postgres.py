"""The production store: PostgreSQL through psycopg 3 and a connection pool.

The queries are `SQLStore`'s; this module holds the pool, the schema check, migrations,
NOTIFY/LISTEN and the classification of psycopg's errors. Many workers on many machines
share one database, and the invariants of every store (see `base.py`) hold across
processes:

* An append is one short transaction: `SELECT ... FOR UPDATE` on the thread row, check the
  expected seq and the writer's lease (owner, fencing token, expiry against the database
  clock), then events and projection in one statement. Two racing appends serialise on the
  row lock; the loser sees the new seq and raises `AppendConflict` having written nothing.
* Leasing is `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`: concurrent workers skip
  rows another worker is leasing instead of queueing behind it, and each lease bumps the
  fencing token. Expiry is judged by the database's `now()`, so worker clocks may drift.
* A write that makes a thread runnable sends `NOTIFY threadline_runnable` (in its
  transaction, delivered on commit); idle workers `LISTEN` and poll as a fallback.
* The schema is versioned by numbered migrations (`migrations.py`) recorded in
  `threadline_migrations`, applied only by `threadline db migrate` (`migrate()`); a store
  whose database is older than this code refuses to work with `SchemaOutOfDate` naming
  that command.
* A statement that finds its pooled connection dead (the server restarted, an operator ran
  `pg_terminate_backend`, a proxy dropped it) is run again, once, on a fresh connection:
  every operation is a plan that can be started afresh, and an append whose first attempt
  did commit is recognised by its events (see `SQLStore.append`), so a tool's result is
  not lost to a connection that broke between the tool run and the append.
* Appends of concurrent threads of one process that arrive while another is in flight are
  sent together, one transaction in one round trip, each keeping its own conditions and
  its own outcome (`postgres_group.py`); a lone thread's append is sent at once.

Events are stored as JSONB with `(thread_id, seq)` as the primary key.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, MissingExtraError, SchemaOutOfDate, StoreError
from .dialect import POSTGRES, DuplicateKey, Plan, Query, Result, Returned, Tx, advance
from .migrations import POSTGRES_MIGRATIONS
from .postgres_group import AppendGroups, RoundTrips
from .sql import SQLStore

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

T = TypeVar("T")

NOTIFY_CHANNEL = "threadline_runnable"
"""The LISTEN/NOTIFY channel (suffixed `_<schema>` for a store on its own schema); the
payload is the id of the thread that became runnable."""


_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS threadline_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
)
_OWN_PARAMETERS = ("schema", "pool_min", "pool_max", "migrate", "group_appends")
_MIGRATION_LOCK = 7_265_430_101
"""pg_advisory_xact_lock key serialising concurrent `db migrate` runs."""


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("postgres", exc.name or "psycopg") from None
    return psycopg, psycopg_pool


class PostgresStore(SQLStore):
    """Threads in PostgreSQL.

    Args:
        conninfo: a libpq URL or DSN (`postgresql://user@host:5432/db`).
        schema: the schema holding the tables (default: the connection's search_path,
            normally `public`). Created by `migrate()` if missing.
        min_size / max_size: connection pool bounds.
        migrate: apply pending migrations on first use instead of refusing to start
            (tests and single-process demos; production runs `threadline db migrate`).
        idle_in_transaction_timeout: seconds the server lets one of this store's sessions
            sit idle inside a transaction before ending it. A worker whose host is cut off
            between two statements of an append holds the thread's row lock, and leasing
            skips locked rows, so no other worker could take the thread over until the
            server noticed the dead connection (hours, with default TCP keepalives). The
            store's transactions are a few statements with no waiting between them.
        group_appends: send the appends of concurrent threads that arrive while another
            is in flight together, one round trip and one commit for the group
            (`postgres_group.py`); False sends each append alone.

    `stats` counts the round trips to the server and the waits of appends (`RoundTrips`).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = False,
        idle_in_transaction_timeout: float = 30.0,
        group_appends: bool = True,
    ) -> None:
        if idle_in_transaction_timeout <= 0:
            raise ConfigError("postgres idle_in_transaction_timeout must be positive")
        if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise ConfigError(f"postgres schema name {schema!r} must be a plain identifier")
        super().__init__(POSTGRES)
        self.conninfo = conninfo
        self.schema = schema
        self._min = min_size
        self._max = max_size
        self._auto_migrate = migrate
        self._idle_tx_ms = max(1, round(idle_in_transaction_timeout * 1000))
        self._pool: AsyncConnectionPool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._waiting: asyncio.Task[None] | None = None
        self._checked = False
        self._closed = False
        # NOTIFY channels are per database, not per schema: stores on different schemas of
        # one database (tests, tenants) must not wake each other's workers.
        self.channel = f"{NOTIFY_CHANNEL}_{schema}" if schema else NOTIFY_CHANNEL
        self.stats = RoundTrips()
        self._groups: AppendGroups | None = None
        if group_appends:
            self._groups = AppendGroups(self._conn, self._run_alone, self._drive, self.stats)

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """`postgresql://user@host/db?schema=name&pool_max=10&migrate=auto&group_appends=0`.

        `schema`, `pool_min`, `pool_max`, `migrate` and `group_appends` are Threadline's
        own parameters; every other query parameter is passed to libpq.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigError(f"not a postgresql URL: {url!r}")
        own: dict[str, str] = {}
        rest = []
        for key, value in parse_qsl(parts.query):
            if key in _OWN_PARAMETERS:
                own[key] = value
            else:
                rest.append((key, value))
        # quote, not urlencode's quote_plus: libpq reads "+" as itself, not as a space
        # (`options=-c%20statement_timeout%3D5s` must reach it with its space).
        query = urlencode(rest, quote_via=quote)
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=query))
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
            group_appends=own.get("group_appends", "1").lower() not in ("0", "false", "no", "off"),
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
        sql = f"SET idle_in_transaction_session_timeout = {self._idle_tx_ms}"
        if self.schema:
            sql += f'; SET search_path TO "{self.schema}"'
        await conn.execute(sql)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection on a schema this code understands.

        Raises:
            ConnectionDropped: the connection turned out dead (the pool discards it).
            StoreError: the server is unavailable or the pool exhausted.
        """
        psycopg, psycopg_pool = _import_psycopg()
        pool = await self._get_pool()
        try:
            if not self._checked:
                await self._check_schema(pool)
            async with pool.connection() as conn:
                try:
                    yield conn
                except psycopg.OperationalError as exc:
                    if conn.broken or conn.closed:
                        raise ConnectionDropped(
                            f"PostgreSQL connection lost: {_short(exc)}"
                        ) from exc
                    raise
        except (
            psycopg.OperationalError,
            psycopg.errors.IdleInTransactionSessionTimeout,  # an InternalError, yet the same
            psycopg_pool.PoolTimeout,
        ) as exc:
            # The server went away, ended the session or the pool is exhausted: one clear
            # StoreError line.
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

    # -- running plans -------------------------------------------------------------------

    async def run(self, plan: Callable[[], Plan[T]], tx: Tx, *, append_to: str | None = None) -> T:
        """Run `plan` on a pooled connection: in a transaction if `Tx.ATOMIC`, else each
        statement in autocommit (a single statement needs no BEGIN/COMMIT round trips).

        A one-statement append (`Tx.WRITE` with `append_to`) that arrives while another is
        in flight joins the group sent next, one round trip for all (`postgres_group.py`);
        alone, it is sent at once.
        """
        if append_to is None:
            return await self._run_retrying(plan, tx)
        arrived = time.monotonic()
        try:
            if tx is Tx.WRITE and self._groups is not None:
                return await self._groups.append(plan, append_to)
            return await self._run_retrying(plan, tx, append=True)
        finally:
            self.stats.waited(time.monotonic() - arrived)

    async def _run_retrying(self, plan: Callable[[], Plan[T]], tx: Tx, append: bool = False) -> T:
        """`plan` to its end; a connection found dead is replaced and a fresh `plan()` run
        once more (a pool may hold several connections the same restart killed: each try
        takes another one)."""
        for _ in range(_RECONNECTS):
            try:
                return await self._run_once(plan, tx, append)
            except ConnectionDropped as exc:
                log.warning("%s; running the operation again on a new connection", exc)
        return await self._run_once(plan, tx, append)

    async def _run_alone(self, plan: Callable[[], Plan[T]]) -> T:
        return await self._run_retrying(plan, Tx.WRITE, append=True)

    async def _run_once(self, plan: Callable[[], Plan[T]], tx: Tx, append: bool) -> T:
        steps = plan()
        try:
            async with self._conn() as conn:
                if append:
                    self.stats.appends += 1
                    self.stats.append_commits += 1
                if tx is not Tx.ATOMIC:
                    return await self._drive(conn, steps, advance(steps, None), append)
                self._count(2, append)  # BEGIN and COMMIT
                async with conn.transaction():
                    return await self._drive(conn, steps, advance(steps, None), append)
        finally:
            steps.close()

    async def _drive(
        self,
        conn: psycopg.AsyncConnection[Any],
        steps: Plan[T],
        step: Query | Returned[T],
        append: bool,
    ) -> T:
        """Run `steps` on `conn` from `step` (its next query, or its value) to its value."""
        psycopg, _ = _import_psycopg()
        while step.__class__ is Query:
            self._count(1, append)
            try:
                outcome: Result | DuplicateKey = await _execute(conn, step)
            except psycopg.errors.UniqueViolation as exc:
                outcome = DuplicateKey(_short(exc))
            step = advance(steps, outcome)
        return step.value  # type: ignore[union-attr]

    def _count(self, round_trips: int, append: bool) -> None:
        self.stats.round_trips += round_trips
        if append:
            self.stats.append_round_trips += round_trips

    async def wait_for_work(self, seconds: float) -> None:
        """Wait for a NOTIFY on `threadline_runnable` (or `seconds`).

        One dedicated LISTEN connection per store, outside the pool; if it breaks, this
        falls back to sleeping and reconnects on the next call. The call that (re)connects
        returns as soon as `LISTEN` has taken effect, without waiting: a notification sent
        before then was lost, so the caller looks for work once more.

        The wait on that connection runs in a task of its own, awaited here through
        `asyncio.wait`: psycopg can swallow a cancellation that arrives mid-wait
        (psycopg#1371: the task then waits on), and a caller that is cancelled (a worker
        shutting down) must stop at once. Cancelled, this passes the cancellation on to the
        wait and returns; a wait that swallowed it ends by its own timeout, and the next
        call (or `close`) picks it up instead of starting another.
        """
        waiting, loop = self._waiting, asyncio.get_running_loop()
        if waiting is None or waiting.done() or waiting.get_loop() is not loop:
            waiting = loop.create_task(self._wait_on_listener(seconds), name="LISTEN threadline")
            self._waiting = waiting
        try:
            await asyncio.wait({waiting})
        except asyncio.CancelledError:
            waiting.cancel()
            raise

    async def _wait_on_listener(self, seconds: float) -> None:
        psycopg, _ = _import_psycopg()
        try:
            if self._listener is None or self._listener.closed:
                self._listener = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                )
                await self._listener.execute(f"LISTEN {self.channel}")
                # A NOTIFY sent before LISTEN took effect (a launch while this worker was
                # starting, or while the listener was down) reached nobody: return now, so
                # the worker leases once more instead of waiting a whole poll interval.
                return
            listener = self._listener
            async for _ in listener.notifies(timeout=seconds, stop_after=1):
                pass
        except psycopg.Error:
            await self._drop_listener()
            if not self._closed:
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

    async def close(self) -> None:
        if self._closed:
            return
        if self._groups is not None:  # answer the queued appends while the pool is open
            await self._groups.drain(5.0)
        self._closed = True
        if self._waiting is not None and not self._waiting.done():
            self._waiting.cancel()
            await asyncio.wait({self._waiting}, timeout=1.0)
        await self._drop_listener()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _execute(conn: psycopg.AsyncConnection[Any], query: Query) -> Result:
    if query.many:
        async with conn.cursor() as cur:
            await cur.executemany(query.sql, query.params)
            return Result([], cur.rowcount)
    cur = await conn.execute(query.sql, query.params)
    rows = await cur.fetchall() if cur.description is not None else []
    return Result(rows, cur.rowcount)


class ConnectionDropped(StoreError):
    """A pooled connection was found dead mid-operation (nothing of a transaction it had
    not committed is written); `PostgresStore.run` retries on a fresh connection."""


_RECONNECTS = 3
"""Fresh connections tried after a dead one before the error reaches the caller."""

log = logging.getLogger("threadline.stores.postgres")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
