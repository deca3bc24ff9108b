"""Cron schedules (factor 11): launch a thread on each tick, exactly once across workers.

    threadline schedules add standup --cron "0 9 * * 1-5" --tz Europe/Paris \\
        --agent app.py:agent --message "Post the stand-up summary" --to slack

A schedule is stored beside the threads (`stores/schedules.py`). Every worker, and every
server that advances threads, runs a `Scheduler` pass about once a second: it reads the
schedules of the agents it serves and fires the ticks that are due. Firing a tick is a
*claim* (`ScheduleStore.claim`) followed by an ordinary launch with `channel="cron"`:

* Exactly once per tick, however many workers race: the claim moves the schedule's
  `fired_through` forward in one conditional write and records the firing under the
  unique key (schedule, tick); only the one claim that wrote launches. The thread's id is
  derived from the schedule and the tick, so even a relaunch after a crash between claim
  and launch (see `Scheduler.recover`) cannot make a second thread for the tick.
* Missed ticks: a tick up to `grace` (60 s) old fires whatever the policy (workers poll;
  a busy machine is a little late). Older ticks passed while no worker ran. With
  `missed="skip"` (the default) they never fire; with `missed="catch-up"` the schedule
  fires once for them, for the most recent missed tick only (a worker back after a
  week's outage runs the daily report once, not seven times). Ticks that passed while
  the schedule was paused never fire.
* Time zones: the expression is read in the schedule's IANA zone (`zoneinfo`), so
  `0 9 * * 1-5` in `Europe/Paris` is 09:00 Paris time in winter and in summer; the
  ticks are stored in UTC.
* Each firing's thread carries `metadata["schedule"]`, `["tick"]` and, when the schedule
  has one, `["reply_to"]`: the channel its final answer goes to.

Cron parsing is `croniter`'s (five fields, or six with seconds last: `* * * * * */2`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .channels.routing import parse_target
from .errors import ConfigError, StoreError, ThreadNotFound
from .events import Thread, utcnow
from .runtime import Runtime
from .stores import schedule_store
from .stores.schedules import Firing, Missed, Schedule, ScheduleStore
from .wire import ScheduleBody, ScheduleOut

__all__ = [
    "GRACE",
    "RECOVER_EVERY",
    "Scheduler",
    "check_cron",
    "check_zone",
    "due_ticks",
    "firing_thread_id",
    "keep_firing",
    "new_schedule",
    "next_tick",
    "schedule_from",
    "schedule_view",
    "scheduler_for",
    "view_of",
]

log = logging.getLogger("threadline.schedules")

GRACE = timedelta(seconds=60)
"""How late a tick may fire and still count as on time (not missed)."""
MAX_TICKS_PER_PASS = 120
"""Ticks one pass fires for one schedule (a per-second schedule after a pause of the
workers: the rest are missed ticks)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_cron(expression: str) -> str:
    """The expression, normalised (single spaces), if croniter reads it; else ConfigError."""
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(" ".join(fields)):
        raise ConfigError(
            f"cron expression {expression!r} is not valid: use five fields "
            '(minute hour day month weekday, e.g. "0 9 * * 1-5") or six with seconds last'
        )
    return " ".join(fields)


def check_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (`Europe/Paris`, `UTC`); ConfigError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}: use an IANA name like Europe/Paris"
        ) from None


def new_schedule(
    name: str,
    *,
    cron: str,
    agent: str,
    message: str,
    timezone: str = "UTC",
    missed: str = "skip",
    destination: str | None = None,
    now: datetime | None = None,
) -> Schedule:
    """A validated schedule whose first tick is the first one after `now`.

    Raises ConfigError naming the field that is wrong.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"schedule name {name!r}: 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if missed not in ("skip", "catch-up"):
        raise ConfigError(f"missed-tick policy {missed!r}: use skip or catch-up")
    if not agent.strip():
        raise ConfigError("a schedule needs an agent")
    if not message.strip():
        raise ConfigError("a schedule needs a message (the first message of each thread)")
    check_zone(timezone)
    if destination:
        parse_target(destination)  # `slack:#reports`, `email:ops@example.com`
    now = (now or utcnow()).astimezone(UTC)
    policy: Missed = "catch-up" if missed == "catch-up" else "skip"
    return Schedule(
        id=f"sch_{secrets.token_hex(8)}",
        name=name,
        agent=agent.strip(),
        message=message,
        cron=check_cron(cron),
        timezone=timezone,
        missed=policy,
        destination=destination or None,
        created_at=now,
        fired_through=now,
    )


def schedule_from(spec: ScheduleBody, *, now: datetime | None = None) -> Schedule:
    """`new_schedule` from the wire form (API body, CLI options). Raises ConfigError."""
    return new_schedule(
        spec.name,
        cron=spec.cron,
        agent=spec.agent,
        message=spec.message,
        timezone=spec.timezone,
        missed=spec.missed,
        destination=spec.to,
        now=now,
    )


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """The schedule's first tick strictly after `after`, in UTC."""
    zone = ZoneInfo(schedule.timezone)
    it = croniter(schedule.cron, after.astimezone(zone))
    found: datetime = it.get_next(datetime)
    return found.astimezone(UTC)


def due_ticks(schedule: Schedule, now: datetime, *, grace: timedelta = GRACE) -> list[datetime]:
    """The ticks to fire at `now`, oldest first (see the module docstring).

    Ticks after `fired_through` and at or before `now`: those at most `grace` old (the
    newest MAX_TICKS_PER_PASS of them), plus, with `catch-up`, the newest older one.
    """
    if schedule.paused:
        return []
    zone = ZoneInfo(schedule.timezone)
    # Walk back from a second after `now` (croniter works in whole seconds), so a tick
    # exactly at `now` is included; a tick in that second after `now` is not yet due.
    it = croniter(schedule.cron, (now + timedelta(seconds=1)).astimezone(zone))
    on_time: list[datetime] = []
    missed: datetime | None = None
    while len(on_time) < MAX_TICKS_PER_PASS:
        tick = it.get_prev(datetime).astimezone(UTC)
        if tick > now:
            continue
        if tick <= schedule.fired_through:
            break
        if now - tick > grace:
            missed = tick
            break
        on_time.append(tick)
    ticks = list(reversed(on_time))
    if missed is not None and schedule.missed == "catch-up":
        ticks.insert(0, missed)
    return ticks


def firing_thread_id(schedule: Schedule, tick: datetime) -> str:
    """The id of the thread a tick launches: time-ordered like `new_thread_id` (by the
    tick) and the same for every worker, so a tick can never make two threads."""
    digest = hashlib.sha256(f"{schedule.id}|{tick.astimezone(UTC).isoformat()}".encode())
    return f"th_{int(tick.timestamp() * 1000):012x}{digest.hexdigest()[:16]}"


def schedule_view(schedule: Schedule, latest: Firing | None, *, now: datetime) -> ScheduleOut:
    """The wire view of a schedule: its next tick after `now` and its latest firing."""
    stored = asdict(schedule)
    stored["to"] = stored.pop("destination")
    return ScheduleOut(
        **stored,
        next_tick=None
        if schedule.paused
        else next_tick(schedule, max(now, schedule.fired_through)),
        last_tick=latest.tick if latest else None,
        last_thread_id=latest.thread_id if latest else None,
    )


async def view_of(schedules: ScheduleStore, schedule: Schedule, *, now: datetime) -> ScheduleOut:
    """`schedule_view` with the schedule's latest firing read from `schedules`."""
    latest = await schedules.firings(schedule.id, limit=1)
    return schedule_view(schedule, latest[0] if latest else None, now=now)


@dataclass
class SchedulerStats:
    """What one scheduler did since it started."""

    fired: int = 0
    """Ticks this process claimed and launched."""
    lost: int = 0
    """Claims another process won first (the race working as intended)."""
    failed: int = 0
    """Launches that raised after their claim (relaunched by `recover`)."""
    recovered: int = 0


@dataclass
class Scheduler:
    """Fires the due ticks of the schedules of a runtime's agents.

    Args:
        runtime: launches the threads; only schedules of its agents are fired here.
        schedules: where the schedules live (beside the runtime's store).
        grace: how late a tick may be and still fire (see the module docstring).
        clock: the current time (tests inject one); default the runtime's clock.
    """

    runtime: Runtime
    schedules: ScheduleStore
    grace: timedelta = GRACE
    clock: Callable[[], datetime] | None = None
    stats: SchedulerStats = field(default_factory=SchedulerStats)
    next_due: datetime | None = None
    """After a pass: the earliest upcoming tick among the schedules it saw."""

    def now(self) -> datetime:
        return (self.clock or self.runtime.clock)()

    async def fire_due(self) -> list[Thread]:
        """One pass: claim and launch every due tick of the served schedules."""
        now = self.now()
        fired: list[Thread] = []
        upcoming: list[datetime] = []
        for schedule in await self.served():
            for tick in due_ticks(schedule, now, grace=self.grace):
                thread = await self._fire(schedule, tick)
                if thread is not None:
                    fired.append(thread)
            if not schedule.paused:
                upcoming.append(next_tick(schedule, now))
        self.next_due = min(upcoming, default=None)
        return fired

    async def served(self) -> Sequence[Schedule]:
        return [s for s in await self.schedules.list() if s.agent in self.runtime.agents]

    async def _fire(self, schedule: Schedule, tick: datetime) -> Thread | None:
        thread_id = firing_thread_id(schedule, tick)
        if not await self.schedules.claim(schedule.id, tick, thread_id, at=self.now()):
            self.stats.lost += 1
            return None
        try:
            thread = await self._launch(schedule, tick, thread_id)
        except Exception as exc:
            self.stats.failed += 1
            log.warning(
                "schedule %s: tick %s claimed but its launch failed (recover relaunches "
                "it): %s: %s",
                schedule.name,
                tick.isoformat(),
                type(exc).__name__,
                exc,
            )
            return None
        self.stats.fired += 1
        log.info("schedule %s fired for %s: thread %s", schedule.name, tick.isoformat(), thread_id)
        return thread

    async def _launch(self, schedule: Schedule, tick: datetime, thread_id: str) -> Thread:
        metadata: dict[str, object] = {
            "schedule": schedule.name,
            "schedule_id": schedule.id,
            "tick": tick.isoformat(),
        }
        if schedule.destination:
            metadata["reply_to"] = schedule.destination
        return await self.runtime.launch(
            schedule.agent,
            schedule.message,
            channel="cron",
            sender=f"schedule:{schedule.name}",
            metadata=metadata,
            thread_id=thread_id,
            advance=False,
        )

    async def recover(
        self,
        *,
        older_than: timedelta = timedelta(seconds=30),
        within: timedelta = timedelta(minutes=10),
    ) -> list[Thread]:
        """Launch the latest firing of each served schedule whose thread does not exist
        (its claimer died, or its launch failed, between claim and launch) once the
        firing is `older_than` old, and only within `within` of it (an older missing
        thread was deleted on purpose, by retention). The thread id is the firing's, so
        a launch that happened after all is refused by the store, never duplicated."""
        now = self.now()
        launched: list[Thread] = []
        for schedule in await self.served():
            latest = await self.schedules.firings(schedule.id, limit=1)
            if not latest or not older_than <= now - latest[0].fired_at <= within:
                continue
            firing = latest[0]
            try:
                await self.runtime.store.get(firing.thread_id)
                continue
            except ThreadNotFound:
                pass
            try:
                launched.append(await self._launch(schedule, firing.tick, firing.thread_id))
            except StoreError:  # launched meanwhile by another process: nothing to do
                continue
            self.stats.recovered += 1
            log.warning("schedule %s: relaunched the lost firing %s", schedule.name, firing.tick)
        return launched


RECOVER_EVERY = 30
"""Scheduler passes between looks for claimed ticks whose launch was lost."""


def scheduler_for(runtime: Runtime) -> Scheduler | None:
    """The scheduler over the schedules beside the runtime's store (None: it keeps none)."""
    try:
        return Scheduler(runtime, schedule_store(runtime.store))
    except StoreError:
        return None


async def keep_firing(
    scheduler: Scheduler,
    *,
    interval: float,
    stopping: Callable[[], bool],
    on_fired: Callable[[list[Thread]], None],
    who: str,
) -> None:
    """Fire due ticks until `stopping()` or cancelled (a worker's background task): a
    pass, then sleep until the next tick (at most `interval`); `recover` every
    RECOVER_EVERY passes. A failed pass (the store away for a moment) is logged and
    retried at the next one.
    """
    passes = 0
    # The task is cancelled when its worker ends; it also checks whether it is being
    # cancelled, because a database driver may turn a cancellation into an error (or
    # retry through it) instead of letting it through.
    this = asyncio.current_task()
    while not stopping() and not (this and this.cancelling()):
        try:
            fired = await scheduler.recover() if passes % RECOVER_EVERY == 0 else []
            fired += await scheduler.fire_due()
            if fired:
                on_fired(fired)
        except Exception as exc:
            log.warning("%s: firing schedules failed: %s: %s", who, type(exc).__name__, exc)
        passes += 1
        wait = interval
        if scheduler.next_due is not None:
            ahead = (scheduler.next_due - scheduler.now()).total_seconds()
            wait = min(interval, max(ahead, 0.0) + 0.01)
        # A plain sleep lets the cancellation through (a `wait_for` on an event may
        # swallow one on Python 3.11).
        await asyncio.sleep(wait)
