"""Every query of the SQL stores, written once over a small dialect.

`SQLStore` holds the queries and what they mean; `SQLiteStore` and `PostgresStore` hold
only connections (a thread or a pool), transactions, NOTIFY/LISTEN, migrations and the
classification of their database's errors. Each operation is a *plan* (see `dialect.py`)
that both stores drive with their own connections. Where the two databases need a
different shape, the dialect says so as data (`fused_writes`: an append's events and
projection in one statement, in PostgreSQL).

Invariants kept here for both databases (see `base.py` for the contract):

* An append reads the thread row (locked: `FOR UPDATE`, or SQLite's `BEGIN IMMEDIATE`),
  checks the expected seq and the lease (owner, token, expiry against the database's
  clock), then writes events and projection in the same transaction.
* The leases (the work queue) are `SQLLeases`'s (`leases.py`), which this class extends.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import threading
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeAlias, TypedDict, TypeVar, Unpack

from ..errors import AppendConflict, CorruptEvent, LeaseLost, StoreError, ThreadNotFound
from ..events import SCHEMA_VERSION, Event, Status, Thread, ThreadState, utcnow
from ..wire import SkippedThread
from .base import (
    Append,
    Lease,
    Page,
    ThreadQuery,
    ThreadSummary,
    check_append,
    fold_for_append,
    page_of,
    state_from_json,
    takes_fold,
)
from .budgets import SQLLedger, apply_plan, ledger_events
from .dialect import Dialect, DuplicateKey, Plan, Query, Tx, stored_json, stored_time
from .keys import SQLDeliveryLog, SQLKeyStore
from .known import KNOWN_UPDATE, LEASE_HELD, ROWS_A_STATEMENT, SET_STATE, SET_STATE_IF, KnownAppend
from .leases import SQLLeases
from .outbox import SQLOutbox
from .ratelimits import SQLRateLimits
from .rows import (
    Columns,
    Projected,
    already_written,
    check_dense,
    event_json,
    event_rows,
    insert_statement,
    nullable,
    parse_row,
    row_of,
    state_json,
)
from .schedules import SQLScheduleStore

__all__ = ["BehindOptions", "SQLStore", "Write"]

T = TypeVar("T")
Write: TypeAlias = Callable[[], Plan[object]]
"""A write's plan, its value dropped (`SQLStore.run_behind`)."""


class BehindOptions(TypedDict, total=False):
    """How an append may go behind the loop (`SQLStore.run_behind`)."""

    ready: Callable[[], Awaitable[None]] | None
    """Awaited before the plan runs, unless the plan is queued."""
    ahead: bool
    """The caller goes on before the append is durable (default); else it waits at once."""
    known: KnownAppend
    """The append as data, a known-state one: the driver may merge it with the thread's
    next ones when they commit together (`known.merged`)."""


class SQLStore(SQLLeases):
    """The queries of a store on a SQL database; subclasses supply the connections.

    A subclass implements `run` (execute a plan on a connection, in a transaction as `Tx`
    says, classifying unique-key violations as `DuplicateKey`) and may set `channel`: a
    write that makes a thread runnable then sends `pg_notify` in its transaction (inside
    the append's own statement where the dialect fuses writes), delivered at its commit.
    """

    queues_behind = False
    """Whether `run_behind` may run a plan after it returned (queued behind a commit in
    flight): a pipelined append's refusal is then raised by its plan, not returned."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._states: dict[str, ThreadState | Projected] = {}
        """The state after this store's last write or load of a thread, by id (`_remember`):
        its own fold (a `ThreadState` nobody else holds) or the caller's, as projected."""
        self._states_lock = threading.Lock()  # SQLite appends run on the loop or its thread
        self.keys = SQLKeyStore(self)
        """API keys in the same database (`threadline.stores.key_store`)."""
        self.deliveries = SQLDeliveryLog(self)
        """Webhook delivery ids in the same database (`threadline.stores.delivery_log`)."""
        self.outbox = SQLOutbox(self)
        """Channel notices to send, in the same database (`threadline.stores.outbox`)."""
        self.schedules = SQLScheduleStore(self)
        """Schedules in the same database (`threadline.stores.schedule_store`)."""
        self.rate_limits = SQLRateLimits(self)  # `threadline.stores.rate_limit_store`
        self.budgets = SQLLedger(self)
        """Budgeted trees' totals, kept by appends (`threadline.stores.tree_totals`)."""

    async def run_behind(
        self, plan: Write, tx: Tx, *, append_to: str, **options: Unpack[BehindOptions]
    ) -> Awaitable[None] | None:
        """`run` for an append that may return before its `COMMIT` returned: None once it
        is durable, else what completes when it is (or raises its error, the plan's
        included, having written nothing). `ready` is awaited before the plan runs, unless
        the driver queues the plan behind a transaction of the same thread still in
        flight; `ahead`: the caller goes on before the append is durable (else it waits at
        once, and the driver goes behind only to share a commit in flight). This default
        runs the plan to its durable end."""
        ready = options.get("ready")
        if ready is not None:
            await ready()
        await self.run(plan, tx, append_to=append_to)
        return None

    @abstractmethod
    async def migrations(self) -> builtins.list[tuple[int, str, datetime]]:
        """The applied migrations: (number, name, applied_at), oldest first."""

    # -- threads and events --------------------------------------------------------------

    async def create(self, thread: Thread) -> None:
        await self._create(thread, behind=False)

    async def create_behind(self, thread: Thread) -> Awaitable[None] | None:
        """`create`; when the driver can (`run_behind`), returning before its `COMMIT`
        returned, so the thread's first model call is made meanwhile."""
        return await self._create(thread, behind=True)

    async def _create(self, thread: Thread, *, behind: bool) -> Awaitable[None] | None:
        d = self.dialect
        head = {
            "id": thread.id,
            "agent": thread.agent,
            "status": thread.status.value,
            "next_seq": thread.next_seq,
            "schema_version": SCHEMA_VERSION,
            "metadata": json.dumps(thread.metadata),
            "state": state_json(thread.state),
            "created_at": d.time(thread.created_at),
            "now": d.time(utcnow()),
            "due_at": d.at(thread.state.waiting_until),
        }

        def plan() -> Plan[None]:
            try:
                yield Query(d.sql(_INSERT_THREAD), head)
            except DuplicateKey:
                raise StoreError(f"thread {thread.id} already exists") from None
            if thread.events:
                yield self._insert_events(thread.id, thread.events)
            if thread.status == Status.RUNNING:
                yield from self._announce(thread.id)

        if not behind:
            await self.run(plan, Tx.ATOMIC)
            self._remember(thread.id, thread.state.copy())
            return None
        durable = await self.run_behind(plan, Tx.ATOMIC, append_to=thread.id)
        self._remember(thread.id, thread.state.copy())  # the first append is prepared on it
        return None if durable is None else self._settled(thread.id, durable)

    async def _append(self, append: Append) -> Awaitable[None] | None:
        """The append; None once durable, or (`behind`) what completes when it is: when
        the store knows the thread's state (its own last write or load) and the driver can
        (`run_behind`), returning before the `COMMIT` returned. The state after it is
        remembered at once, so the next append is prepared while it commits."""
        thread_id, events, expected_seq, lease, behind, after, ahead, folded = append
        if not events:
            if after is not None:
                await after()
            return None
        ledger = ledger_events(events)  # tree budgets: totals in the same transaction
        cached = self._states.get(thread_id)
        if not ledger and cached is not None and cached.next_seq == expected_seq:
            # Folded in place (no copy of the state an append): taken out of the cache
            # first, since until written it is not the row's; remembered again once written.
            self._forget(thread_id)
            was = cached.status  # a StrEnum: compared with the stored text as it is
            state: ThreadState | Projected
            if folded is not None and takes_fold(events, expected_seq, folded):
                # The caller's fold, projected at once (not folded a second time here).
                check_append(thread_id, cached.next_seq, events, expected_seq)
                state = Projected(folded)
            else:
                own = cached.state() if isinstance(cached, Projected) else cached
                state = fold_for_append(thread_id, own, events, expected_seq, in_place=True)
            written, durable = await self._append_known(
                thread_id, events, (expected_seq, was), state, lease, behind, after, ahead
            )
            after = None  # awaited
            if written:  # remembered now: the next append is prepared while this commits
                self._appended(thread_id, state)
            if durable is not None:
                if written:
                    return self._settled(thread_id, durable)
                await durable  # nothing written: its transaction ends before the full append
            elif written:
                return None
        if after is not None:
            await after()
        d = self.dialect
        insert = None if d.fused_writes else self._insert_events(thread_id, events)

        def plan() -> Plan[ThreadState]:
            now = d.time(utcnow())
            found = yield Query(d.sql(_HEAD_FOR_APPEND), {"id": thread_id, "now": now})
            next_seq, status, owner, token, live, stored = row_of(thread_id, found)
            if lease is not None and (owner != lease.owner or token != lease.token or not live):
                raise LeaseLost(thread_id, lease.owner)
            if next_seq >= expected_seq + len(events):
                args = {"id": thread_id, "after": expected_seq - 1, "limit": len(events)}
                rows = (yield Query(d.sql(_EVENTS), args)).rows
                if already_written(rows, events):
                    # A retried append whose first try committed before its connection
                    # broke: the events are there, exactly; nothing more to write.
                    return state_from_json(thread_id, stored)
            known = self._states.get(thread_id)
            if known is None or known.next_seq != next_seq:
                cached = state_from_json(thread_id, stored)
            else:
                cached = known.state() if isinstance(known, Projected) else known
            state = fold_for_append(thread_id, cached, events, expected_seq)
            if ledger:
                yield from apply_plan(d, ledger)()
            update = self._projection(thread_id, now, state)
            wake = state.status is Status.RUNNING and status != _RUNNING
            if insert is None:
                yield self._fused_append(thread_id, events, update, wake=wake)
            else:
                yield insert
                yield Query(d.sql(SET_STATE), update)
            if wake and insert is not None:
                yield from self._announce(thread_id)
            return state

        self._appended(thread_id, await self.run(plan, Tx.ATOMIC, append_to=thread_id))
        return None

    def _settled(self, thread_id: str, durable: Awaitable[None]) -> Awaitable[None]:
        """`durable`, the state remembered for `thread_id` forgotten if it fails (not
        written after all: the state remembered is not the row's). A future is returned
        itself, watched by a callback (not wrapped in a coroutine a turn)."""
        if isinstance(durable, asyncio.Future):
            durable.add_done_callback(partial(self._forget_unless_durable, thread_id))
            return durable
        return self._settled_later(thread_id, durable)

    async def _settled_later(self, thread_id: str, durable: Awaitable[None]) -> None:
        try:
            await durable
        except BaseException:
            self._forget(thread_id)
            raise

    def _forget_unless_durable(self, thread_id: str, durable: asyncio.Future[None]) -> None:
        if durable.cancelled() or durable.exception() is not None:
            self._forget(thread_id)

    def _forget(self, thread_id: str) -> None:
        with self._states_lock:
            self._states.pop(thread_id, None)

    def _appended(self, thread_id: str, state: ThreadState | Projected) -> None:
        """An append to `thread_id` committed, leaving it in `state`."""
        self._remember(thread_id, state)

    async def _append_known(
        self,
        thread_id: str,
        events: Sequence[Event],
        before: tuple[int, str],
        after: ThreadState | Projected,
        lease: Lease | None,
        behind: bool = False,
        ready: Callable[[], Awaitable[None]] | None = None,
        ahead: bool = True,
    ) -> tuple[bool, Awaitable[None] | None]:
        """The append when this store knows the thread's state at `expected_seq` (its own
        last write or load; `before`: that seq and the status then; `after`: the state
        after `events`): the projection is updated only if the row is still at that seq
        (and the lease still held), and the events inserted after it, in two statements
        (one in PostgreSQL, in autocommit: one round trip). False when the row moved on or
        the lease is gone: nothing was written, and the full append finds out why. With
        `behind` on a driver that queues (`queues_behind`), also what completes when the
        transaction committed (`run_behind`), and a refusal is raised (`_refusal`: the
        statements may run queued, after this returned); any other driver runs them to
        their end here, so the refusal is returned as without `behind` (`run_behind` would
        drop it: the refused append taken for written, and every later one refused
        unnoticed). `ready` is awaited once the statements are built, before they run.

        When the status does not change (most appends), SQLite's `UPDATE` leaves the
        `status` column out (its index is not rewritten: `known.KNOWN_UPDATE`) and checks
        instead that the row holds that status; a row whose status differs from the
        store's (written by hand or by an older fold) refuses it, and the whole projection
        is written instead, as the full append would."""
        d = self.dialect
        checks = LEASE_HELD if lease is not None else ""
        # Everything but the time is computed here, outside the transaction: under group
        # commit the plans run one after another inside one, on the store's thread.
        expected, was = before
        args = self._projection(thread_id, None, after)
        args["expected"] = expected
        if lease is not None:
            args |= {"owner": lease.owner, "token": lease.token}
        wake = args["status"] == _RUNNING and was != _RUNNING
        if d.fused_writes:  # the NOTIFY, if any, in the same statement: one round trip
            update = self._fused_append(thread_id, events, args, checks, wake=wake)
            insert = None
        else:
            update = Query(d.sql(KNOWN_UPDATE[lease is not None, args["status"] == was]), args)
            insert = self._insert_events(thread_id, events)
        known = KnownAppend(thread_id, expected, was, lease, update, insert, len(events))
        plan = partial(self._write_known, known, behind and self.queues_behind)
        # One statement in PostgreSQL needs no transaction around it; SQLite's two run in
        # one BEGIN IMMEDIATE either way.
        tx = Tx.WRITE if d.fused_writes else Tx.ATOMIC
        if behind and self.queues_behind:  # a refusal is raised (`_refusal`), never returned
            return True, await self.run_behind(
                plan, tx, append_to=thread_id, ready=ready, ahead=ahead, known=known
            )
        if ready is not None:
            await ready()
        return await self.run(plan, tx, append_to=thread_id), None

    def _write_known(self, known: KnownAppend, refusable: bool) -> Plan[bool]:
        """`known`'s statements (`_append_known`); False when refused, unless `refusable`:
        then the refusal is raised (`_refusal`), or the whole projection written when the
        row refused it for its status alone."""
        d = self.dialect
        params, insert, thread_id = known.params, known.insert, known.thread_id
        params["now"] = d.time(utcnow())
        done = yield known.update
        status = params["status"]
        woken = status == _RUNNING and known.was != _RUNNING
        if not (done.rows[0][0] if insert is None else done.rowcount == 1):
            if not refusable:
                return False
            row_status = yield from self._refusal(
                thread_id, known.expected, known.lease, kept=known.kept
            )
            yield Query(d.sql(SET_STATE), params)  # only the row's status differed
            woken = status == _RUNNING and row_status != _RUNNING
        if insert is not None:
            yield insert
            if woken:
                yield from self._announce(thread_id)
        return True

    def _refusal(
        self, thread_id: str, expected: int, lease: Lease | None, *, kept: bool
    ) -> Plan[str]:
        """Why a known-state append was refused, raised: the lease lost, or a conflict.
        With `kept` (its `UPDATE` checked the row's status instead of writing it), a row at
        `expected` whose lease is held refused it for its status alone: that status is
        returned, nothing raised, and the caller writes the whole projection."""
        d = self.dialect
        found = yield Query(d.sql(_HEAD_FOR_APPEND), {"id": thread_id, "now": d.time(utcnow())})
        next_seq, row_status, owner, token, live, _ = row_of(thread_id, found)
        if lease is not None and (owner != lease.owner or token != lease.token or not live):
            raise LeaseLost(thread_id, lease.owner)
        if kept and next_seq == expected:
            return str(row_status)
        raise AppendConflict(thread_id, expected, next_seq)

    def _projection(
        self, thread_id: str, now: Any, state: ThreadState | Projected
    ) -> dict[str, Any]:
        return {
            "id": thread_id,
            "now": now,
            "state": state.json if isinstance(state, Projected) else state_json(state),
            "status": state.status.value,
            "next_seq": state.next_seq,
            "due_at": self.dialect.at(state.waiting_until),
        }

    def _insert_events(self, thread_id: str, events: Sequence[Event]) -> Query:
        """The events' rows in one `INSERT` (one statement, not one a row: the statement's
        own cost, its step and its reset, is paid once an append); a very long list of
        events (a forked thread's) a row at a time, within every SQLite's parameter limit."""
        d = self.dialect
        if len(events) > ROWS_A_STATEMENT:
            rows = [
                {
                    "id": thread_id,
                    "seq_0": e.seq,
                    "kind_0": e.kind,
                    "at_0": d.time(e.at),
                    "body_0": event_json(e),
                }
                for e in events
            ]
            return Query(d.sql(insert_statement(1)), rows, many=True)
        params: dict[str, Any] = {"id": thread_id}
        event_rows(d, events, params)
        return Query(d.sql(insert_statement(len(events))), params)

    def _fused_append(
        self,
        thread_id: str,
        events: Sequence[Event],
        update: dict[str, Any],
        checks: str | None = None,
        *,
        wake: bool = False,
    ) -> Query:
        """Events and projection in one statement (PostgreSQL). With `checks` (the known-
        state append), the projection is updated only if the row is at `:expected` (and
        `checks` hold), the events are inserted only if it was, and the one row returned
        says whether it was. With `wake` (the append makes the thread runnable) and a
        `channel`, the updated row's `RETURNING` sends the `pg_notify`: only if the row was
        updated, delivered when the statement's transaction commits (with the events)."""
        d = self.dialect
        notify = ""
        if wake and self.channel is not None:
            notify = " RETURNING pg_notify(:channel, id)"
            update["channel"] = self.channel
        values = event_rows(d, events, update)
        if checks is None:
            template = _FUSED_APPEND.replace("{values}", values) + notify
        else:
            template = _FUSED_APPEND_IF.replace("{values}", values).replace("{checks}", checks)
            template = template.replace("{notify}", notify.replace(" RETURNING", ","))
        return Query(d.sql(template), update)

    def _remember(self, thread_id: str, state: ThreadState | Projected) -> None:
        # Parsing the JSON projection was a third of an append's CPU time (bench/overhead.py);
        # a small per-store cache of the state after our own writes and loads avoids it. It
        # is trusted only when its next_seq matches the row read inside the append's locked
        # transaction, so another process's append is always noticed. Oldest entries go first.
        with self._states_lock:
            self._states.pop(thread_id, None)
            self._states[thread_id] = state
            if len(self._states) > _STATE_CACHE:
                del self._states[next(iter(self._states))]

    async def load(self, thread_id: str) -> Thread:
        d = self.dialect

        def plan() -> Plan[Thread]:
            found = yield Query(d.sql(_HEAD), {"id": thread_id})
            agent, schema_version, metadata, created_at = row_of(thread_id, found)
            rows = (yield Query(d.sql(_ALL_EVENTS), {"id": thread_id})).rows
            check_dense(thread_id, rows, first=0)
            events = [parse_row(thread_id, seq, body, schema_version) for seq, body in rows]
            try:
                return Thread(
                    thread_id,
                    agent,
                    events,
                    metadata=stored_json(metadata),
                    created_at=stored_time(created_at),
                )
            except CorruptEvent as exc:
                raise CorruptEvent(thread_id, exc.seq, exc.reason) from None

        thread = await self.run(plan, Tx.READ)
        self._remember(thread_id, thread.state.copy())
        return thread

    async def events(
        self, thread_id: str, *, after: int = -1, limit: int = 1000
    ) -> builtins.list[Event]:
        d = self.dialect

        def plan() -> Plan[builtins.list[Event]]:
            schema_version = row_of(thread_id, (yield Query(d.sql(_HEAD), {"id": thread_id})))[1]
            args = {"id": thread_id, "after": after, "limit": limit}
            rows = (yield Query(d.sql(_EVENTS), args)).rows
            check_dense(thread_id, rows, first=max(after, -1) + 1)
            return [parse_row(thread_id, seq, body, schema_version) for seq, body in rows]

        return await self.run(plan, Tx.READ)

    async def get(self, thread_id: str) -> ThreadSummary:
        d = self.dialect

        def plan() -> Plan[ThreadSummary]:
            found = yield Query(d.sql(f"{_SUMMARY} WHERE id = :id"), {"id": thread_id})
            return _SUMMARY_ROW.read(row_of(thread_id, found))

        return await self.run(plan, Tx.READ)

    async def _list(self, query: ThreadQuery) -> Page:
        limit = query.limit
        where: builtins.list[str] = []
        args: dict[str, Any] = {"limit": limit + 1}  # one more: is there a next page?
        if query.status is not None:
            where.append("status = :status")
            args["status"] = query.status.value
        if query.agent is not None:
            where.append("agent = :agent")
            args["agent"] = query.agent
        if query.before is not None:
            where.append("id < :cursor")
            args["cursor"] = query.before
        sql = _SUMMARY + (" WHERE " + " AND ".join(where) if where else "")
        select = Query(self.dialect.sql(sql + " ORDER BY id DESC LIMIT :limit"), args)

        def plan() -> Plan[Page]:
            return page_of([_listed(r) for r in (yield select).rows], limit)

        return await self.run(plan, Tx.READ)

    async def delete(self, thread_id: str) -> None:
        d = self.dialect

        def plan() -> Plan[None]:
            # Events first: foreign keys cascade too, but not on SQLite connections that
            # turned them off, and an explicit delete states the intent.
            yield Query(d.sql("DELETE FROM events WHERE thread_id = :id"), {"id": thread_id})
            gone = yield Query(d.sql("DELETE FROM threads WHERE id = :id"), {"id": thread_id})
            if gone.rowcount == 0:
                raise ThreadNotFound(thread_id)

        await self.run(plan, Tx.ATOMIC)

    async def ping(self) -> None:
        def plan() -> Plan[None]:
            yield Query("SELECT 1")

        await self.run(plan, Tx.READ)


_STATE_CACHE = 4096
_RUNNING = Status.RUNNING.value

_INSERT_THREAD = (
    "INSERT INTO threads (id, agent, status, next_seq, schema_version, metadata, state, "
    "created_at, updated_at, due_at) VALUES (:id, :agent, :status, :next_seq, "
    ":schema_version, :metadata{json}, :state{json}, :created_at, {now}, :due_at)"
)
_HEAD_FOR_APPEND = (
    "SELECT next_seq, status, lease_owner, lease_token, "
    "lease_expires IS NOT NULL AND lease_expires > {now}, state{text} "
    "FROM threads WHERE id = :id{lock}"
)
_FUSED_APPEND = (
    "WITH new_events AS (INSERT INTO events (thread_id, seq, kind, at, body) "
    "VALUES {values}) " + SET_STATE
)
_FUSED_APPEND_IF = (
    "WITH moved AS (" + SET_STATE_IF + " RETURNING id{notify}), "
    "new_events AS (INSERT INTO events (thread_id, seq, kind, at, body) "
    "SELECT * FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM moved)) "
    "SELECT count(*) FROM moved"
)
_HEAD = "SELECT agent, schema_version, metadata{text}, created_at FROM threads WHERE id = :id"
_ALL_EVENTS = "SELECT seq, body{text} FROM events WHERE thread_id = :id ORDER BY seq"
_EVENTS = (
    "SELECT seq, body{text} FROM events WHERE thread_id = :id AND seq > :after "
    "ORDER BY seq LIMIT :limit"
)
_SUMMARY_ROW = Columns(
    ThreadSummary,
    "id, agent, status, next_seq, created_at, updated_at, metadata{text}, due_at, lease_owner, "
    "lease_expires",
    status=Status,
    created_at=stored_time,
    updated_at=stored_time,
    metadata=stored_json,
    due_at=nullable(stored_time),
    lease_expires=nullable(stored_time),
)
_SUMMARY = f"SELECT {_SUMMARY_ROW.names} FROM threads"


def _listed(row: Sequence[Any]) -> ThreadSummary | SkippedThread:
    """A listed row, or why it does not parse (skipped and reported by `list`)."""
    try:
        return _SUMMARY_ROW.read(row)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        reason = f"thread row does not parse: {type(exc).__name__}: {exc}"[:300]
        return SkippedThread(id=str(row[0]), reason=reason)
