"""Group commit in PostgreSQL: appends of concurrent threads share one round trip.

A known-state append (`SQLStore._append_known`) is one statement in autocommit: one round
trip and one commit (one WAL flush at `synchronous_commit=on`) per append. When threads of
one process append at about the same time (a worker or a server advancing many threads),
the appends that arrive while another is in flight are queued, then sent together as one
transaction in psycopg's pipeline mode: `BEGIN`, each append's statement, `COMMIT`, written
to the server at once and answered at once, one round trip and one commit for the group:

* each statement carries its own conditions in its `WHERE` (the expected seq, the lease):
  one whose condition fails writes nothing and reports it, and its caller goes on to the
  full append (lock, read, check), which raises its usual error (`AppendConflict`,
  `LeaseLost`) while the others commit;
* a statement that raises (none should: the conditions are not errors) aborts the group's
  transaction, which writes nothing; then each append of the group is run again alone, so
  the one that raises raises alone, and the others commit. A connection that broke under a
  group is handled the same way: an append whose group did commit is recognised by its
  events when it is run again (see `SQLStore.append`);
* a caller is answered only after the `COMMIT` returned. An append that makes its thread
  runnable sends its `pg_notify` from its own statement (`SQLStore._fused_append`), so
  the wake-up is delivered at the group's `COMMIT`, with the events, and costs no round
  trip of its own; a plan's later statements, if it had any, would run after the
  `COMMIT` in autocommit, as they do alone (`Tx.WRITE`: each statement is atomic alone);
* the appends of a group are sent in thread id order, so two processes' groups lock their
  rows in the same order and cannot deadlock each other; a thread appears once per group.

A lone thread never waits: an append that finds none in flight is sent at once, alone, as
before. There is no window to wait out either: a group is what arrived while the round trip
ahead of it was in flight, so an append waits for at most one round trip besides its own.

Only the one-statement known-state appends are grouped; the full append (several
statements in a transaction, each needing the last one's answer) keeps its own transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .dialect import Plan, Query, Result, Returned, advance
from .grouping import AppendStats, answer

if TYPE_CHECKING:
    import psycopg

__all__ = ["AppendGroups", "RoundTrips"]

T = TypeVar("T")

_Connection = Callable[[], AbstractAsyncContextManager["psycopg.AsyncConnection[Any]"]]
_Alone = Callable[[Callable[[], Plan[Any]]], Awaitable[Any]]
_Drive = Callable[
    ["psycopg.AsyncConnection[Any]", Plan[Any], "Query | Returned[Any]", bool], Awaitable[Any]
]

MAX_GROUP = 256
"""Appends sent in one round trip at most (the rest go in the next)."""


@dataclass(slots=True)
class RoundTrips(AppendStats):
    """What a PostgreSQL store exchanged with its server (`PostgresStore.stats`).

    Every statement sent alone is one round trip, and so are a transaction's `BEGIN` and
    `COMMIT`; a pipelined group is one round trip whatever it holds. `appends` counts the
    appends tried (a known-state append that found its thread moved on, then the full
    append, counts twice); `waits` and `longest_wait` are every append's, grouped or not.
    """

    round_trips: int = 0
    """Round trips of every operation (reads, leases, appends, ...)."""
    append_round_trips: int = 0
    """Round trips of appends, grouped ones included."""
    append_commits: int = 0
    """Transactions that committed appends: one per append sent alone, one per group."""
    regrouped: int = 0
    """Appends of failed groups, run again alone."""


@dataclass(slots=True)
class _Request:
    plan: Callable[[], Plan[Any]]
    thread_id: str
    future: asyncio.Future[Any]


class AppendGroups:
    """The queue of appends waiting for the round trip ahead of them, and their sender.

    Args:
        connection: a pooled connection of the store (its errors already classified).
        alone: runs one plan by itself in autocommit, with the store's reconnect retries.
        drive: runs a plan's remaining statements on a connection in autocommit, from the
            step given (a `Returned` ends at once), counting their round trips (as an
            append's when told).
        stats: the store's counters.
    """

    def __init__(
        self, connection: _Connection, alone: _Alone, drive: _Drive, stats: RoundTrips
    ) -> None:
        self._connection = connection
        self._alone = alone
        self._drive = drive
        self.stats = stats
        self._queue: list[_Request] = []
        self._busy = False
        self._sender: asyncio.Task[None] | None = None

    async def append(self, plan: Callable[[], Plan[T]], thread_id: str) -> T:
        """Run `plan` (a one-statement append to `thread_id`): at once if no append is in
        flight, else in the group sent when the one ahead returns. Its value once the
        statement committed."""
        if self._busy:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._queue.append(_Request(plan, thread_id, future))
            return await future
        self._busy = True
        try:
            value: T = await self._alone(plan)
            return value
        finally:
            self._next()

    def _next(self) -> None:
        """The round trip in flight returned: send what queued meanwhile, or go idle."""
        if not self._queue:
            self._busy = False
            return
        self._sender = asyncio.get_running_loop().create_task(
            self._send_queued(), name="threadline postgres group commit"
        )

    async def _send_queued(self) -> None:
        """Send groups until the queue is empty. Every queued caller is answered, whatever
        happens: a sender that stopped with callers queued would leave them waiting."""
        group: list[_Request] = []
        try:
            while True:
                group = self._take()
                if not group:
                    break
                await self._send(group)
        except BaseException as exc:
            left, self._queue = group + self._queue, []
            for request in left:
                _answer(request, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._busy = False

    def _take(self) -> list[_Request]:
        """The next group: queued callers still waiting, one append per thread, in thread
        id order (a second append to a thread waits for the next group)."""
        taken: dict[str, _Request] = {}
        later: list[_Request] = []
        for request in self._queue:
            if request.future.done():  # the caller was cancelled: nothing to send
                continue
            if request.thread_id in taken or len(taken) >= MAX_GROUP:
                later.append(request)
            else:
                taken[request.thread_id] = request
        self._queue = later
        return [taken[key] for key in sorted(taken)]

    async def _send(self, group: list[_Request]) -> None:
        if len(group) == 1:  # no BEGIN and COMMIT around a lone statement
            await self._run_alone(group)
            return
        stats = self.stats
        plans: list[Plan[Any]] = []
        try:
            async with self._connection() as conn:
                plans = [request.plan() for request in group]
                stats.round_trips += 1
                stats.append_round_trips += 1
                stats.appends += len(group)
                stats.groups += 1
                stats.grouped += len(group)
                began = time.monotonic()
                outcomes = await self._pipeline(conn, plans)
                stats.group_seconds += time.monotonic() - began
                stats.append_commits += 1
                again = await self._finish(conn, group, plans, outcomes)
        except Exception:
            # Nothing of the group committed, or its connection broke (then an append
            # whose COMMIT did happen finds its events): each append again, alone.
            for steps in plans:
                steps.close()
            stats.regrouped += len(group)
            await self._run_alone(group)
            return
        await self._run_alone(again)

    async def _pipeline(
        self, conn: psycopg.AsyncConnection[Any], plans: list[Plan[Any]]
    ) -> list[Result | Returned[Any]]:
        """`BEGIN`, each plan's first statement, `COMMIT`: one round trip, one commit."""
        firsts = [advance(steps, None) for steps in plans]
        cursors: list[psycopg.AsyncCursor[Any] | None] = []
        try:
            async with conn.pipeline():
                await conn.execute("BEGIN")
                for step in firsts:
                    if isinstance(step, Returned):  # a plan with nothing to write
                        cursors.append(None)
                        continue
                    cur = conn.cursor()
                    if step.many:
                        await cur.executemany(step.sql, step.params)
                    else:
                        await cur.execute(step.sql, step.params)
                    cursors.append(cur)
                await conn.execute("COMMIT")
        except BaseException:
            from psycopg.pq import TransactionStatus

            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")  # the aborted group writes nothing
            raise
        outcomes: list[Result | Returned[Any]] = []
        for step, sent in zip(firsts, cursors, strict=True):
            if sent is None or isinstance(step, Returned):
                outcomes.append(step)  # type: ignore[arg-type]
                continue
            rows = await sent.fetchall() if sent.description is not None else []
            outcomes.append(Result(rows, sent.rowcount))
        return outcomes

    async def _finish(
        self,
        conn: psycopg.AsyncConnection[Any],
        group: list[_Request],
        plans: list[Plan[Any]],
        outcomes: list[Result | Returned[Any]],
    ) -> list[_Request]:
        """Feed each committed plan its result, run what it asks next in autocommit and
        answer its caller; the requests whose later statements failed, to run again."""
        again: list[_Request] = []
        for request, steps, outcome in zip(group, plans, outcomes, strict=True):
            try:
                step = outcome if isinstance(outcome, Returned) else advance(steps, outcome)
                value = await self._drive(conn, steps, step, True)
            except Exception:
                again.append(request)
            else:
                _answer(request, value, ok=True)
            finally:
                steps.close()
        return again

    async def _run_alone(self, requests: list[_Request]) -> None:
        for request in requests:
            if request.future.done():
                continue
            try:
                value = await self._alone(request.plan)
            except Exception as exc:
                _answer(request, exc)
            else:
                _answer(request, value, ok=True)

    async def drain(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the groups in flight to be answered."""
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.wait({sender}, timeout=seconds)


def _answer(request: _Request, value: Any, ok: bool = False) -> None:
    answer(request.future, value, ok)
