"""A known-state append as data, and one thread's queued ones merged into one write.

A known-state append (`SQLStore._append_known`: the store knows the thread's state at the
expected seq) is an `UPDATE` of the thread's row, guarded by its checks (the row at the
expected seq, the status the store believes, the lease held), and the `INSERT` of its
events. `KnownAppend` holds those two statements and what the checks expect.

Appends of one thread queued behind its `COMMIT` in flight (SQLite pipelining,
`behind.py`) run in one transaction. When each starts where the one before ends, under
the same lease, `merged` makes them one write: one `UPDATE` with the last one's projection
and the first one's checks, and one `INSERT` of all their events, instead of an `UPDATE`
and an `INSERT` each. The rows it leaves are the ones the appends would leave one after
the other (inside the transaction each `UPDATE` overwrites the one before, and the checks
of the second and later find the row as the one before left it, which is what they
expect), and it is refused exactly when the first would be: then nothing of the
transaction stays, as when any of its appends is refused (`behind.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .base import Lease
from .dialect import Dialect, Query
from .rows import insert_statement, joined_rows

__all__ = ["KNOWN_UPDATE", "LEASE_HELD", "SET_STATE", "SET_STATE_IF", "KnownAppend", "merged"]

SET_STATE = (
    "UPDATE threads SET state = :state{json}, status = :status, next_seq = :next_seq, "
    "updated_at = {now}, due_at = :due_at WHERE id = :id"
)
LEASE_HELD = (
    " AND lease_owner = :owner AND lease_token = :token AND lease_expires IS NOT NULL "
    "AND lease_expires > {now}"
)
SET_STATE_IF = SET_STATE + " AND next_seq = :expected{checks}"
_SET_STATE_KEPT = (
    "UPDATE threads SET state = :state{json}, next_seq = :next_seq, updated_at = {now}, "
    "due_at = :due_at WHERE id = :id AND next_seq = :expected AND status = :status{checks}"
)
"""A known-state append's `UPDATE` when the status stays: the indexed `status` column is
not written (about 13,000 instructions of SQLite's an append), only checked."""
KNOWN_UPDATE = {  # (a lease held, the status kept): made once, not an append
    (False, False): SET_STATE_IF.replace("{checks}", ""),
    (True, False): SET_STATE_IF.replace("{checks}", LEASE_HELD),
    (False, True): _SET_STATE_KEPT.replace("{checks}", ""),
    (True, True): _SET_STATE_KEPT.replace("{checks}", LEASE_HELD),
}
ROWS_A_STATEMENT = 200
"""Events in one `INSERT` at most: 4 parameters a row stay below 999, the limit of SQLite
builds before 3.32."""


@dataclass(slots=True)
class KnownAppend:
    """A known-state append's statements: `update` (its parameters the projection after
    it and its checks' values; `now` set when it runs) and `insert`, its `events` rows
    (None: fused into `update`, PostgreSQL). `expected` and `was`: the row's seq and
    status the append was built on; `lease`: the lease it checks, if any."""

    thread_id: str
    expected: int
    was: str
    lease: Lease | None
    update: Query
    insert: Query | None
    events: int

    @property
    def params(self) -> dict[str, Any]:
        """The `UPDATE`'s parameters."""
        return self.update.params  # type: ignore[return-value]

    @property
    def kept(self) -> bool:
        """Whether the `UPDATE` checks the status rather than writing it (SQLite's, when
        the append leaves the status as it was)."""
        return self.insert is not None and self.params["status"] == self.was


def merged(parts: list[KnownAppend | None], dialect: Dialect) -> KnownAppend | None:
    """`parts` (queued in this order, in one transaction) as one append, or None when
    they cannot be: one is not a known-state append, one does not start where the one
    before ends, their leases differ, or their events are too many for one `INSERT`."""
    known = [part for part in parts if part is not None]
    if len(known) < 2 or len(known) != len(parts):
        return None
    for before, part in pairwise(known):
        if (
            part.insert is None
            or part.insert.many
            or part.expected != before.params["next_seq"]
            or _lease_key(part.lease) != _lease_key(before.lease)
            or part.thread_id != before.thread_id
        ):
            return None
    first, last = known[0], known[-1]
    if first.insert is None or first.insert.many:
        return None
    events = sum(part.events for part in known)
    if events > ROWS_A_STATEMENT:
        return None
    params = dict(last.params)
    params["expected"] = first.expected
    kept = params["status"] == first.was
    update = Query(dialect.sql(KNOWN_UPDATE[first.lease is not None, kept]), params)
    rows = joined_rows(first.thread_id, [(part.insert.params, part.events) for part in known])  # type: ignore[union-attr]
    insert = Query(dialect.sql(insert_statement(events)), rows)
    return KnownAppend(
        first.thread_id, first.expected, first.was, first.lease, update, insert, events
    )


def _lease_key(lease: Lease | None) -> tuple[str, int] | None:
    return None if lease is None else (lease.owner, lease.token)
