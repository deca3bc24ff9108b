"""The work queue's queries (`Store.lease`, `renew`, `release`, `break_lease`), written once
for both SQL stores over their dialect; `SQLStore` (`sql.py`) extends them with everything
else.

* A lease is one `UPDATE ... FROM (SELECT ...)`: PostgreSQL's workers skip rows another is
  leasing (`SKIP LOCKED`); SQLite's single writer needs no skipping.
* Every lease bumps the thread's fencing token; `renew` and `release` match owner and token,
  so a holder whose lease lapsed and was taken over can neither extend nor drop the new one.
* A thread released (or its lease broken) while still runnable is announced on the NOTIFY
  channel, if the database has one, so an idle worker takes it at once.
"""

from __future__ import annotations

import builtins
from abc import abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from ..errors import LeaseLost
from ..events import Status, utcnow
from .base import Lease, LeaseQuery, Store
from .dialect import Dialect, Plan, Query, Tx, stored_time
from .rows import row_of

__all__ = ["SQLLeases"]

T = TypeVar("T")


class SQLLeases(Store):
    """The leases of a store on a SQL database, and what every query of it runs through:
    `run` (a subclass's connections) and the NOTIFY `channel`."""

    dialect: Dialect

    @abstractmethod
    async def run(self, plan: Callable[[], Plan[T]], tx: Tx, *, append_to: str | None = None) -> T:
        """Run a fresh `plan()` to its end and return its value.

        `append_to`: the plan is an append to this thread, a short write on the latency
        path; a driver may run it inline, or group it with other threads' appends.
        """

    channel: str | None = None
    """The NOTIFY channel telling idle workers a thread became runnable (None: they poll)."""

    def _wake(self, thread_id: str) -> Query | None:
        """A statement telling idle workers `thread_id` became runnable (None: polling)."""
        if self.channel is None:
            return None
        sql = self.dialect.sql("SELECT pg_notify(:channel, :id)")
        return Query(sql, {"channel": self.channel, "id": thread_id})

    def _announce(self, thread_id: str) -> Plan[None]:
        """The `_wake` statement, if this database has one, inside the current plan."""
        wake = self._wake(thread_id)
        if wake is not None:
            yield wake

    async def _lease(self, query: LeaseQuery) -> builtins.list[Lease]:
        owner, ttl = query.owner, query.ttl
        d = self.dialect
        filters = ""
        args: dict[str, Any] = {"owner": owner, "ttl": ttl, "limit": query.limit}
        filtered = (("agent", "agents", query.agents), ("id", "ids", query.thread_ids))
        for column, name, values in filtered:
            if values is not None:
                condition, bound = d.any_of(column, name, values)
                filters += f" AND {condition}"
                args |= bound
        prev = ", prev" if d.returning_from else ""
        sql = d.sql(_LEASE.replace("{filters}", filters).replace("{prev}", prev))
        lapsed_sql = d.sql(_LAPSED.replace("{filters}", filters))

        def plan() -> Plan[builtins.list[Lease]]:
            now = utcnow()
            times = {"now": d.time(now), "expires": d.time(now + timedelta(seconds=ttl))}
            lapsed: dict[str, str] = {}
            if not d.returning_from:
                # SQLite cannot return the old holder from `UPDATE ... FROM`: read the
                # lapsed holders first, exact because its one writer holds the database's
                # write lock for the whole transaction. A lease replacing one is a takeover.
                found = (yield Query(lapsed_sql, args | times)).rows
                lapsed = {str(r[0]): str(r[1]) for r in found}
            rows = (yield Query(sql, args | times)).rows
            return [
                Lease(
                    r[0],
                    owner,
                    stored_time(r[1]),
                    int(r[2]),
                    # PostgreSQL: the holder of the very row version this UPDATE locked
                    taken_over_from=(r[3] if len(r) > 3 else None) or lapsed.get(r[0]),
                )
                for r in rows
            ]

        return await self.run(plan, Tx.WRITE)

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        d = self.dialect

        def plan() -> Plan[Lease]:
            now = utcnow()
            args = {
                "id": lease.thread_id,
                "owner": lease.owner,
                "token": lease.token,
                "ttl": ttl,
                "now": d.time(now),
                "expires": d.time(now + timedelta(seconds=ttl)),
            }
            found = yield Query(d.sql(_RENEW), args)
            if not found.rows:
                raise LeaseLost(lease.thread_id, lease.owner)
            return Lease(lease.thread_id, lease.owner, stored_time(found.rows[0][0]), lease.token)

        return await self.run(plan, Tx.WRITE)

    async def release(self, lease: Lease) -> bool:
        d = self.dialect
        args = {"id": lease.thread_id, "owner": lease.owner, "token": lease.token}

        def plan() -> Plan[bool]:
            found = yield Query(d.sql(_RELEASE), args)
            if not found.rows:
                return False
            if found.rows[0][0] == Status.RUNNING.value:
                # Released while still runnable (shutdown, step limit): wake another worker.
                yield from self._announce(lease.thread_id)
            return True

        return await self.run(plan, Tx.WRITE)

    async def break_lease(self, thread_id: str) -> None:
        d = self.dialect

        def plan() -> Plan[None]:
            found = yield Query(d.sql(_BREAK_LEASE), {"id": thread_id})
            if row_of(thread_id, found)[0] == Status.RUNNING.value:
                yield from self._announce(thread_id)

        await self.run(plan, Tx.WRITE)


_RUNNABLE = "(status = 'running' OR (status = 'waiting' AND due_at <= {now}))"
_LEASE = (
    "UPDATE threads AS t SET lease_owner = :owner, lease_expires = {expires}, "
    "lease_token = t.lease_token + 1 "
    f"FROM (SELECT id AS leased, lease_owner AS prev FROM threads WHERE {_RUNNABLE} "
    "AND (lease_expires IS NULL OR lease_expires <= {now}){filters} "
    "ORDER BY updated_at LIMIT :limit{skip_locked}) AS c "
    "WHERE t.id = c.leased RETURNING id, lease_expires, lease_token{prev}"
)
_LAPSED = (
    f"SELECT id, lease_owner FROM threads WHERE {_RUNNABLE} "
    "AND lease_owner IS NOT NULL AND lease_expires <= {now}{filters}"
)
_RENEW = (
    "UPDATE threads SET lease_expires = {expires} WHERE id = :id AND lease_owner = :owner "
    "AND lease_token = :token AND lease_expires > {now} RETURNING lease_expires"
)
_RELEASE = (
    "UPDATE threads SET lease_owner = NULL, lease_expires = NULL "
    "WHERE id = :id AND lease_owner = :owner AND lease_token = :token RETURNING status"
)
_BREAK_LEASE = (
    "UPDATE threads SET lease_owner = NULL, lease_expires = NULL, "
    "lease_token = lease_token + 1 WHERE id = :id RETURNING status"
)
