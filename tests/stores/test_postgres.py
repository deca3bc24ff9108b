"""PostgreSQL-only behaviour: migrations gate start-up, LISTEN/NOTIFY wakes workers."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pg_support import pg_store_url
from threadline.errors import ConfigError, SchemaOutOfDate
from threadline.events import HumanRequest, HumanResponse, Thread, UserMessage, utcnow
from threadline.stores import new_thread_id, open_store
from threadline.stores.migrations import POSTGRES_MIGRATIONS
from threadline.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres


def test_from_url_splits_own_parameters() -> None:
    store = PostgresStore.from_url(
        "postgres://u@h:5/db?schema=s1&pool_max=3&migrate=auto&sslmode=disable"
    )
    assert store.schema == "s1" and store._max == 3 and store._auto_migrate
    assert store.conninfo == "postgresql://u@h:5/db?sslmode=disable"
    spaced = PostgresStore.from_url("postgresql://u@h/db?options=-c%20lock_timeout%3D5s")
    assert spaced.conninfo == "postgresql://u@h/db?options=-c%20lock_timeout%3D5s"
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://x/db", schema="bad; drop")
    with pytest.raises(ConfigError):
        PostgresStore.from_url("postgresql://x/db?pool_max=many")


LATEST = len(POSTGRES_MIGRATIONS)


async def test_unmigrated_database_refuses_to_start(postgres_url: str, pg_schema: str) -> None:
    store = open_store(pg_store_url(postgres_url, pg_schema, migrate=False))
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        with pytest.raises(SchemaOutOfDate, match="threadline db migrate") as info:
            await store.ping()
        assert info.value.have == 0 and info.value.want == len(POSTGRES_MIGRATIONS)
        assert isinstance(store, PostgresStore)
        assert await store.migrate() == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
        assert await store.migrate() == []  # idempotent
        await store.ping()
        assert [m[0] for m in await store.migrations()] == [m[0] for m in POSTGRES_MIGRATIONS]
    finally:
        await store.close()


async def test_older_schema_refuses_to_start(postgres_url: str, pg_schema: str) -> None:
    migrated = PostgresStore(postgres_url, schema=pg_schema, migrate=True)
    await migrated.ping()
    await migrated.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f'DELETE FROM "{pg_schema}".threadline_migrations WHERE version = %s', (LATEST,)
        )
    old = PostgresStore(postgres_url, schema=pg_schema)
    try:
        with pytest.raises(SchemaOutOfDate) as info:
            await old.load("th_x")
        assert (info.value.have, info.value.want) == (LATEST - 1, LATEST)
        assert "run: threadline db migrate" in str(info.value)
    finally:
        await old.close()


async def test_concurrent_migrations_apply_once(postgres_url: str, pg_schema: str) -> None:
    stores = [PostgresStore(postgres_url, schema=pg_schema) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
        assert sorted(n for r in results for n in r) == list(range(1, LATEST + 1))
    finally:
        for s in stores:
            await s.close()


async def test_notify_wakes_a_waiting_worker(postgres_url: str, pg_schema: str) -> None:
    url = pg_store_url(postgres_url, pg_schema)
    listener, writer = open_store(url), open_store(url)
    try:
        t = Thread(new_thread_id(), "a")
        t.append(UserMessage(seq=0, at=utcnow(), text="hi"))
        t.append(HumanRequest(seq=1, at=utcnow(), request_id="r", question="?"))
        await writer.create(t)
        await listener.wait_for_work(0.01)  # opens the LISTEN connection
        waiting = asyncio.create_task(listener.wait_for_work(30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await writer.append(
            t.id, [HumanResponse(seq=2, at=utcnow(), request_id="r", text="yes")], expected_seq=2
        )
        await asyncio.wait_for(waiting, 10)  # woken by the NOTIFY, not the 30 s timeout
        assert len(await listener.lease("w", ttl=30)) == 1
    finally:
        await listener.close()
        await writer.close()


async def test_appends_that_make_threads_runnable_notify_from_their_own_statement(
    postgres_url: str, pg_schema: str
) -> None:
    """The NOTIFY of an append that makes its thread runnable is sent by the append's own
    statement: three answers appended at once (one alone, two in a group) are two round
    trips in all, and each thread's wake-up arrives; a full append (a store that did not
    write the thread) sends its wake-up from its statement too, and a thread that was
    already runnable wakes nobody."""
    writer = open_store(pg_store_url(postgres_url, pg_schema))
    assert isinstance(writer, PostgresStore)
    listen = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    try:
        await listen.execute(f"LISTEN {writer.channel}")
        threads = [Thread(new_thread_id(), "a") for _ in range(4)]
        for t in threads:
            t.append(UserMessage(seq=0, at=utcnow(), text="hi"))
            t.append(HumanRequest(seq=1, at=utcnow(), request_id="r", question="?"))
            await writer.create(t)
        stats = writer.stats
        trips, appends, groups = stats.append_round_trips, stats.appends, stats.groups
        await asyncio.gather(
            *(
                writer.append(
                    t.id,
                    [HumanResponse(seq=2, at=utcnow(), request_id="r", text="yes")],
                    expected_seq=2,
                )
                for t in threads[:3]
            )
        )
        assert (stats.appends - appends, stats.groups - groups) == (3, 1)
        assert stats.append_round_trips - trips == 2  # was 5: a NOTIFY after each commit
        other = open_store(pg_store_url(postgres_url, pg_schema))  # knows nothing cached
        try:
            answer = HumanResponse(seq=2, at=utcnow(), request_id="r", text="yes")
            await other.append(threads[3].id, [answer], expected_seq=2)
            again = UserMessage(seq=3, at=utcnow(), text="still running")
            await other.append(threads[3].id, [again], expected_seq=3)  # no wake-up
        finally:
            await other.close()
        woken = [n.payload async for n in listen.notifies(timeout=2)]
        assert sorted(woken) == sorted(t.id for t in threads)
    finally:
        await listen.close()
        await writer.close()


async def test_releasing_a_runnable_thread_wakes_a_waiting_worker(
    postgres_url: str, pg_schema: str
) -> None:
    url = pg_store_url(postgres_url, pg_schema)
    listener, holder = open_store(url), open_store(url)
    try:
        t = Thread(new_thread_id(), "a")
        t.append(UserMessage(seq=0, at=utcnow(), text="hi"))
        await holder.create(t)
        [lease] = await holder.lease("w1", ttl=30)
        await listener.wait_for_work(0.01)  # opens the LISTEN connection
        waiting = asyncio.create_task(listener.wait_for_work(30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert await holder.release(lease)  # still running: another worker should take it
        await asyncio.wait_for(waiting, 10)
        assert [x.thread_id for x in await listener.lease("w2", ttl=30)] == [t.id]
    finally:
        await listener.close()
        await holder.close()


async def test_a_result_append_survives_a_terminated_connection(
    postgres_url: str, pg_schema: str
) -> None:
    """The store's connections are killed (`pg_terminate_backend`) while a side-effecting
    tool runs: the append of its result runs again on a fresh connection, and the thread
    holds exactly one start and one result (the charge is neither lost nor repeated)."""
    from threadline import Agent, Runtime, Status, tool
    from threadline.testing import ScriptedModel, intent

    app = f"tl_{pg_schema}"[:60]
    store = open_store(pg_store_url(postgres_url, pg_schema) + f"&application_name={app}")
    killed: list[int] = []
    charges: list[int] = []

    @tool(side_effects=True)
    def charge(amount: int) -> str:
        """Charge a card."""
        charges.append(amount)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            ).fetchone()
        killed.append(int(row[0]) if row else 0)
        return f"charged {amount}"

    agent = Agent("payer", tools=[charge])
    model = ScriptedModel([intent("charge", amount=5), intent("done_for_now", message="ok")])
    try:
        thread = await Runtime(store, agents=[agent], model=model).launch(agent, "charge 5")
        assert killed and killed[0] >= 1  # the store's connections really were cut
        assert thread.status is Status.DONE and charges == [5]
        kinds = [e.kind for e in (await store.load(thread.id)).events]
        assert kinds.count("tool_started") == 1 and kinds.count("tool_result") == 1
    finally:
        await store.close()


async def test_an_append_retried_after_its_commit_is_recognised(
    postgres_url: str, pg_schema: str
) -> None:
    """The same events appended twice at one seq (a retry whose first try committed before
    the connection broke) are recognised as written; different events still conflict."""
    from threadline.errors import AppendConflict

    store = open_store(pg_store_url(postgres_url, pg_schema))
    try:
        now = utcnow()
        thread = Thread(new_thread_id(), "a", [UserMessage(seq=0, at=now, text="hi")])
        await store.create(thread)
        question = HumanRequest(seq=1, at=now, request_id="r1", question="which?")
        await store.append(thread.id, [question], expected_seq=1)
        await store.append(thread.id, [question], expected_seq=1)  # the retry: no error
        other = HumanRequest(seq=1, at=now, request_id="r2", question="which?")
        with pytest.raises(AppendConflict):
            await store.append(thread.id, [other], expected_seq=1)
        assert len(await store.load(thread.id)) == 2
    finally:
        await store.close()
