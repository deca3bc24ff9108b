"""Schedules beside the threads: one suite on the memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from store_env import StoreEnv

from threadline.errors import StoreError
from threadline.schedules import new_schedule
from threadline.stores import schedule_store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _schedule(name: str = "standup", **kw):  # type: ignore[no-untyped-def]
    args = {"cron": "0 9 * * 1-5", "agent": "bot", "message": "post it", "now": T0} | kw
    return new_schedule(name, **args)


async def test_add_get_list_remove(store_env: StoreEnv) -> None:
    schedules = schedule_store(store_env.open())
    a = _schedule(
        "standup", timezone="Europe/Paris", missed="catch-up", destination="slack:#standup"
    )
    await schedules.add(a)
    await schedules.add(_schedule("audit"))
    got = await schedules.get("standup")
    assert got == a
    assert got.fired_through == T0 and got.created_at == T0
    assert [s.name for s in await schedules.list()] == ["audit", "standup"]
    with pytest.raises(StoreError, match="already exists"):
        await schedules.add(_schedule("standup"))
    assert await schedules.remove("standup") is True
    assert await schedules.remove("standup") is False
    assert await schedules.get("standup") is None
    assert [s.name for s in await schedules.list()] == ["audit"]


async def test_a_tick_is_claimed_once_and_never_behind_a_later_one(store_env: StoreEnv) -> None:
    schedules = schedule_store(store_env.open())
    s = _schedule()
    await schedules.add(s)
    tick = T0 + timedelta(hours=1)
    assert await schedules.claim(s.id, tick, "th_a", at=tick) is True
    assert await schedules.claim(s.id, tick, "th_b", at=tick) is False
    # An older tick than one fired is settled: a slow worker cannot fire it late.
    assert await schedules.claim(s.id, tick - timedelta(minutes=1), "th_c", at=tick) is False
    later = tick + timedelta(days=1)
    assert await schedules.claim(s.id, later, "th_d", at=later) is True
    firings = await schedules.firings(s.id)
    assert [(f.tick, f.thread_id) for f in firings] == [(later, "th_d"), (tick, "th_a")]
    assert (await schedules.get("standup")).fired_through == later  # type: ignore[union-attr]


async def test_racing_claims_from_separate_connections(store_env: StoreEnv) -> None:
    first = store_env.open()
    await schedule_store(first).add(s := _schedule())
    stores = [schedule_store(store_env.open()) for _ in range(4)]
    tick = T0 + timedelta(hours=1)
    for round_ in range(5):
        at = tick + timedelta(days=round_)
        won = await asyncio.gather(
            *(st.claim(s.id, at, f"th_{i}", at=at) for i, st in enumerate(stores))
        )
        assert sorted(won) == [False, False, False, True]
    assert len(await schedule_store(first).firings(s.id)) == 5


async def test_paused_schedules_claim_nothing_and_resume_skips_the_pause(
    store_env: StoreEnv,
) -> None:
    schedules = schedule_store(store_env.open())
    s = _schedule()
    await schedules.add(s)
    assert await schedules.set_paused("standup", True, at=T0) is True
    assert await schedules.set_paused("standup", True, at=T0) is False  # already paused
    assert await schedules.claim(s.id, T0 + timedelta(hours=1), "th_x", at=T0) is False
    resumed_at = T0 + timedelta(days=2)
    assert await schedules.set_paused("standup", False, at=resumed_at) is True
    got = await schedules.get("standup")
    assert got is not None and not got.paused and got.fired_through == resumed_at
    assert await schedules.set_paused("nope", True, at=T0) is False
    assert await schedules.firings(s.id) == []


async def test_removing_a_schedule_forgets_its_firings(store_env: StoreEnv) -> None:
    schedules = schedule_store(store_env.open())
    s = _schedule()
    await schedules.add(s)
    await schedules.claim(s.id, T0 + timedelta(hours=1), "th_a", at=T0)
    await schedules.remove("standup")
    again = _schedule()
    await schedules.add(again)
    assert again.id != s.id
    assert await schedules.firings(again.id) == []
    assert await schedules.firings(s.id) == []
