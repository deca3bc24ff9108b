"""Group commit (PostgreSQL): appends of concurrent threads share one round trip, each
append keeps its own outcome, and an acknowledged append survives SIGKILL."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from group_kill import KilledWriter, event, make_threads

from pg_support import pg_store_url
from threadline.errors import AppendConflict, LeaseLost
from threadline.events import Thread, ToolResult
from threadline.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres


def _store(url: str, schema: str, **options: object) -> PostgresStore:
    return PostgresStore(url, schema=schema, migrate=True, **options)  # type: ignore[arg-type]


async def test_concurrent_threads_share_round_trips_and_every_event_is_stored(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    reader = _store(postgres_url, pg_schema)
    try:
        threads = await make_threads(store, 16)
        before = store.stats.append_round_trips

        async def append_ten(thread: Thread) -> None:
            for seq in range(1, 11):
                await store.append(thread.id, [event(seq)], expected_seq=seq)
                await asyncio.sleep(0)  # as a model call would: the other threads run

        await asyncio.gather(*(append_ten(t) for t in threads))
        stats = store.stats
        assert stats.appends == 160
        trips = stats.append_round_trips - before
        assert trips < 160 / 2, f"appends of concurrent threads were not grouped: {trips}"
        assert stats.groups > 0 and stats.grouped > 80 and stats.regrouped == 0
        assert stats.append_commits == trips  # a group is one round trip and one commit
        assert len(stats.waits) == 160 and stats.longest_wait >= max(stats.waits)
        for thread in threads:  # read back by another store (another pool)
            loaded = await reader.load(thread.id)
            assert [e.seq for e in loaded.events] == list(range(11))
            assert (await reader.get(thread.id)).next_seq == 11
    finally:
        await reader.close()
        await store.close()


async def test_a_conflict_or_a_lost_lease_in_a_group_fails_alone(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    other = _store(postgres_url, pg_schema)  # another process's store
    try:
        threads = await make_threads(store, 6)
        # Another process appends to thread 2 (this store's cache still says seq 1) and
        # fences off the lease this store holds on thread 5: both appends below are sent
        # in the group on the known state, and their conditions fail there.
        await other.append(threads[2].id, [event(1)], expected_seq=1)
        lease = (await store.lease("w1", ttl=60, thread_ids=[threads[5].id]))[0]
        await other.break_lease(threads[5].id)
        groups, grouped = store.stats.groups, store.stats.grouped
        results = await asyncio.gather(
            store.append(threads[0].id, [event(1)], expected_seq=1),  # alone: none in flight
            store.append(threads[1].id, [event(1)], expected_seq=1),
            store.append(threads[2].id, [event(1)], expected_seq=1),  # conflict
            store.append(threads[3].id, [event(1)], expected_seq=1),
            store.append(threads[4].id, [event(1)], expected_seq=1),
            store.append(threads[5].id, [event(1)], expected_seq=1, lease=lease),  # lost
            return_exceptions=True,
        )
        assert store.stats.groups == groups + 1, "the five after the first were not grouped"
        assert store.stats.grouped == grouped + 5
        assert [results[i] for i in (0, 1, 3, 4)] == [None] * 4
        assert isinstance(results[2], AppendConflict)
        assert isinstance(results[5], LeaseLost)
        lengths = [len(await other.events(t.id)) for t in threads]
        assert lengths == [2, 2, 2, 2, 2, 1]  # thread 2 holds the other process's event
        written = (await other.events(threads[2].id))[1]
        assert isinstance(written, ToolResult) and written.call_id == "c1"
    finally:
        await other.close()
        await store.close()


def _on_insert(url: str, schema: str, name: str, body: str, setup: str = "") -> None:
    """Install `body` (PL/pgSQL) as a trigger run before each event row is inserted."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(
            f"{setup}CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN {body} "
            "RETURN NEW; END $$ LANGUAGE plpgsql; "
            f"CREATE TRIGGER {name} BEFORE INSERT ON events FOR EACH ROW "
            f"EXECUTE FUNCTION {name}()"
        )


async def _append_each(store: PostgresStore, threads: list[Thread]) -> list[object]:
    """Every thread's first append at once; each result, or the error it raised."""
    return await asyncio.gather(
        *(store.append(t.id, [event(1)], expected_seq=1) for t in threads),
        return_exceptions=True,
    )


async def test_a_statement_that_raises_in_a_group_raises_alone(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    try:
        threads = await make_threads(store, 5)
        # A trigger refusing thread 3's events stands in for an error no condition catches:
        # it aborts the group's transaction, then each append runs again alone.
        _on_insert(
            postgres_url,
            pg_schema,
            "refuse",
            f"IF NEW.thread_id = '{threads[3].id}' THEN RAISE EXCEPTION 'refused here'; END IF;",
        )
        results = await _append_each(store, threads)
        assert store.stats.groups == 1 and store.stats.regrouped == 4
        assert [results[i] for i in (0, 1, 2, 4)] == [None] * 4
        assert isinstance(results[3], psycopg.errors.RaiseException)
        assert "refused here" in str(results[3])
        assert [len(await store.events(t.id)) for t in threads] == [2, 2, 2, 1, 2]
    finally:
        await store.close()


async def test_a_group_whose_connection_dies_is_sent_again(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    try:
        threads = await make_threads(store, 5)
        # The first event row of a group's transaction ends its own session (once: a
        # sequence is not rolled back), as a server restart or a cut connection would.
        _on_insert(
            postgres_url,
            pg_schema,
            "cut",
            f"IF NEW.thread_id <> '{threads[0].id}' AND nextval('cut') = 1 THEN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); END IF;",
            setup="CREATE SEQUENCE cut; ",
        )
        results = await _append_each(store, threads)
        assert results == [None] * 5
        assert store.stats.groups == 1 and store.stats.regrouped == 4
        for thread in threads:
            assert [e.seq for e in await store.events(thread.id)] == [0, 1]
    finally:
        await store.close()


async def test_a_caller_cancelled_while_queued_writes_nothing(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    try:
        threads = await make_threads(store, 5)
        tasks = [
            asyncio.ensure_future(store.append(t.id, [event(1)], expected_seq=1)) for t in threads
        ]
        await asyncio.sleep(0)  # the first is in flight, alone; the others are queued
        tasks[2].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [results[i] for i in (0, 1, 3, 4)] == [None] * 4
        assert store.stats.groups == 1 and store.stats.grouped == 3
        assert [len(await store.events(t.id)) for t in threads] == [2, 2, 1, 2, 2]
    finally:
        await store.close()


async def test_a_lone_thread_is_sent_alone_and_grouping_can_be_turned_off(
    postgres_url: str, pg_schema: str
) -> None:
    store = _store(postgres_url, pg_schema)
    try:
        (thread,) = await make_threads(store, 1)
        for seq in range(1, 6):
            await store.append(thread.id, [event(seq)], expected_seq=seq)
        assert store.stats.groups == 0
        assert store.stats.append_round_trips == store.stats.appends == 5
    finally:
        await store.close()
    off = PostgresStore.from_url(pg_store_url(postgres_url, pg_schema) + "&group_appends=0")
    try:
        threads = await make_threads(off, 8)
        await asyncio.gather(*(off.append(t.id, [event(1)], expected_seq=1) for t in threads))
        assert off.stats.groups == 0 and off.stats.append_round_trips == 8
        assert [len(await off.events(t.id)) for t in threads] == [2] * 8
    finally:
        await off.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_inside_grouped_round_trips_keeps_every_acknowledged_event(
    postgres_url: str, pg_schema: str, seed: int
) -> None:
    with KilledWriter(pg_store_url(postgres_url, pg_schema)) as writer:
        writer.read_random_acks(seed)
        writer.kill()
    acked, stats = writer.acknowledged()
    _assert_acknowledged_stored(postgres_url, pg_schema, acked)
    print(
        f"\nkilled after {writer.acks()} acknowledged appends; "
        f"last stats: {stats[0]} round trips for {stats[1]} appends ({stats[2]} grouped); "
        f"every acknowledged event found"
    )


def _assert_acknowledged_stored(url: str, schema: str, acked: dict[str, int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        stored = dict(conn.execute("SELECT thread_id, MAX(seq) FROM events GROUP BY thread_id"))
        dense = conn.execute(
            "SELECT thread_id FROM events GROUP BY thread_id HAVING COUNT(*) != MAX(seq) + 1"
        ).fetchall()
        behind = conn.execute(
            "SELECT t.id FROM threads t JOIN (SELECT thread_id, MAX(seq) AS top FROM events "
            "GROUP BY thread_id) e ON e.thread_id = t.id WHERE t.next_seq != e.top + 1"
        ).fetchall()
    assert dense == [] and behind == []  # events and projection committed together
    lost = {t: s for t, s in acked.items() if stored.get(t, -1) < s}
    assert lost == {}, f"acknowledged events missing after SIGKILL: {lost}"


@pytest.mark.slow
def test_sigkill_while_a_group_is_on_the_server_keeps_every_acknowledged_event(
    postgres_url: str, pg_schema: str
) -> None:
    """The kill lands while a group's transaction is running on the server (seen in
    pg_stat_activity: its session inside a transaction it began before the statement now
    running), not at a random moment."""
    app = f"tl_{pg_schema}"[:60]
    # The server checks every 10 ms that the writer is still there and rolls the running
    # group back when it is not: an event acknowledged before its COMMIT would be lost.
    check = "options=-c%20client_connection_check_interval%3D10"
    url = pg_store_url(postgres_url, pg_schema) + f"&application_name={app}&{check}"
    with KilledWriter(url) as writer:
        writer.read_acks(200)
        # Slow every event row down, so that a group stays on the server long enough to be
        # seen there; then kill the writer while one is.
        _on_insert(postgres_url, pg_schema, "slow", "PERFORM pg_sleep(0.01);")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            for _ in range(3000):
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND xact_start < query_start",
                    (app,),
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.005)
            else:
                pytest.fail("no group was seen running on the server")
            writer.kill()
            for _ in range(3000):  # the server finishes (or rolls back) what it was sent
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND state <> 'idle'",
                    (app,),
                ).fetchone()
                if row and not row[0]:
                    break
                time.sleep(0.01)
    acked, _ = writer.acknowledged()
    _assert_acknowledged_stored(postgres_url, pg_schema, acked)
