"""The queries written once (`SQLStore`), on rows this code did not write."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from store_env import StoreEnv, needs_sql

from threadline.errors import CorruptEvent, StaleWriteAhead
from threadline.events import (
    Event,
    ModelCall,
    Status,
    Thread,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
    utcnow,
)
from threadline.stores import SQLStore
from threadline.stores.rows import Projected


def _old_rows(env: StoreEnv, thread_id: str) -> None:
    """A thread as earlier releases wrote it: raw rows, not written by this code."""
    now = utcnow()
    events = [
        UserMessage(seq=0, at=now, text="hi"),
        ToolResult(seq=1, at=now, call_id="c1", tool="t", result={"ok": True}),
    ]
    state = {"next_seq": 2, "model_calls": 0, "pending": [], "last_kind": "tool_result"}
    json_cast = "::jsonb" if env.kind == "postgres" else ""
    time = now.isoformat()
    env.sql(
        "INSERT INTO threads (id, agent, status, next_seq, schema_version, metadata, state, "
        f"created_at, updated_at) VALUES (?, 'old', 'running', 2, 1, ?{json_cast}, "
        f"?{json_cast}, ?, ?)",
        (thread_id, json.dumps({"channel": "cli"}), json.dumps(state), time, time),
    )
    for e in events:
        env.sql(
            "INSERT INTO events (thread_id, seq, kind, at, body) "
            f"VALUES (?, ?, ?, ?, ?{json_cast})",
            (thread_id, e.seq, e.kind, e.at.isoformat(), e.model_dump_json()),
        )


async def test_rows_written_by_earlier_versions_load_lease_and_append(store_env: StoreEnv) -> None:
    needs_sql(store_env)
    store = store_env.open()
    assert isinstance(store, SQLStore)
    await store.ping()
    _old_rows(store_env, "th_old")
    thread = await store.load("th_old")
    assert [e.seq for e in thread.events] == [0, 1]
    assert thread.metadata == {"channel": "cli"} and thread.agent == "old"
    summary = await store.get("th_old")
    assert (summary.status, summary.next_seq) == (Status.RUNNING, 2)
    assert [s.id for s in (await store.list(agent="old")).items] == ["th_old"]
    [lease] = await store.lease("w", ttl=30, thread_ids=["th_old"])
    assert timedelta(seconds=20) < lease.expires - utcnow() <= timedelta(seconds=30)
    fresh = store_env.open()  # no cached state: the stored projection is read
    await fresh.append(
        "th_old",
        [ToolResult(seq=2, at=utcnow(), call_id="c2", tool="t", result=2)],
        expected_seq=2,
        lease=lease,
    )
    assert len(await store.load("th_old")) == 3


async def test_a_bad_thread_row_is_skipped_and_reported_by_list(store_env: StoreEnv) -> None:
    needs_sql(store_env)
    store = store_env.open()
    ids = []
    for n in range(5):
        thread = Thread(f"th_list{n}", "lister", [UserMessage(seq=0, at=utcnow(), text="hi")])
        await store.create(thread)
        ids.append(thread.id)
    bad_json = "'[1, 2]'::jsonb" if store_env.kind == "postgres" else "'{not json'"
    store_env.sql(f"UPDATE threads SET metadata = {bad_json} WHERE id = '{ids[1]}'")
    store_env.sql(f"UPDATE threads SET status = 'zombie' WHERE id = '{ids[3]}'")
    page = await store.list()
    assert [s.id for s in page.items] == [ids[4], ids[2], ids[0]]
    assert {b.id: b.reason.split(":")[0] for b in page.skipped} == {
        ids[3]: "thread row does not parse",
        ids[1]: "thread row does not parse",
    }
    assert "zombie" in next(b.reason for b in page.skipped if b.id == ids[3])
    # Paging counts the bad rows in their place: nothing is listed twice or lost.
    seen, skipped, cursor = [], [], None
    while True:
        page = await store.list(limit=2, cursor=cursor)
        seen += [s.id for s in page.items]
        skipped += [b.id for b in page.skipped]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [ids[4], ids[2], ids[0]] and skipped == [ids[3], ids[1]]


async def test_a_hole_in_the_events_is_a_corrupt_event_naming_the_missing_seq(
    store_env: StoreEnv,
) -> None:
    needs_sql(store_env)
    store = store_env.open()
    events = [UserMessage(seq=n, at=utcnow(), text=f"m{n}") for n in range(5)]
    await store.create(Thread("th_holed", "a", events))
    store_env.sql("DELETE FROM events WHERE thread_id = 'th_holed' AND seq = 2")
    fresh = store_env.open()
    for read in (
        fresh.load("th_holed"),
        fresh.events("th_holed"),
        fresh.events("th_holed", after=0),
    ):
        with pytest.raises(CorruptEvent) as caught:
            await read
        assert (caught.value.thread_id, caught.value.seq) == ("th_holed", 2)
        assert "missing" in caught.value.reason
    assert [e.seq for e in await fresh.events("th_holed", after=2)] == [3, 4]


@pytest.mark.parametrize("behind", [False, True])
async def test_an_append_rewrites_a_status_the_row_holds_wrongly(
    store_env: StoreEnv, behind: bool
) -> None:
    """A known-state append whose status does not change leaves SQLite's `status` column
    out of its `UPDATE`, checking the row holds it: a row whose status differs (written by
    hand) gets the whole projection written, as the full append does, not a conflict."""
    needs_sql(store_env)
    store = store_env.open()
    await store.create(Thread("th_status", "a", [UserMessage(seq=0, at=utcnow(), text="hi")]))
    store_env.sql("UPDATE threads SET status = 'paused' WHERE id = 'th_status'")
    for seq in (1, 2):  # the store knows the state: running before and after
        event = UserMessage(seq=seq, at=utcnow(), text="again")
        if behind:
            durable = await store.append_behind("th_status", [event], expected_seq=seq)
            if durable is not None:
                await durable
        else:
            await store.append("th_status", [event], expected_seq=seq)
        assert store_env.sql("SELECT status FROM threads WHERE id = 'th_status'") == [("running",)]
        store_env.sql("UPDATE threads SET status = 'paused' WHERE id = 'th_status'")
    summary = await store.get("th_status")
    assert (summary.status, summary.next_seq) == (Status.PAUSED, 3)  # poked again last
    assert len(await store.load("th_status")) == 3


def _turn(seq: int, call_id: str, *, result: bool = True) -> list[Event]:
    """A read-only turn at `seq`: a model call, its call and (`result`) the call's result."""
    now = utcnow()
    turn: list[Event] = [
        ModelCall(seq=seq, at=now, model="m", input_tokens=3, output_tokens=2, cost_usd=0.25),
        ToolCall(
            seq=seq + 1, at=now, call_id=call_id, tool="look", version="1", arguments={"k": 1}
        ),
    ]
    if result:
        turn.append(ToolResult(seq=seq + 2, at=now, call_id=call_id, tool="look", result="A"))
    return turn


async def _append(store: SQLStore, caller: Thread, events: list[Event], *, folded: bool) -> None:
    """`events` appended behind as the runtime does (its own fold handed over if `folded`)."""
    expected = caller.next_seq
    caller.extend(events)
    state = caller.state if folded else None
    durable = await store.append_behind(caller.id, events, expected_seq=expected, folded=state)
    if durable is not None:
        await durable


async def _projection_is_the_fold(env: StoreEnv, thread_id: str) -> None:
    """The thread's row holds the fold of its stored events (read by a store that has
    remembered nothing)."""
    thread = await env.open().load(thread_id)
    [(state, status, next_seq)] = env.sql(
        "SELECT state, status, next_seq FROM threads WHERE id = ?", (thread_id,)
    )
    assert (json.loads(state) if isinstance(state, str) else state) == thread.state.to_dict()
    assert (status, next_seq) == (thread.status.value, thread.next_seq)


async def test_an_append_writes_the_callers_fold_and_keeps_nothing_of_it(
    store_env: StoreEnv,
) -> None:
    """A known-state append handed its caller's fold (`append_behind`'s `folded`) writes
    that state's projection instead of folding the events again; the caller goes on folding
    into the same object, and what the store remembers is not changed by it: the appends
    after it, folded by the store from what it remembered, write the stored events' fold."""
    needs_sql(store_env)
    store = store_env.open()
    assert isinstance(store, SQLStore)
    caller = Thread("th_fold", "a", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await store.create(caller)
    for turn in range(3):
        await _append(store, caller, _turn(caller.next_seq, f"c{turn}"), folded=True)
        assert isinstance(store._states["th_fold"], Projected)  # taken, not folded again
        await _projection_is_the_fold(store_env, "th_fold")
    caller.state.model_calls, caller.state.last_error = 99, "the caller's, not stored"
    again = [UserMessage(seq=caller.next_seq, at=utcnow(), text="again")]
    await _append(store, caller, again, folded=False)
    assert not isinstance(store._states["th_fold"], Projected)
    await _projection_is_the_fold(store_env, "th_fold")  # 3 model calls, no error


async def test_a_fold_with_pending_calls_or_ending_elsewhere_is_folded_by_the_store(
    store_env: StoreEnv,
) -> None:
    """A caller's fold that holds pending calls (their arguments are the caller's dicts)
    or does not end where the events end is not taken: the store folds them itself, so
    the caller changing its pending call's arguments afterwards, or handing a state from
    before the events, changes nothing stored."""
    needs_sql(store_env)
    store = store_env.open()
    assert isinstance(store, SQLStore)
    caller = Thread("th_pending", "a", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await store.create(caller)
    await _append(store, caller, _turn(1, "c1", result=False), folded=True)  # c1 pending
    assert not isinstance(store._states["th_pending"], Projected)
    caller.state.pending["c1"].arguments["k"] = "changed by the caller"
    await _append(store, caller, [UserMessage(seq=3, at=utcnow(), text="and")], folded=False)
    await _projection_is_the_fold(store_env, "th_pending")  # c1's arguments as called
    result = [ToolResult(seq=4, at=utcnow(), call_id="c1", tool="look", result="A")]
    await _append(store, caller, result, folded=True)
    assert isinstance(store._states["th_pending"], Projected)  # nothing pending: taken
    before = caller.state.copy()  # nothing pending either, and the same last kind
    durable = await store.append_behind("th_pending", _turn(5, "c2"), expected_seq=5, folded=before)
    if durable is not None:
        await durable
    assert not isinstance(store._states["th_pending"], Projected)
    await _projection_is_the_fold(store_env, "th_pending")  # the turn's, at seq 8


async def test_a_write_ahead_is_checked_whatever_the_caller_folded(store_env: StoreEnv) -> None:
    """A `tool_started` among the events is checked against the store's own state
    (`start_refused`) even when the caller hands its fold: a write-ahead delivered again at
    a later seq, by a caller whose fold (no pending call, ending where the events end)
    would otherwise be taken, raises StaleWriteAhead and writes nothing."""
    needs_sql(store_env)
    store = store_env.open()
    assert isinstance(store, SQLStore)
    caller = Thread("th_ahead", "a", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await store.create(caller)
    await _append(store, caller, _turn(1, "c1", result=False), folded=True)
    now = utcnow()

    def started(seq: int) -> list[Event]:
        return [
            ToolStarted(seq=seq, at=now, call_id="c1", idempotency_key="k1", attempt=1),
            ToolResult(seq=seq + 1, at=now, call_id="c1", tool="look", result="A"),
        ]

    await _append(store, caller, started(3), folded=True)
    with pytest.raises(StaleWriteAhead):
        await _append(store, caller, started(5), folded=True)  # c1 is no longer pending
    assert not caller.state.pending and caller.state.last_kind == "tool_result"
    assert (await store.get("th_ahead")).next_seq == 5
    await _projection_is_the_fold(store_env, "th_ahead")
