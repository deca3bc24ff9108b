"""Cron schedules: ticks in time zones, the missed-tick policy, firing exactly once, and
a worker that fires a schedule and advances the thread it launched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from threadline import Agent, Runtime
from threadline.errors import ConfigError
from threadline.events import Status, UserMessage
from threadline.schedules import (
    Scheduler,
    check_cron,
    due_ticks,
    firing_thread_id,
    new_schedule,
    next_tick,
)
from threadline.stores import MemoryStore, SQLiteStore, schedule_store
from threadline.testing import FunctionModel, intent
from threadline.worker import Worker

MONDAY = datetime(2026, 1, 5, tzinfo=UTC)  # a winter Monday: Paris is UTC+1
JULY_MONDAY = datetime(2026, 7, 6, tzinfo=UTC)  # summer: Paris is UTC+2


def agent() -> Agent:
    return Agent("reporter", model=FunctionModel(lambda _: intent("done_for_now", message="sent")))


def standup(**kw):  # type: ignore[no-untyped-def]
    args = {
        "cron": "0 9 * * 1-5",
        "agent": "reporter",
        "message": "post the stand-up",
        "timezone": "Europe/Paris",
        "now": MONDAY,
    } | kw
    return new_schedule(args.pop("name", "standup"), **args)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "cron expression"),
        ({"cron": "every monday"}, "cron expression"),
        ({"cron": "* * * * * * * *"}, "cron expression"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"missed": "sometimes"}, "missed-tick policy"),
        ({"message": "  "}, "needs a message"),
        ({"name": "no spaces please"}, "schedule name"),
        ({"destination": "slack"}, "route target"),
    ],
)
def test_a_bad_schedule_is_refused_naming_what_is_wrong(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        standup(**kwargs)


def test_cron_expressions_are_normalised_and_may_have_seconds() -> None:
    assert check_cron("  0  9 * *   1-5 ") == "0 9 * * 1-5"
    assert check_cron("* * * * * */2") == "* * * * * */2"


# -- ticks -----------------------------------------------------------------------------


def test_ticks_follow_the_time_zone_through_daylight_saving() -> None:
    s = standup()
    assert next_tick(s, MONDAY) == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # 09:00 CET
    summer = standup(now=JULY_MONDAY)
    assert next_tick(summer, JULY_MONDAY) == datetime(2026, 7, 6, 7, 0, tzinfo=UTC)  # CEST
    friday_evening = datetime(2026, 1, 9, 18, 0, tzinfo=UTC)
    assert next_tick(s, friday_evening) == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # Monday


def test_due_ticks_fire_on_time_and_the_missed_policy_decides_the_rest() -> None:
    s = standup()
    nine = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert due_ticks(s, nine - timedelta(seconds=1)) == []
    assert due_ticks(s, nine) == [nine]  # a tick exactly now is due
    assert due_ticks(s, nine + timedelta(seconds=59)) == [nine]
    # Workers were down from Monday to Thursday 10:00 Paris: three ticks were missed.
    thursday = datetime(2026, 1, 8, 9, 0, tzinfo=UTC)
    assert due_ticks(s, thursday) == []  # skip: the default
    catch_up = standup(missed="catch-up")
    assert due_ticks(catch_up, thursday) == [datetime(2026, 1, 8, 8, 0, tzinfo=UTC)]  # once
    fired = standup(now=datetime(2026, 1, 8, 8, 0, tzinfo=UTC))  # already fired through it
    assert due_ticks(fired, thursday) == []


def test_per_second_schedules_fire_every_tick_within_the_grace() -> None:
    s = standup(cron="* * * * * */2", timezone="UTC")
    assert due_ticks(s, MONDAY + timedelta(seconds=7)) == [
        MONDAY + timedelta(seconds=n) for n in (2, 4, 6)
    ]


def test_the_thread_id_is_the_same_for_every_worker_and_ordered_by_tick() -> None:
    s = standup()
    t1, t2 = MONDAY, MONDAY + timedelta(days=1)
    assert firing_thread_id(s, t1) == firing_thread_id(s, t1)
    assert firing_thread_id(s, t1) < firing_thread_id(s, t2)
    assert firing_thread_id(s, t1) != firing_thread_id(standup(), t1)  # another schedule


# -- firing ----------------------------------------------------------------------------


async def test_a_tick_launches_an_ordinary_cron_thread_once(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 1, 5, 8, 0, 1, tzinfo=UTC))
    stores = [SQLiteStore(tmp_path / "t.db") for _ in range(3)]
    s = standup(destination="slack:#standup")
    await schedule_store(stores[0]).add(s)
    schedulers = [
        Scheduler(Runtime(st, agents=[agent()]), schedule_store(st), clock=clock) for st in stores
    ]
    try:
        fired = await asyncio.gather(*(sc.fire_due() for sc in schedulers))
        threads = [t for batch in fired for t in batch]
        assert len(threads) == 1
        assert sum(sc.stats.fired for sc in schedulers) == 1
        thread = await stores[0].load(threads[0].id)
        first = thread.events[0]
        assert isinstance(first, UserMessage)
        assert (first.text, first.channel, first.sender) == (
            "post the stand-up",
            "cron",
            "schedule:standup",
        )
        assert thread.metadata == {
            "channel": "cron",
            "schedule": "standup",
            "schedule_id": s.id,
            "tick": "2026-01-05T08:00:00+00:00",
            "reply_to": "slack:#standup",
        }
        assert thread.status == Status.RUNNING  # a worker advances it like any other
        clock.now += timedelta(seconds=30)
        assert [await sc.fire_due() for sc in schedulers] == [[], [], []]
        assert schedulers[0].next_due == datetime(2026, 1, 6, 8, 0, tzinfo=UTC)
        firings = await schedule_store(stores[1]).firings(s.id)
        assert [f.thread_id for f in firings] == [thread.id]
    finally:
        for st in stores:
            await st.close()


async def test_paused_and_unserved_schedules_do_not_fire() -> None:
    store = MemoryStore()
    clock = Clock(datetime(2026, 1, 5, 8, 0, 1, tzinfo=UTC))
    schedules = schedule_store(store)
    await schedules.add(standup())
    await schedules.add(standup(name="other", agent="someone-else"))
    await schedules.set_paused("standup", True, at=clock.now)
    scheduler = Scheduler(Runtime(store, agents=[agent()]), schedules, clock=clock)
    assert await scheduler.fire_due() == []
    assert (await store.list()).items == []
    # Resumed after the tick: the tick that passed while paused never fires.
    clock.now += timedelta(seconds=10)
    await schedules.set_paused("standup", False, at=clock.now)
    assert await scheduler.fire_due() == []
    clock.now = datetime(2026, 1, 6, 8, 0, 0, tzinfo=UTC)
    assert len(await scheduler.fire_due()) == 1


async def test_a_claimed_tick_whose_launch_was_lost_is_relaunched_once() -> None:
    store = MemoryStore()
    clock = Clock(datetime(2026, 1, 5, 8, 0, 1, tzinfo=UTC))
    schedules = schedule_store(store)
    s = standup()
    await schedules.add(s)
    tick = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    # A worker claimed the tick and died before launching.
    assert await schedules.claim(s.id, tick, firing_thread_id(s, tick), at=clock.now)
    scheduler = Scheduler(Runtime(store, agents=[agent()]), schedules, clock=clock)
    assert await scheduler.fire_due() == []  # the tick is claimed: nobody fires it again
    assert await scheduler.recover() == []  # too early: the claimer may still be launching
    clock.now += timedelta(seconds=31)
    (thread,) = await scheduler.recover()
    assert thread.id == firing_thread_id(s, tick)
    assert await scheduler.recover() == []
    assert len((await store.list()).items) == 1


async def test_a_worker_fires_a_schedule_and_finishes_its_thread() -> None:
    store = MemoryStore()
    runtime = Runtime(store, agents=[agent()])
    await schedule_store(store).add(standup(cron="* * * * * *", timezone="UTC", now=None))
    worker = Worker(runtime, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            done = (await store.list(status=Status.DONE)).items
            if done:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
    assert done, "no scheduled thread finished"
    thread = await store.load(done[0].id)
    assert thread.metadata["schedule"] == "standup"
    assert thread.events[-1].kind == "done"
    assert worker.stats.fired >= 1
