"""Rate-limit counters kept beside the threads, shared by every process on the store.

Two shapes, each a row (or a few) per limit key, changed by single conditional statements
(PostgreSQL's row locks with `SKIP LOCKED`, SQLite's one writer), so any number of workers
on any number of machines draw from the same counters:

* **Slots** (`calls` per `per` seconds): a key has `capacity` slots, each with `free_at`,
  the time from which it may be taken again. Taking one is one `UPDATE` of a slot whose
  `free_at` has passed; it is held (`free_at` far ahead) while its call is in flight, and
  freed when the call ends with `free_at = end + per`. So every call counts from when it
  was let through until `per` after it ended: of any `capacity + 1` calls, the last one
  starts at least `per` after the first one ended, and a provider sees at most `capacity`
  calls in any window of `per` however late each request reaches it. A process that dies
  mid-call leaves its slot held until the hold lapses (`per + hold` after it was taken).
  A slot is freed only by the call holding it (`free_slot` matches the `free_at` its take
  set, `Taken.held_until`): a call that outlasted its hold, whose slot another call took
  since, cannot free the slot under that other call.
  A refused take gets a *ticket*: a time to come back, from a queue row per key (slot -1)
  whose tail moves `per / capacity` later with each ticket, so callers held back come
  back one by one as slots free instead of all at once.
* **Buckets** (tokens per interval): a token bucket with `level` and `at`; a take refills
  it for the time since `at` (up to the capacity) and takes the cost in one `UPDATE`, only
  if enough is there. What a call really used is settled afterwards (`settle`), so a
  bucket can go below zero and hold the next calls back.

Times are seconds since the epoch from the callers' clocks (`Runtime.clock`): the
processes sharing a store must agree on the time (NTP), as leases already need.
`threadline.stores.rate_limit_store(store)` gives the counters beside a store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .dialect import Plan, PlanRunner, Query, Result, Tx

__all__ = ["MemoryRateLimits", "RateLimitStore", "SQLRateLimits", "Taken"]

_RETRIES = 3
"""Takes tried again at once when every free slot was being taken by someone else."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What a take came to: `slot` (slots; -1 for a bucket) when granted, held until
    `held_until` at most, else `retry_at`, the earliest time the take could succeed."""

    granted: bool
    slot: int = -1
    retry_at: float = 0.0
    held_until: float = 0.0


class RateLimitStore(Protocol):
    """Shared rate-limit counters (see the module docstring)."""

    async def take_slot(
        self, key: str, capacity: int, *, now: float, per: float, hold: float
    ) -> Taken:
        """Take a slot of `key` free at `now`, held until `now + per + hold` (or
        `free_slot`); refused, a ticket: the time to come back."""

    async def free_slot(self, key: str, slot: int, free_at: float, *, held_until: float) -> None:
        """Set a taken slot free from `free_at` (its call's end plus the interval), if it is
        still held by the take that set `held_until` (else it lapsed: nothing changes)."""

    async def take_tokens(
        self, key: str, capacity: float, per_second: float, cost: float, *, now: float
    ) -> Taken:
        """Take `cost` from `key`'s bucket (refilled at `per_second` up to `capacity`);
        a cost above the capacity is taken from a full bucket."""

    async def settle(self, key: str, extra: float) -> None:
        """Take `extra` more from `key`'s bucket (negative: give back)."""


class MemoryRateLimits:
    """The counters in dicts, for one process (tests, `memory://`)."""

    def __init__(self) -> None:
        self._slots: dict[str, list[float]] = {}
        self._tails: dict[str, float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = asyncio.Lock()

    async def take_slot(
        self, key: str, capacity: int, *, now: float, per: float, hold: float
    ) -> Taken:
        async with self._lock:
            slots = self._slots.setdefault(key, [])
            slots.extend([0.0] * (capacity - len(slots)))
            free = min(range(capacity), key=lambda i: slots[i])
            if slots[free] > now:
                ticket = max(self._tails.get(key, 0.0), min(slots[free], now + per))
                self._tails[key] = ticket + per / capacity
                return Taken(False, retry_at=ticket)
            slots[free] = now + per + hold
            return Taken(True, slot=free, held_until=slots[free])

    async def free_slot(self, key: str, slot: int, free_at: float, *, held_until: float) -> None:
        async with self._lock:
            slots = self._slots[key]
            if slots[slot] == held_until:
                slots[slot] = free_at

    async def take_tokens(
        self, key: str, capacity: float, per_second: float, cost: float, *, now: float
    ) -> Taken:
        async with self._lock:
            level, at = self._buckets.get(key, (capacity, now))
            have = min(capacity, level + max(0.0, now - at) * per_second)
            need = min(cost, capacity)
            if have < need:
                return Taken(False, retry_at=now + (need - have) / per_second)
            self._buckets[key] = (have - cost, now)
            return Taken(True)

    async def settle(self, key: str, extra: float) -> None:
        async with self._lock:
            level, at = self._buckets[key]
            self._buckets[key] = (level - extra, at)


class SQLRateLimits:
    """The counters in the `rate_limit_slots` and `rate_limit_buckets` tables."""

    def __init__(self, store: PlanRunner) -> None:
        self._store = store
        self._made: set[tuple[str, int]] = set()
        """Keys (and capacities) whose rows this process has made sure exist."""

    async def _ensure(self, key: str, capacity: int, query: Query) -> None:
        if (key, capacity) in self._made:
            return

        def plan() -> Plan[None]:
            yield query

        await self._store.run(plan, Tx.WRITE)
        self._made.add((key, capacity))

    async def take_slot(
        self, key: str, capacity: int, *, now: float, per: float, hold: float
    ) -> Taken:
        d = self._store.dialect
        rows = [{"key": key, "slot": i} for i in range(-1, capacity)]  # -1: the queue
        await self._ensure(key, capacity, Query(d.sql(_NEW_SLOT), rows, many=True))
        held = now + per + hold
        args = {"key": key, "n": capacity, "t": now, "hold": held}
        take, earliest, queue = d.sql(_TAKE_SLOT), d.sql(_EARLIEST_SLOT), d.sql(_TICKET)
        step = per / capacity

        def plan() -> Plan[Taken]:
            soonest = now
            for _ in range(_RETRIES):
                got = yield Query(take, args)
                if got.rows:
                    return Taken(True, slot=int(got.rows[0][0]), held_until=held)
                found = yield Query(earliest, args)
                # A slot in flight frees `per` after its call ends: never later than
                # `now + per` if the call ended now.
                soonest = min(float(_first(found, now)), now + per)
                if soonest > now:  # else: free slots were being taken; try again
                    break
            tail = yield Query(queue, {"key": key, "soonest": soonest, "step": step})
            return Taken(False, retry_at=float(_first(tail, soonest + step)) - step)

        return await self._store.run(plan, Tx.WRITE)

    async def free_slot(self, key: str, slot: int, free_at: float, *, held_until: float) -> None:
        args = {"key": key, "slot": slot, "free": free_at, "held": held_until}
        query = Query(self._store.dialect.sql(_FREE_SLOT), args)
        await self._write(query)

    async def take_tokens(
        self, key: str, capacity: float, per_second: float, cost: float, *, now: float
    ) -> Taken:
        d = self._store.dialect
        new = Query(d.sql(_NEW_BUCKET), {"key": key, "cap": capacity, "t": now})
        await self._ensure(key, -1, new)
        need = min(cost, capacity)
        args = {"key": key, "cap": float(capacity), "rate": per_second, "t": now}
        args |= {"cost": float(cost), "need": float(need)}
        take, read = d.sql(_TAKE_TOKENS), d.sql(_READ_BUCKET)

        def plan() -> Plan[Taken]:
            got = yield Query(take, args)
            if got.rowcount == 1:
                return Taken(True)
            level, at = (yield Query(read, args)).rows[0]
            have = min(capacity, float(level) + max(0.0, now - float(at)) * per_second)
            return Taken(False, retry_at=now + max(0.0, need - have) / per_second)

        return await self._store.run(plan, Tx.WRITE)

    async def settle(self, key: str, extra: float) -> None:
        await self._write(Query(self._store.dialect.sql(_SETTLE), {"key": key, "extra": extra}))

    async def _write(self, query: Query) -> None:
        def plan() -> Plan[None]:
            yield query

        await self._store.run(plan, Tx.WRITE)


def _first(result: Result, default: float) -> Any:
    row: Sequence[Any] | None = result.rows[0] if result.rows else None
    return default if row is None or row[0] is None else row[0]


_NEW_SLOT = (
    "INSERT INTO rate_limit_slots (key, slot, free_at) VALUES (:key, :slot, 0) "
    "ON CONFLICT (key, slot) DO NOTHING"
)
# The sub-select picks the slot free longest; PostgreSQL locks it (skipping slots another
# transaction is taking) and re-checks `free_at` on the row's newest version.
_TAKE_SLOT = (
    "UPDATE rate_limit_slots SET free_at = :hold WHERE key = :key AND slot = ("
    "SELECT slot FROM rate_limit_slots WHERE key = :key AND slot >= 0 AND slot < :n "
    "AND free_at <= :t ORDER BY free_at LIMIT 1{skip_locked}) RETURNING slot"
)
_EARLIEST_SLOT = (
    "SELECT MIN(free_at) FROM rate_limit_slots WHERE key = :key AND slot >= 0 AND slot < :n"
)
# The queue's tail moves one step past the later of itself and the soonest free slot; the
# ticket is where it was (PostgreSQL returns the new value, so the step is taken off).
_TICKET = (
    "UPDATE rate_limit_slots SET free_at = (CASE WHEN free_at > :soonest THEN free_at "
    "ELSE :soonest END) + :step WHERE key = :key AND slot = -1 RETURNING free_at"
)
_FREE_SLOT = (
    "UPDATE rate_limit_slots SET free_at = :free "
    "WHERE key = :key AND slot = :slot AND free_at = :held"
)
_NEW_BUCKET = (
    "INSERT INTO rate_limit_buckets (key, level, at) VALUES (:key, :cap, :t) "
    "ON CONFLICT (key) DO NOTHING"
)
_REFILLED = (
    "(CASE WHEN level + (:t - at) * :rate > :cap THEN :cap "
    "WHEN :t < at THEN level ELSE level + (:t - at) * :rate END)"
)
_TAKE_TOKENS = (
    f"UPDATE rate_limit_buckets SET level = {_REFILLED} - :cost, at = :t "
    f"WHERE key = :key AND {_REFILLED} >= :need"
)
_READ_BUCKET = "SELECT level, at FROM rate_limit_buckets WHERE key = :key"
_SETTLE = "UPDATE rate_limit_buckets SET level = level - :extra WHERE key = :key"
