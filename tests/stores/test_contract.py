"""The store contract: every store (memory, SQLite, PostgreSQL) passes the same tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from store_env import StoreEnv, needs_sql

from threadline.errors import (
    AppendConflict,
    CorruptEvent,
    StaleWriteAhead,
    StoreError,
    ThreadNotFound,
)
from threadline.events import (
    Done,
    HumanRequest,
    Status,
    Thread,
    ToolAttemptFailed,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
    utcnow,
)
from threadline.stores import Store, new_thread_id
from threadline.stores.base import InvalidCursor


def new_thread(agent: str = "a", text: str = "hi", **meta: object) -> Thread:
    t = Thread(new_thread_id(), agent, metadata=dict(meta))
    t.append(UserMessage(seq=0, at=utcnow(), text=text))
    return t


def result(seq: int, value: object = 1) -> ToolResult:
    return ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="t", result=value)


async def test_create_load_round_trip(store: Store) -> None:
    t = new_thread(agent="calc", channel="cli")
    t.append(
        ToolCall(
            seq=1,
            at=utcnow(),
            call_id="c1",
            tool="add",
            version="1",
            arguments={"a": 1, "b": [2, "x"], "nested": {"ü": None}},
        )
    )
    await store.create(t)
    loaded = await store.load(t.id)
    assert loaded.id == t.id and loaded.agent == "calc"
    assert loaded.metadata == {"channel": "cli"}
    assert [e.model_dump() for e in loaded.events] == [e.model_dump() for e in t.events]
    assert loaded.state.to_dict() == t.state.to_dict()
    assert abs((loaded.created_at - t.created_at).total_seconds()) < 0.001
    summary = await store.get(t.id)
    assert (summary.status, summary.next_seq, summary.agent) == (Status.RUNNING, 2, "calc")


async def test_create_twice_refused(store: Store) -> None:
    t = new_thread()
    await store.create(t)
    with pytest.raises(StoreError):
        await store.create(t)
    assert len(await store.load(t.id)) == 1


async def test_unknown_thread(store: Store) -> None:
    for call in (
        store.load("th_nope"),
        store.get("th_nope"),
        store.events("th_nope"),
        store.append("th_nope", [result(0)], expected_seq=0),
    ):
        with pytest.raises(ThreadNotFound):
            await call


async def test_append_with_expected_seq(store: Store) -> None:
    t = new_thread()
    await store.create(t)
    await store.append(t.id, [result(1), result(2)], expected_seq=1)
    await store.append(t.id, [Done(seq=3, at=utcnow(), message="ok")], expected_seq=3)
    loaded = await store.load(t.id)
    assert [e.seq for e in loaded.events] == [0, 1, 2, 3]
    summary = await store.get(t.id)
    assert summary.status == Status.DONE and summary.next_seq == 4


async def test_conflicting_append_writes_nothing(store: Store) -> None:
    t = new_thread()
    await store.create(t)
    await store.append(t.id, [result(1)], expected_seq=1)
    with pytest.raises(AppendConflict) as info:
        await store.append(t.id, [result(1, "late"), result(2, "late")], expected_seq=1)
    assert info.value.actual_seq == 2
    loaded = await store.load(t.id)
    assert len(loaded) == 2 and loaded.events[1].result == 1  # type: ignore[union-attr]
    assert (await store.get(t.id)).next_seq == 2


async def test_non_dense_batch_refused_whole(store: Store) -> None:
    t = new_thread()
    await store.create(t)
    with pytest.raises(CorruptEvent):
        await store.append(t.id, [result(1), result(3)], expected_seq=1)
    assert len(await store.load(t.id)) == 1


async def test_two_connections_race_one_seq_exactly_one_wins(store_env: StoreEnv) -> None:
    """Two stores (two connections / pools) append at the same seq, many times over."""
    a, b = store_env.open(), store_env.open()
    t = new_thread()
    await a.create(t)
    for seq in range(1, 21):
        outcomes = await asyncio.gather(
            a.append(t.id, [result(seq, "a")], expected_seq=seq),
            b.append(t.id, [result(seq, "b")], expected_seq=seq),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if o is None]
        losses = [o for o in outcomes if isinstance(o, AppendConflict)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
    loaded = await b.load(t.id)
    assert [e.seq for e in loaded.events] == list(range(21))


async def test_a_pipelined_append_behind_another_writer_is_refused(
    store_env: StoreEnv,
) -> None:
    """A writer that knows the thread from its own last append pipelines the next one
    (`append_behind`); another connection wrote meanwhile (an operator's cancel or pause).
    The append is refused with `AppendConflict`, here or from what it returns, and nothing
    is written. PostgreSQL took the refusal for a write: the advancer went on, every later
    append dropped unnoticed (its tools ran, nothing was recorded)."""
    a, b = store_env.open(), store_env.open()
    t = new_thread()
    await a.create(t)
    await a.append(t.id, [result(1)], expected_seq=1)  # `a` knows the thread is at 2
    await b.append(t.id, [result(2, "b")], expected_seq=2)
    with pytest.raises(AppendConflict):
        durable = await a.append_behind(t.id, [result(2, "a"), result(3, "a")], expected_seq=2)
        if durable is not None:
            await durable
    loaded = await b.load(t.id)
    assert [(e.seq, e.result) for e in loaded.events[1:]] == [(1, 1), (2, "b")]  # type: ignore[union-attr]
    with pytest.raises(AppendConflict):  # nor does `a` go on from what it thought it wrote
        await a.append(t.id, [result(4, "a")], expected_seq=4)
    assert (await a.get(t.id)).next_seq == 3


async def test_list_by_status_and_agent_with_cursor(store: Store) -> None:
    ids = []
    for i in range(7):
        t = new_thread(agent="x" if i % 2 else "y")
        if i < 3:
            t.append(Done(seq=1, at=utcnow(), message=""))
        await store.create(t)
        ids.append(t.id)
        await asyncio.sleep(0.002)  # ids are time-ordered to the millisecond
    everything = await store.list(limit=100)
    assert [s.id for s in everything.items] == sorted(ids, reverse=True)
    assert everything.cursor is None
    done = await store.list(status="done")
    assert {s.id for s in done.items} == set(ids[:3])
    xs = await store.list(agent="x", status=Status.RUNNING)
    assert {s.id for s in xs.items} == {ids[3], ids[5]}
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list(limit=3, cursor=cursor)
        assert len(page.items) <= 3
        seen += [s.id for s in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    with pytest.raises(InvalidCursor):
        await store.list(cursor="%%%not-a-cursor")
    with pytest.raises(ValueError):
        await store.list(status="nonsense")


async def test_events_after(store: Store) -> None:
    t = new_thread()
    await store.create(t)
    await store.append(t.id, [result(i) for i in range(1, 10)], expected_seq=1)
    assert [e.seq for e in await store.events(t.id)] == list(range(10))
    assert [e.seq for e in await store.events(t.id, after=6)] == [7, 8, 9]
    assert [e.seq for e in await store.events(t.id, after=2, limit=2)] == [3, 4]
    assert await store.events(t.id, after=9) == []


async def test_delete(store: Store) -> None:
    keep, gone = new_thread(), new_thread()
    await store.create(keep)
    await store.create(gone)
    await store.delete(gone.id)
    with pytest.raises(ThreadNotFound):
        await store.load(gone.id)
    with pytest.raises(ThreadNotFound):
        await store.delete(gone.id)
    assert len(await store.load(keep.id)) == 1


async def test_projection_tracks_waiting_and_human(store: Store) -> None:
    from threadline.events import Waiting

    t = new_thread()
    await store.create(t)
    until = utcnow() + timedelta(hours=1)
    await store.append(t.id, [Waiting(seq=1, at=utcnow(), until=until)], expected_seq=1)
    summary = await store.get(t.id)
    assert summary.status == Status.WAITING
    assert summary.due_at is not None and abs((summary.due_at - until).total_seconds()) < 0.001
    h = new_thread()
    h.append(HumanRequest(seq=1, at=utcnow(), request_id="r", question="?"))
    await store.create(h)
    assert (await store.get(h.id)).status == Status.AWAITING_HUMAN


# -- corrupt rows and migrations (stores with a database) --------------------------------


async def test_corrupt_row_names_thread_and_seq_and_loses_nothing(store_env: StoreEnv) -> None:
    needs_sql(store_env)
    store = store_env.open()
    bad, good = new_thread(), new_thread()
    for t in (bad, good):
        await store.create(t)
        await store.append(t.id, [result(1), result(2), result(3)], expected_seq=1)
    garbage = "{not json" if store_env.kind == "sqlite" else '{"kind": "no_such_event"}'
    store_env.sql("UPDATE events SET body = ? WHERE thread_id = ? AND seq = 2", (garbage, bad.id))
    with pytest.raises(CorruptEvent) as info:
        await store.load(bad.id)
    assert info.value.thread_id == bad.id and info.value.seq == 2
    assert bad.id in str(info.value) and "2" in str(info.value)
    # Everything else is still readable and nothing was rewritten.
    assert [e.seq for e in await store.events(bad.id, after=2)] == [3]
    assert [e.seq for e in await store.events(bad.id, limit=2)] == [0, 1]
    assert len(await store.load(good.id)) == 4
    rows = store_env.sql("SELECT seq FROM events WHERE thread_id = ? ORDER BY seq", (bad.id,))
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    # An append keeps working from the projection; the corrupt row stays for inspection.
    await store.append(bad.id, [result(4)], expected_seq=4)
    assert (await store.get(bad.id)).next_seq == 5


async def test_migrations_numbered_and_recorded(store_env: StoreEnv) -> None:
    needs_sql(store_env)
    store = store_env.open()
    await store.ping()
    rows = store_env.sql("SELECT version, name FROM threadline_migrations ORDER BY version")
    if store_env.kind == "sqlite":
        from threadline.stores.migrations import SQLITE_MIGRATIONS as expected
    else:
        from threadline.stores.migrations import POSTGRES_MIGRATIONS as expected
    assert [r[0] for r in rows] == list(range(1, len(expected) + 1))
    assert [r[1] for r in rows] == [m[1] for m in expected]
    # Opening the store again applies nothing twice.
    again = store_env.open()
    await again.ping()
    assert len(store_env.sql("SELECT version FROM threadline_migrations")) == len(expected)


async def test_a_write_ahead_record_delivered_twice_is_refused(store: Store) -> None:
    """A `tool_started` is appended only as the next attempt of a pending call. The same
    record again at a later seq (an append sent twice, a second writer) is refused with
    nothing written, so it is never counted as a retry and its writer never runs the tool;
    so are a skipped attempt and a start of a call that is not pending."""
    t = new_thread()
    t.append(ToolCall(seq=1, at=utcnow(), call_id="c1", tool="t", version="1", arguments={}))
    await store.create(t)
    at = utcnow()
    first = ToolStarted(seq=2, at=at, call_id="c1", idempotency_key="k", attempt=1)
    await store.append(t.id, [first], expected_seq=2)
    with pytest.raises(StaleWriteAhead, match="attempt 1 of call c1 was already started"):
        await store.append(t.id, [first.model_copy(update={"seq": 3})], expected_seq=3)
    loaded = await store.load(t.id)
    assert len(loaded) == 3 and loaded.state.pending["c1"].attempt == 1
    failed = ToolAttemptFailed(
        seq=3, at=at, call_id="c1", tool="t", attempt=1, error_type="E", message="m", retry_at=at
    )
    await store.append(t.id, [failed], expected_seq=3)
    for attempt, call_id, why in [
        (1, "c1", "attempt 1 of call c1 was already started"),
        (3, "c1", "call c1 is at attempt 2, not 3"),
        (1, "c9", "call c9 is not pending"),
    ]:
        stale = ToolStarted(seq=4, at=at, call_id=call_id, idempotency_key="k", attempt=attempt)
        with pytest.raises(StaleWriteAhead, match=why):
            await store.append(t.id, [stale], expected_seq=4)
    second = ToolStarted(seq=4, at=at, call_id="c1", idempotency_key="k", attempt=2)
    await store.append(
        t.id, [second, result(5).model_copy(update={"call_id": "c1"})], expected_seq=4
    )
    after = ToolStarted(seq=6, at=at, call_id="c1", idempotency_key="k", attempt=3)
    with pytest.raises(StaleWriteAhead, match="call c1 is not pending"):
        await store.append(t.id, [after], expected_seq=6)
    loaded = await store.load(t.id)
    assert [e.kind for e in loaded.events[2:]] == [
        "tool_started",
        "tool_attempt_failed",
        "tool_started",
        "tool_result",
    ]
    assert (await store.get(t.id)).next_seq == 6 and loaded.state.pending == {}
