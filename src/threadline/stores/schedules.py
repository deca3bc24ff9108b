"""Schedules kept beside the threads: what to launch on which cron ticks, and which ticks
have fired.

Like API keys (`keys.py`), schedules live in the same database as the threads (same
connections, queries written once for SQLite and PostgreSQL) without being part of the
`Store` contract; `threadline.stores.schedule_store(store)` gives the one beside a store.

Invariants, for every implementation (tests/stores/test_schedules.py runs them on each):

* A name is unique among live schedules; adding a second raises `StoreError`.
* `fired_through` only grows. `claim(schedule, tick)` moves it to `tick` and records the
  firing in one transaction, and only if the schedule is not paused and `fired_through`
  is before `tick`: of any number of racing claims for one tick (workers on many
  machines) exactly one returns True, and a claim for an older tick than one already
  fired returns False. The firing's primary key (schedule, tick) is the unique key that
  makes the insert insert-or-nothing even if `fired_through` were ever moved back.
* Pausing stops claims at once; resuming moves `fired_through` to the resume time, so
  the ticks that passed while paused never fire (not even with `missed="catch-up"`).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ..errors import StoreError
from .dialect import Plan, PlanRunner, Query, Tx, insert_new, select, select_one, stored_time
from .rows import Columns

__all__ = [
    "Firing",
    "MemoryScheduleStore",
    "Missed",
    "SQLScheduleStore",
    "Schedule",
    "ScheduleStore",
]

Missed = Literal["skip", "catch-up"]
"""What a schedule does about ticks that passed while no worker ran (see `schedules.py`)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule.

    Attributes:
        id: `sch_` + hex; the key its firings are recorded under (a schedule removed and
            added again under the same name is a new schedule with new firings).
        name: unique, what people type (`threadline schedules pause NAME`).
        agent: the agent each firing launches.
        message: the first user message of each firing's thread.
        cron: the cron expression (5 fields, or 6 with seconds last).
        timezone: the IANA zone the expression is read in (`Europe/Paris`).
        missed: `skip` or `catch-up` (see `threadline.schedules`).
        destination: the channel each firing's final answer goes to (None: nowhere
            beyond the thread itself).
        paused: no tick fires while set.
        created_at: when it was added.
        fired_through: every tick up to this time is settled (fired, skipped or paused
            over); only later ticks can fire.
    """

    id: str
    name: str
    agent: str
    message: str
    cron: str
    timezone: str = "UTC"
    missed: Missed = "skip"
    destination: str | None = None
    paused: bool = False
    created_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    fired_through: datetime = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Firing:
    """One tick of a schedule that fired: the thread it launched."""

    schedule_id: str
    tick: datetime
    thread_id: str
    fired_at: datetime


class ScheduleStore(Protocol):
    """Where schedules and their firings live."""

    async def add(self, schedule: Schedule) -> None:
        """Store a new schedule. Raises StoreError if its name or id is taken."""

    async def get(self, name: str) -> Schedule | None:
        """The schedule named `name`, or None."""

    async def list(self) -> Sequence[Schedule]:
        """Every schedule, by name."""

    async def remove(self, name: str) -> bool:
        """Delete a schedule and its firings (threads stay). False if there was none."""

    async def set_paused(self, name: str, paused: bool, *, at: datetime) -> bool:
        """Pause or resume; resuming settles every tick up to `at`. False: no such
        schedule, or it already was in that state."""

    async def claim(
        self, schedule_id: str, tick: datetime, thread_id: str, *, at: datetime
    ) -> bool:
        """Fire `tick` (see the module docstring): True for exactly one caller per tick."""

    async def firings(self, schedule_id: str, *, limit: int = 20) -> Sequence[Firing]:
        """The latest firings of a schedule, newest first."""


class MemoryScheduleStore:
    """Schedules in dicts (tests, `memory://`); one lock makes claims atomic."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._firings: dict[tuple[str, datetime], Firing] = {}
        self._lock = asyncio.Lock()

    async def add(self, schedule: Schedule) -> None:
        async with self._lock:
            if schedule.name in self._schedules or any(
                s.id == schedule.id for s in self._schedules.values()
            ):
                raise StoreError(f"a schedule named {schedule.name!r} already exists")
            self._schedules[schedule.name] = schedule

    async def get(self, name: str) -> Schedule | None:
        return self._schedules.get(name)

    async def list(self) -> builtins.list[Schedule]:
        return [self._schedules[n] for n in sorted(self._schedules)]

    async def remove(self, name: str) -> bool:
        async with self._lock:
            gone = self._schedules.pop(name, None)
            if gone is None:
                return False
            for key in [k for k in self._firings if k[0] == gone.id]:
                del self._firings[key]
            return True

    async def set_paused(self, name: str, paused: bool, *, at: datetime) -> bool:
        async with self._lock:
            found = self._schedules.get(name)
            if found is None or found.paused == paused:
                return False
            through = found.fired_through if paused else max(found.fired_through, at)
            self._schedules[name] = replace(found, paused=paused, fired_through=through)
            return True

    async def claim(
        self, schedule_id: str, tick: datetime, thread_id: str, *, at: datetime
    ) -> bool:
        async with self._lock:
            found = next((s for s in self._schedules.values() if s.id == schedule_id), None)
            if found is None or found.paused or found.fired_through >= tick:
                return False
            if (schedule_id, tick) in self._firings:
                return False
            self._schedules[found.name] = replace(found, fired_through=tick)
            self._firings[schedule_id, tick] = Firing(schedule_id, tick, thread_id, at)
            return True

    async def firings(self, schedule_id: str, *, limit: int = 20) -> builtins.list[Firing]:
        mine = [f for (sid, _), f in self._firings.items() if sid == schedule_id]
        return sorted(mine, key=lambda f: f.tick, reverse=True)[:limit]


class SQLScheduleStore:
    """Schedules in the `schedules` and `schedule_firings` tables of a SQL store."""

    def __init__(self, store: PlanRunner) -> None:
        self._store = store

    def _args(self, **values: Any) -> dict[str, Any]:
        d = self._store.dialect
        return {
            k: d.time(v.astimezone(UTC)) if isinstance(v, datetime) else v
            for k, v in values.items()
        }

    async def add(self, schedule: Schedule) -> None:
        args = self._args(**{**asdict(schedule), "paused": int(schedule.paused)})
        exists = f"a schedule named {schedule.name!r} already exists"
        await insert_new(self._store, _INSERT, args, exists)

    async def get(self, name: str) -> Schedule | None:
        return await select_one(
            self._store, f"{_SELECT} WHERE name = :name", {"name": name}, _SCHEDULE.read
        )

    async def list(self) -> builtins.list[Schedule]:
        return await select(self._store, f"{_SELECT} ORDER BY name", {}, _SCHEDULE.read)

    async def remove(self, name: str) -> bool:
        d = self._store.dialect

        def plan() -> Plan[bool]:
            found = yield Query(
                d.sql("SELECT id FROM schedules WHERE name = :name"), {"name": name}
            )
            if not found.rows:
                return False
            sid = {"id": found.rows[0][0]}
            # Firings first: foreign keys cascade, but not on connections that turned them off.
            yield Query(d.sql("DELETE FROM schedule_firings WHERE schedule_id = :id"), sid)
            gone = yield Query(d.sql("DELETE FROM schedules WHERE id = :id"), sid)
            return gone.rowcount == 1

        return await self._store.run(plan, Tx.ATOMIC)

    async def set_paused(self, name: str, paused: bool, *, at: datetime) -> bool:
        d = self._store.dialect
        args = self._args(name=name, paused=int(paused), at=at)
        sql = d.sql(_PAUSE if paused else _RESUME)

        def plan() -> Plan[bool]:
            return (yield Query(sql, args)).rowcount == 1

        return await self._store.run(plan, Tx.WRITE)

    async def claim(
        self, schedule_id: str, tick: datetime, thread_id: str, *, at: datetime
    ) -> bool:
        d = self._store.dialect
        args = self._args(id=schedule_id, tick=tick, thread=thread_id, at=at)

        def plan() -> Plan[bool]:
            # The conditional UPDATE is the gate: PostgreSQL re-checks its WHERE after
            # waiting for a racing claim's row lock (SQLite serialises writers), so one
            # claim per tick moves `fired_through`; the others change nothing.
            moved = yield Query(d.sql(_ADVANCE), args)
            if moved.rowcount != 1:
                return False
            inserted = yield Query(d.sql(_FIRED), args)
            return inserted.rowcount == 1

        return await self._store.run(plan, Tx.ATOMIC)

    async def firings(self, schedule_id: str, *, limit: int = 20) -> builtins.list[Firing]:
        args = {"id": schedule_id, "limit": limit}
        return await select(
            self._store,
            _FIRINGS,
            args,
            lambda r: Firing(r[0], stored_time(r[1]), r[2], stored_time(r[3])),
        )


def _missed(stored: str) -> Missed:
    return "catch-up" if stored == "catch-up" else "skip"


_SCHEDULE = Columns(
    Schedule,
    "id, name, agent, message, cron, timezone, missed, destination, paused, created_at, "
    "fired_through",
    missed=_missed,
    paused=bool,
    created_at=stored_time,
    fired_through=stored_time,
)
_SELECT = f"SELECT {_SCHEDULE.names} FROM schedules"
_INSERT = (
    f"INSERT INTO schedules ({_SCHEDULE.names}) VALUES (:id, :name, :agent, :message, :cron, "
    ":timezone, :missed, :destination, :paused, :created_at, :fired_through)"
)
_PAUSE = "UPDATE schedules SET paused = 1 WHERE name = :name AND paused = 0"
_RESUME = (
    "UPDATE schedules SET paused = 0, fired_through = CASE WHEN fired_through < :at "
    "THEN :at ELSE fired_through END WHERE name = :name AND paused = 1"
)
_ADVANCE = (
    "UPDATE schedules SET fired_through = :tick "
    "WHERE id = :id AND paused = 0 AND fired_through < :tick"
)
_FIRED = (
    "INSERT INTO schedule_firings (schedule_id, tick, thread_id, fired_at) "
    "VALUES (:id, :tick, :thread, :at) ON CONFLICT (schedule_id, tick) DO NOTHING"
)
_FIRINGS = (
    "SELECT schedule_id, tick, thread_id, fired_at FROM schedule_firings "
    "WHERE schedule_id = :id ORDER BY tick DESC LIMIT :limit"
)
