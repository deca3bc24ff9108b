"""What both group commits share: the append counters (one class, the same figures in
each store) and answering a queued caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from threadline.events import Thread, ToolResult, UserMessage, utcnow
from threadline.stores import SQLiteStore, new_thread_id
from threadline.stores.grouping import AppendStats, CommitStats, answer
from threadline.stores.postgres import PostgresStore
from threadline.stores.postgres_group import RoundTrips


def test_waits_keep_the_latest_and_the_longest() -> None:
    stats = AppendStats()
    stats.waited(0.5)
    stats.waited(0.25, 2.0, 1.0)
    stats.waited()  # a group of nobody changes nothing
    assert list(stats.waits) == [0.5, 0.25, 2.0, 1.0]
    assert stats.longest_wait == 2.0
    stats.waited(1.5)
    assert stats.longest_wait == 2.0


def test_the_last_100_000_waits_are_kept() -> None:
    stats = AppendStats()
    stats.waited(*(float(i) for i in range(100_005)))
    assert len(stats.waits) == 100_000 and stats.waits[0] == 5.0
    assert stats.longest_wait == 100_004.0


@pytest.mark.postgres
async def test_a_caller_is_answered_once_and_a_cancelled_one_not_at_all() -> None:
    loop = asyncio.get_running_loop()
    done, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    answer(done, 7, True)
    answer(done, 8, True)  # already answered: kept
    answer(failed, LookupError("gone"), False)
    cancelled.cancel()
    answer(cancelled, 9, True)
    assert done.result() == 7
    with pytest.raises(LookupError, match="gone"):
        failed.result()
    assert cancelled.cancelled()


@pytest.mark.postgres
async def test_both_stores_count_their_appends_in_the_shared_class(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    sqlite = SQLiteStore(tmp_path / "s.db")
    postgres = PostgresStore(postgres_url, schema=pg_schema, migrate=True)
    try:
        for store in (sqlite, postgres):
            assert isinstance(store.stats, AppendStats)
            thread = Thread(new_thread_id(), "s", [UserMessage(seq=0, at=utcnow(), text="hi")])
            await store.create(thread)
            answer = ToolResult(seq=1, at=utcnow(), call_id="c", tool="t", result=1)
            await store.append(thread.id, [answer], expected_seq=1)
            assert (store.stats.appends, store.stats.groups, store.stats.grouped) == (1, 0, 0)
        assert isinstance(sqlite.stats, CommitStats) and sqlite.stats.commits == 2
        assert len(sqlite.stats.waits) == 0  # SQLite times its grouped appends only
        assert isinstance(postgres.stats, RoundTrips) and postgres.stats.append_round_trips == 1
        assert len(postgres.stats.waits) == 1  # PostgreSQL times every append
    finally:
        await sqlite.close()
        await postgres.close()
