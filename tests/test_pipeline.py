"""Pipelining (`threadline.pipeline`): a read-only turn's commit on its way to disk while the
next model call is made, on a real SQLite file at synchronous=FULL.

What must hold (docs/core.md, "Pipelining"): observers and side effects see only durable
events; a commit that fails raises its own error and nothing computed on top of it is
appended; a process killed with a commit in flight leaves every acknowledged event on disk.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pipeline_child
from airline_support import run_recorded, tau_runs
from pipeline_child import slow_disk
from threadline import Agent, Runtime, SQLiteStore, Status, tool
from threadline.errors import AppendConflict
from threadline.events import Event, ModelCall, Thread, ThreadState
from threadline.models.base import Context
from threadline.replay import replay_thread
from threadline.stores import sql
from threadline.stores.behind import Commit
from threadline.stores.dialect import SQLITE
from threadline.stores.rows import Projected
from threadline.stores.sqlite import PIPELINE_DEPTH
from threadline.testing import FunctionModel, intent
from threadline.tools import ToolContext

CHILD = Path(__file__).with_name("pipeline_child.py")


LOOKED_UP: list[str] = []


@tool
def lookup(key: str) -> str:
    """Read-only."""
    LOOKED_UP.append(key)
    return key.upper()


def _looker(
    turns: int, calls: list[int], hold: dict[int, Callable[[], Awaitable[object]]] | None = None
) -> FunctionModel:
    """`turns - 1` lookups, then the final answer; `calls` counts the requests. The call
    numbered `n` awaits `hold[n]()` before it answers (what the test waits on)."""

    async def answer(context: Context) -> dict[str, Any]:
        calls.append(context.model_calls)
        await asyncio.sleep(0)
        if hold is not None and context.model_calls in hold:
            await hold[context.model_calls]()
        if context.model_calls + 1 >= turns:
            return intent("done_for_now", message="done")
        return intent("lookup", key=f"k{context.model_calls}")

    return FunctionModel(answer)


def _on_disk(db: Path) -> dict[str, dict[int, str]]:
    """thread id -> seq -> kind, as committed in the file."""
    out: dict[str, dict[int, str]] = {}
    with sqlite3.connect(db, timeout=10) as conn:
        for thread_id, seq, kind in conn.execute("SELECT thread_id, seq, kind FROM events"):
            out.setdefault(thread_id, {})[seq] = kind
    return out


# -- in process ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2])
async def test_a_read_only_turn_is_one_commit_and_goes_behind_the_next_model_call(
    tmp_path: Path, depth: int
) -> None:
    """The launch's create and ten turns, each committed behind the loop but the last turn
    (followed by no model call); with `pipeline_depth=1` one commit each, with 2 the turns
    that arrive while the one before is still committing share its successor's commit.
    Observers are told of each event only once another connection can read it."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db, pipeline_depth=depth)
    calls: list[int] = []
    unseen: list[tuple[int, str]] = []
    told: list[int] = []

    def on_disk(thread: Thread, events: Sequence[Event]) -> None:
        seqs = _on_disk(db).get(thread.id, {})
        unseen.extend((e.seq, e.kind) for e in events if seqs.get(e.seq) != e.kind)
        told.extend(e.seq for e in events)

    agent = Agent("piped", tools=[lookup], model=_looker(10, calls), max_steps=20)
    rt = Runtime(store, agents=[agent], observers=[on_disk])
    try:
        await rt.launch(agent, "warm up")  # opens the connections
        told.clear()
        stats = store.stats
        before = (stats.commits, stats.behind, stats.queued)
        thread = await rt.launch(agent, "go")
        commits, behind, queued = (
            stats.commits - before[0],
            stats.behind - before[1],
            stats.queued - before[2],
        )
    finally:
        await store.close()
    assert thread.status is Status.DONE
    assert thread.state.model_calls == 10
    if depth == 1:
        assert (commits, behind, queued) == (1 + 10, 1 + 9, 0)
    else:  # every append counted once; the final answer goes behind only to share a commit
        assert commits + queued == 1 + 10
        assert behind in (1 + 9, 1 + 10)
    assert unseen == []
    assert told == list(range(len(thread)))  # every event, once, in order
    assert _on_disk(db)[thread.id] == {e.seq: e.kind for e in thread.events}


@tool(side_effects=True, idempotent=False)
def boom(key: str) -> str:
    """Side effects (never reached in the failing test)."""
    raise AssertionError("a tool ran on top of a failed commit")


_FAIL_AT_COMMIT = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE armed (on_ INTEGER);
INSERT INTO armed VALUES (0);
CREATE TRIGGER fail_at_commit AFTER INSERT ON events
WHEN NEW.kind = 'tool_result' AND (SELECT on_ FROM armed) = 1
BEGIN INSERT INTO child VALUES (-1); END;
"""
"""A commit that fails at `COMMIT` (not at a statement): a deferred foreign key broken by
a trigger on a tool result, while armed. SQLite checks deferred keys when committing."""


def _arm(db: Path, on: bool) -> None:
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("UPDATE armed SET on_ = ?", (int(on),))


def _observed(store: SQLiteStore, agent: Agent) -> tuple[Runtime, list[tuple[int, str]]]:
    """A runtime on `store`, and the (seq, kind) of every event its observers are told of."""
    told: list[tuple[int, str]] = []
    rt = Runtime(
        store,
        agents=[agent],
        observers=[lambda t, events: told.extend((e.seq, e.kind) for e in events)],
    )
    return rt, told


async def _warm_with_a_failing_commit(rt: Runtime, agent: Agent, db: Path) -> None:
    """A first thread run (the connections opened), then `_FAIL_AT_COMMIT` installed."""
    await rt.launch(agent, "warm up")
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.executescript(_FAIL_AT_COMMIT)


def _heard_a_failure(store: SQLiteStore, failed: asyncio.Event) -> None:
    """Set `failed` once the loop hears that a COMMIT behind it failed. The second model
    call waits for it: on a loaded machine the COMMIT could otherwise still be running when
    the second turn is queued, and the third call (the depth allows two turns on their way)
    would go ahead too (seen in CI: calls [0, 1, 2])."""
    land = store._behind._land

    def heard(job: Commit) -> None:
        land(job)
        if job.error is not None:
            failed.set()

    store._behind._land = heard  # type: ignore[method-assign]


async def test_a_failed_commit_discards_the_speculative_turn_and_raises_its_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    calls: list[int] = []
    failed = asyncio.Event()  # the first turn's COMMIT failed, and the loop was told
    hold: dict[int, Callable[[], Awaitable[object]]] = {}
    agent = Agent("piped", tools=[lookup, boom], model=_looker(3, calls, hold), max_steps=20)
    rt, told = _observed(store, agent)
    try:
        await _warm_with_a_failing_commit(rt, agent, db)
        _heard_a_failure(store, failed)
        hold[1] = failed.wait
        _arm(db, True)
        calls.clear()
        told.clear()
        LOOKED_UP.clear()
        thread = await rt.launch(agent, "go", advance=False)
        behind = store.stats.behind
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await rt.advance(thread)
        # The second model call and its read-only tool went ahead of the first turn's
        # commit, which then failed: neither turn is stored, no observer heard of them,
        # and the thread is intact.
        assert calls == [0, 1]
        assert LOOKED_UP == ["k0", "k1"]
        assert told == [(0, "user_message")]  # the launch, nothing after
        assert _on_disk(db)[thread.id] == {0: "user_message"}
        assert len(thread) == 1 and thread.state.model_calls == 0
        assert store.stats.behind == behind  # no pipelined commit counted
        calls.clear()
        await _goes_on_once_the_disk_takes_writes(rt, store, db, thread.id, 1)
    finally:
        await store.close()
    assert calls == [0, 1, 2]


async def _goes_on_once_the_disk_takes_writes(
    rt: Runtime, store: SQLiteStore, db: Path, thread_id: str, at: int
) -> None:
    """The stored thread is `running` at seq `at`: nothing is left that cannot go on, and
    once the disk takes writes again (`_arm` off) it advances to its end."""
    summary = await store.get(thread_id)
    assert (summary.status, summary.next_seq) == (Status.RUNNING, at)
    _arm(db, False)
    done = await rt.advance(thread_id)
    assert done.status is Status.DONE
    assert _on_disk(db)[thread_id] == {e.seq: e.kind for e in done.events}


async def test_a_human_action_during_the_speculative_call_waits_for_the_commit(
    tmp_path: Path,
) -> None:
    """A pause from another store on the same file lands while the first turn's commit is
    in flight and the second model call is being made: it waits for the write lock, lands
    after the first turn, and the second answer is re-based after it (as a held turn is)."""
    db = tmp_path / "t.db"
    store, other = SQLiteStore(db), SQLiteStore(db)
    paused: list[Thread] = []

    async def answer(context: Context) -> dict[str, Any]:
        if context.model_calls == 1:  # the first turn's commit may still be in flight
            paused.append(await Runtime(other, agents=[agent]).pause(thread.id, by="ops"))
        return intent("lookup", key=f"k{context.model_calls}")

    agent = Agent("piped", tools=[lookup], model=FunctionModel(answer), max_steps=20)
    rt = Runtime(store, agents=[agent])
    try:
        await rt.launch(agent, "warm up", advance=False)
        await rt.advance((await rt.launch(agent, "warm", advance=False)).id, max_steps=1)
        thread = await rt.launch(agent, "go", advance=False)
        thread = await rt.advance(thread)
    finally:
        await store.close()
        await other.close()
    kinds = _on_disk(db)[thread.id]
    assert thread.status is Status.PAUSED
    assert [kinds[s] for s in sorted(kinds)][:5] == [
        "user_message",
        "model_call",
        "tool_call",
        "tool_result",
        "paused",
    ]
    assert sorted(kinds) == list(range(len(kinds)))
    assert [e.kind for e in thread.events] == [kinds[s] for s in sorted(kinds)]


async def test_a_cancelled_advance_returns_after_its_commit_and_the_thread_goes_on(
    tmp_path: Path,
) -> None:
    """Cancelled during the model call that went ahead of the first turn's commit: the
    cancellation waits for that commit (everything appended is durable when the call
    ends), and the thread advances again from it."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    asked, stall = asyncio.Event(), [False]

    async def answer(context: Context) -> dict[str, Any]:
        if context.model_calls == 1 and stall[0]:
            stall[0] = False
            asked.set()
            await asyncio.Event().wait()  # cancelled here
        if context.model_calls >= 2:
            return intent("done_for_now", message="done")
        return intent("lookup", key=f"k{context.model_calls}")

    agent = Agent("piped", tools=[lookup], model=FunctionModel(answer), max_steps=20)
    rt = Runtime(store, agents=[agent])
    try:
        await rt.launch(agent, "warm up")
        stall[0] = True
        thread = await rt.launch(agent, "go", advance=False)
        running = asyncio.ensure_future(rt.advance(thread))
        await asked.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        kinds = _on_disk(db)[thread.id]
        assert [kinds[s] for s in sorted(kinds)] == [
            "user_message",
            "model_call",
            "tool_call",
            "tool_result",
        ]
        done = await rt.advance(thread.id)
    finally:
        await store.close()
    assert done.status is Status.DONE
    assert _on_disk(db)[thread.id] == {e.seq: e.kind for e in done.events}


# -- turns queued behind a commit in flight (pipeline_depth=2, 3) --------------------------


def _turns_on_disk(db: Path, thread_id: str) -> int:
    return sum(1 for kind in _on_disk(db).get(thread_id, {}).values() if kind == "model_call")


@pytest.mark.parametrize("depth", [2, 3])
async def test_turns_queued_behind_a_slow_commit_share_the_next_one(
    tmp_path: Path, depth: int
) -> None:
    """A disk slower than a turn: the turn that arrives while the one before is committing
    is queued and shares the next commit, so ten turns take fewer commits; at every model
    call at most `depth` turns are on their way to disk; observers hear of each event once
    it is on disk; `launch` returns with everything durable."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db, pipeline_depth=depth)
    slow_disk(store, 0.03)
    unseen: list[tuple[int, str]] = []
    told: list[int] = []
    undurable: list[int] = []

    async def answer(context: Context) -> dict[str, Any]:
        await asyncio.sleep(0)
        if thread_ids:
            undurable.append(context.model_calls - _turns_on_disk(db, thread_ids[0]))
        if context.model_calls + 1 >= 10:
            return intent("done_for_now", message="done")
        return intent("lookup", key=f"k{context.model_calls}")

    def on_disk(thread: Thread, events: Sequence[Event]) -> None:
        seqs = _on_disk(db).get(thread.id, {})
        unseen.extend((e.seq, e.kind) for e in events if seqs.get(e.seq) != e.kind)
        told.extend(e.seq for e in events)

    thread_ids: list[str] = []
    agent = Agent("piped", tools=[lookup], model=FunctionModel(answer), max_steps=20)
    rt = Runtime(store, agents=[agent], observers=[on_disk])
    try:
        thread = await rt.launch(agent, "go", advance=False)
        thread_ids.append(thread.id)
        told.clear()
        before = (store.stats.commits, store.stats.queued)
        thread = await rt.advance(thread)
        commits, queued = store.stats.commits - before[0], store.stats.queued - before[1]
        on_file = _on_disk(db)[thread.id]  # before the store closes: durable on return
    finally:
        await store.close()
    assert thread.status is Status.DONE and thread.state.model_calls == 10
    assert commits + queued == 10 and queued >= 3
    # The depth is the bound: never more than `depth` turns on their way to disk. That a
    # model call saw exactly that many depends on the machine (a loaded one can finish a
    # 30 ms commit before the next turn asks): `queued` above shows the turns did share
    # commits.
    assert max(undurable) <= depth and min(undurable) >= 0
    assert unseen == []
    assert told == list(range(1, len(thread)))
    assert on_file == {e.seq: e.kind for e in thread.events}


@tool(side_effects=True, idempotent=False)
def charge(amount: int, ctx: ToolContext) -> str:
    """Side effects: records whether its `tool_started` was on disk when it ran."""
    CHARGED.append(_started_on_disk(CHARGE_DB[0], ctx.thread_id, ctx.call_id))
    return f"charged {amount}"


CHARGED: list[bool] = []
CHARGE_DB: list[Path] = []


def _started_on_disk(db: Path, thread_id: str, call_id: str) -> bool:
    with sqlite3.connect(db, timeout=10) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM events WHERE thread_id = ? AND kind = 'tool_started' "
            "AND json_extract(body, '$.call_id') = ?",
            (thread_id, call_id),
        ).fetchone()
    return bool(n == 1)


async def test_a_side_effect_after_queued_turns_runs_only_on_a_durable_tool_started(
    tmp_path: Path,
) -> None:
    """Read-only turns queued behind a slow commit, then a tool with side effects: its
    `tool_started` shares a commit with them (or follows them), and the tool runs only
    once that commit returned."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    slow_disk(store, 0.03)
    plan = ["lookup", "lookup", "lookup", "charge", "lookup", "done"]

    async def answer(context: Context) -> dict[str, Any]:
        step = plan[context.model_calls]
        if step == "done":
            return intent("done_for_now", message="done")
        if step == "charge":
            return intent("charge", amount=5)
        return intent("lookup", key=f"k{context.model_calls}")

    agent = Agent("piped", tools=[lookup, charge], model=FunctionModel(answer), max_steps=20)
    rt = Runtime(store, agents=[agent])
    CHARGED.clear()
    CHARGE_DB[:] = [db]
    try:
        thread = await rt.launch(agent, "go")
        queued = store.stats.queued
    finally:
        await store.close()
    assert thread.status is Status.DONE
    assert CHARGED == [True]
    assert queued >= 1
    assert _on_disk(db)[thread.id] == {e.seq: e.kind for e in thread.events}


async def _another_writer_between_commits(
    db: Path, act: Callable[[Runtime, str], Awaitable[None]]
) -> tuple[Thread | AppendConflict, list[str], list[tuple[int, str]], int, int]:
    """Advance ten turns on a slow disk while `act` runs once from another store on the file
    (on the committing thread, right after the first turn's COMMIT, the next turns queued
    behind it). Returns what `advance` returned or raised, the kinds on disk in order, what
    observers heard, the model calls made and the appends the store queued and committed."""
    store = SQLiteStore(db)
    thread_ids: list[str] = []
    calls: list[int] = []
    agent = Agent("piped", tools=[lookup], model=_looker(10, calls), max_steps=20)

    def elsewhere() -> None:
        async def go() -> None:
            other = SQLiteStore(db)
            try:
                await act(Runtime(other, agents=[agent]), thread_ids[0])
            finally:
                await other.close()

        asyncio.run(go())

    slow_disk(store, 0.03, elsewhere)
    rt, told = _observed(store, agent)
    outcome: Thread | AppendConflict
    try:
        thread = await rt.launch(agent, "go", advance=False)
        thread_ids.append(thread.id)
        told.clear()
        try:
            outcome = await rt.advance(thread)
        except AppendConflict as conflict:
            outcome = conflict
        queued = store.stats.queued
    finally:
        await store.close()
    kinds = _on_disk(db)[thread_ids[0]]
    return outcome, [kinds[s] for s in sorted(kinds)], told, len(calls), queued


FIRST_TURN = ["user_message", "model_call", "tool_call", "tool_result"]


async def test_a_conflict_found_by_queued_turns_cuts_them_off_and_the_thread_goes_on(
    tmp_path: Path,
) -> None:
    """Another store on the file pauses the thread right after the first turn's commit,
    while the next turns are queued behind it: their statements find the row moved,
    nothing of them is stored or observed, and `advance` cuts them off, loads what landed
    (the pause, from outside) and decides on it: the thread ends paused."""

    async def pause(rt: Runtime, thread_id: str) -> None:
        await rt.pause(thread_id, by="ops")

    thread, kinds, told, calls, queued = await _another_writer_between_commits(
        tmp_path / "t.db", pause
    )
    assert isinstance(thread, Thread) and thread.status is Status.PAUSED
    assert kinds == [*FIRST_TURN, "paused"]
    assert [e.kind for e in thread.events] == kinds
    assert told == [(1, "model_call"), (2, "tool_call"), (3, "tool_result")]
    assert calls >= 3  # turns 2 and 3 were asked for, and dropped
    assert queued == 0  # their transaction never committed


async def test_a_conflict_with_another_advancer_found_by_queued_turns_is_raised(
    tmp_path: Path,
) -> None:
    """What lands between the commits is another advancer's (a model's answer, not a human
    action): deciding again on top of it could run a step twice, so `advance` raises the
    conflict, the queued turns cut off, nothing of them stored or observed, and the store
    holds exactly the first turn and the other writer's event."""

    async def answer_elsewhere(rt: Runtime, thread_id: str) -> None:
        seq = (await rt.store.get(thread_id)).next_seq
        event = ModelCall(seq=seq, at=datetime.now(UTC), model="elsewhere")
        await rt.store.append(thread_id, [event], expected_seq=seq)

    raised, kinds, told, calls, queued = await _another_writer_between_commits(
        tmp_path / "t.db", answer_elsewhere
    )
    assert isinstance(raised, AppendConflict)
    assert kinds == [*FIRST_TURN, "model_call"]
    assert told == [(1, "model_call"), (2, "tool_call"), (3, "tool_result")]
    assert calls >= 3  # turns 2 and 3 were asked for, and dropped
    assert queued == 0  # their transaction never committed


@pytest.mark.parametrize("threads", [2, 8])
async def test_threads_pipelined_together_without_group_commit_all_finish(
    tmp_path: Path, threads: int
) -> None:
    """Several threads' turns pipelined on one store with group commit off: a thread's
    append can arrive after another thread's `COMMIT` returned but before the loop heard of
    it. It must not take that commit's place (the other thread's join then waited forever:
    every run of two threads hung, seen in bench/concurrency.py with group commit off).

    Whether a turn goes behind the loop at all depends on timing: with group commit off,
    another thread's append runs on the store's thread, and while that holds the write lock
    the inline `BEGIN IMMEDIATE` finds it busy and the turn runs there too (on a loaded
    machine, every turn of a run did). So the run is repeated, each round checked in full,
    until one round put turns behind the loop."""
    behind = 0
    for round_ in range(5):
        db = tmp_path / f"t{round_}.db"
        store = SQLiteStore(db, group_window=0)
        calls: list[int] = []
        agent = Agent("piped", tools=[lookup], model=_looker(10, calls), max_steps=30)
        rt = Runtime(store, agents=[agent])
        try:
            launched = [rt.launch(agent, f"go {i}") for i in range(threads)]
            done = await asyncio.wait_for(asyncio.gather(*launched), 60)
            behind = store.stats.behind
        finally:
            await store.close()
        assert [t.status for t in done] == [Status.DONE] * threads
        disk = _on_disk(db)
        for thread in done:
            assert disk[thread.id] == {e.seq: e.kind for e in thread.events}
        if behind > 0:
            break
    assert behind > 0  # in some round, turns did go behind the loop


async def test_a_failed_commit_drops_every_queued_turn_it_carried(tmp_path: Path) -> None:
    """The commit carrying two queued turns fails (a deferred foreign key broken by a
    trigger armed right after the first turn's commit): the error is raised from
    `advance`, neither turn is stored or observed, the first turn is, and the thread
    advances to its end once the disk takes writes again."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    calls: list[int] = []
    agent = Agent("piped", tools=[lookup], model=_looker(10, calls), max_steps=20)
    rt, told = _observed(store, agent)
    try:
        await _warm_with_a_failing_commit(rt, agent, db)
        thread = await rt.launch(agent, "go", advance=False)
        slow_disk(store, 0.03, lambda: _arm(db, True))  # right after the first turn's COMMIT
        told.clear()
        calls.clear()
        queued = store.stats.queued
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await rt.advance(thread)
        assert _on_disk(db)[thread.id] == {
            0: "user_message",
            1: "model_call",
            2: "tool_call",
            3: "tool_result",
        }
        assert told == [(1, "model_call"), (2, "tool_call"), (3, "tool_result")]
        assert len(thread) == 4 and thread.state.model_calls == 1
        assert len(calls) >= 3
        assert store.stats.queued == queued  # the two-turn commit failed: not counted
        await _goes_on_once_the_disk_takes_writes(rt, store, db, thread.id, 4)
    finally:
        await store.close()


# -- SIGKILL with a commit in flight -----------------------------------------------------


class _Child:
    def __init__(self, db: Path, effects: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(effects)],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def kill_in_flight(self, acks: int, flying: int = 1) -> None:
        """Read on to `acks` acknowledgements, then SIGKILL right after an append that
        returned before its COMMIT, with `flying` appends at least on their way to disk."""
        assert self.proc.stdout is not None
        seen, up = 0, set()
        while True:
            line = self.proc.stdout.readline()
            assert line, "the child died before the kill"
            self.lines.append(line.strip())
            seen += line.startswith("ack ")
            fact = line.split()
            if fact[0] == "flying":
                up.add((fact[1], fact[2]))
            elif fact[0] == "landed":
                up.discard((fact[1], fact[2]))
            if seen >= acks and fact[0] == "flying" and len(up) >= flying:
                break
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.lines.extend(self.proc.stdout.read().splitlines())
        self.proc.stdout.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_with_pipelined_commits_in_flight(tmp_path: Path, seed: int) -> None:
    """Killed right after an append returned with its COMMIT still going, two turns or
    more on their way to disk (queued behind the first; at most `pipeline_depth`, 3 by
    default): every event an observer was told of is on disk, the turns in flight are all
    there or not at all (whole turns, in order) and were told to no observer, and the tool
    with side effects ran only on a durable `tool_started`. Tried up to 8 times for a kill
    that beat two COMMITs (checked every time); then the threads left running are resumed
    to their end, with no side effect run twice."""
    most = 0
    for attempt in range(8):
        db, effects = tmp_path / f"k{attempt}.db", tmp_path / f"effects{attempt}"
        child = _Child(db, effects)
        child.kill_in_flight(random.Random(seed * 10 + attempt).randrange(20, 200), flying=2)
        most = max(most, _check_after_kill(db, effects, child.lines))
        _resume(db, effects)
        if most >= 2:
            break
    assert most >= 2, "no kill landed while two pipelined turns were in flight"


def _check_after_kill(db: Path, effects: Path, lines: list[str]) -> int:
    """The checks of one kill; how many pipelined appends were still in flight."""
    disk = _on_disk(db)
    acks = [line.split() for line in lines if line.startswith("ack ")]
    assert acks
    for _, thread_id, seq, kind in acks:
        assert disk.get(thread_id, {}).get(int(seq)) == kind, f"acknowledged, not on disk: {seq}"
    for seqs in disk.values():
        assert sorted(seqs) == list(range(len(seqs)))  # dense: nothing half-written
    flying = {(f[1], int(f[2])) for f in (ln.split() for ln in lines) if f[0] == "flying"}
    landed = {(f[1], int(f[2])) for f in (ln.split() for ln in lines) if f[0] == "landed"}
    acked = {(a[1], int(a[2])) for a in acks}
    in_flight = flying - landed
    for thread_id in {t for t, _ in in_flight}:
        # Each pipelined append is a turn: all of it on disk, or none of it, and none of
        # those after it unless it is; no observer was told of any of them.
        starts = sorted(s for t, s in in_flight if t == thread_id)
        stored = len(disk.get(thread_id, {}))  # 0: its create was in flight, and is not there
        assert stored in starts or stored > starts[-1]
        firsts = ("user_message", "model_call")  # a thread's create, or a turn
        assert all(disk[thread_id][s] in firsts for s in starts if s < stored)
        if stored > starts[-1]:  # the last one whole: it ends a turn, or is the create
            last = disk[thread_id][stored - 1]
            assert last in ("user_message", "tool_result", "tool_started", "done")
        assert not any(t == thread_id and s >= starts[0] for t, s in acked)
    ran = effects.read_text().split("\n") if effects.exists() else []
    for line in filter(None, ran):
        thread_id, call_id, started = line.split()
        assert started == "1", f"{call_id} ran before its tool_started was committed"
        with sqlite3.connect(db) as conn:
            (durable,) = conn.execute(
                "SELECT count(*) FROM events WHERE thread_id = ? AND kind = 'tool_started' "
                "AND json_extract(body, '$.call_id') = ?",
                (thread_id, call_id),
            ).fetchone()
        assert durable == 1
    # One thread advances at a time, with at most `pipeline_depth` appends on their way.
    assert len(in_flight) <= PIPELINE_DEPTH
    return len(in_flight)


def _resume(db: Path, effects: Path) -> None:
    """Advance every thread the kill left running, in this process: each ends, and no
    call with side effects ran twice (one that may have run is escalated, not re-run)."""
    pipeline_child.DB, pipeline_child.EFFECTS = str(db), str(effects)

    async def go() -> list[Thread]:
        store = SQLiteStore(db)
        rt = Runtime(store, agents=[pipeline_child.agent()])
        try:
            page = await store.list(status=Status.RUNNING)
            return [await rt.advance(summary.id) for summary in page.items]
        finally:
            await store.close()

    for thread in asyncio.run(go()):
        assert thread.status in (Status.DONE, Status.ESCALATED)
    ran = effects.read_text().splitlines() if effects.exists() else []
    calls = [tuple(line.split()[:2]) for line in ran]
    assert len(calls) == len(set(calls))


def _recorded_shape(thread: Thread) -> list[dict[str, Any]]:
    """The thread's events as stored, less what differs between two runs of the same
    conversation (times, and idempotency keys, which name the thread)."""
    vary = {"at", "latency_ms", "idempotency_key"}
    return [e.model_dump(mode="json", exclude=vary) for e in thread.events]


async def test_recorded_airline_runs_pipelined_on_sqlite_are_the_runs_in_memory(
    tmp_path: Path,
) -> None:
    """Real material: every tenth of the 200 recorded airline conversations (reads
    pipelined, writes behind approvals), run on SQLite FULL with pipelining and in a
    MemoryStore, give the same events; the file, read by a fresh store, holds exactly
    them, and they replay. (All 200 were run the same way once: the same, 93% of the
    commits behind the loop; docs/core.md.)"""
    behind = 0
    for i, run in enumerate(tau_runs()[::10]):
        _, in_memory = await run_recorded(run)
        store = SQLiteStore(str(tmp_path / f"run{i}.db"))
        agent, pipelined = await run_recorded(run, store=store)
        behind += store.stats.behind
        await store.close()
        fresh = SQLiteStore(str(tmp_path / f"run{i}.db"))
        stored = await fresh.load(pipelined.id)
        await fresh.close()
        assert _recorded_shape(pipelined) == _recorded_shape(in_memory), run["task_id"]
        assert _recorded_shape(stored) == _recorded_shape(in_memory), run["task_id"]
        assert stored.status == in_memory.status
        replay_thread(agent, stored)
    assert behind > 0


def _log_projections(db: Path) -> None:
    """Log every projection written to a thread's row (its `INSERT` and each `UPDATE`) in
    `projections`, by a trigger in the database itself."""
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE projections (id, next_seq, status, due_at, state)")
        for write in ("INSERT", "UPDATE"):
            conn.execute(
                f"CREATE TRIGGER projected_{write} AFTER {write} ON threads BEGIN INSERT INTO "
                "projections VALUES (new.id, new.next_seq, new.status, new.due_at, new.state); END"
            )


async def check_projections(db: Path, threads: Sequence[Thread]) -> int:
    """Check that every projection `_log_projections` logged is the fold of the thread's
    stored events up to its `next_seq`; returns how many were checked."""
    fresh = SQLiteStore(str(db))
    stored = {t.id: (await fresh.load(t.id)).events for t in threads}
    await fresh.close()
    with sqlite3.connect(db) as conn:
        logged = conn.execute("SELECT * FROM projections ORDER BY rowid").fetchall()
    for thread_id, next_seq, status, due_at, state in logged:
        fold = Thread(thread_id, "airline", stored[thread_id][:next_seq]).state
        assert json.loads(state) == fold.to_dict(), (thread_id, next_seq)
        assert (status, due_at) == (fold.status.value, SQLITE.at(fold.waiting_until))
    assert {row[0] for row in logged} == set(stored)
    return len(logged)


async def test_recorded_airline_runs_write_the_fold_of_their_stored_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real material: every tenth of the 200 recorded airline conversations on one SQLite
    FULL store, pipelined: each projection written to a thread's row (logged by a trigger,
    every `INSERT` and `UPDATE`) is the fold of the thread's stored events up to its
    `next_seq`, though the read-only turns' appends write the runtime's own fold instead
    of folding their events again (`append_behind`'s `folded`: what the store remembers
    of a thread after such a turn is its projection). (All 200 were checked the same way
    once: docs/performance.md, "The second fold".)"""
    taken: list[int] = []

    class Taken(Projected):  # counts the appends that took the runtime's fold
        __slots__ = ()

        def __init__(self, state: ThreadState) -> None:
            super().__init__(state)
            taken.append(self.next_seq)

    monkeypatch.setattr(sql, "Projected", Taken)
    db = tmp_path / "runs.db"
    store = SQLiteStore(str(db))
    await store.ping()  # the schema, for the trigger
    _log_projections(db)
    threads = [(await run_recorded(run, store=store))[1] for run in tau_runs()[::10]]
    await store.close()
    checked = await check_projections(db, threads)
    assert len(taken) > checked / 2, (len(taken), checked)


async def _recorded_together(
    runs: list[dict[str, Any]], db: Path
) -> tuple[list[tuple[Agent, Thread]], SQLiteStore]:
    """`runs` advanced concurrently on one SQLite FULL store (their appends grouped)."""
    store = SQLiteStore(str(db))
    together = await asyncio.gather(*(run_recorded(run, store=store) for run in runs))
    return together, store


async def test_recorded_airline_runs_advanced_together_group_commit_the_runs_in_memory(
    tmp_path: Path,
) -> None:
    """Real material: a quarter of the 200 recorded airline conversations advanced at once
    on one SQLite FULL store, their appends grouped (committed on the event loop), give the
    same events as each alone in memory; a fresh store reads exactly them back, and they
    replay. (All 200 were run the same way once: docs/performance.md, "Group commit on the
    event loop".)"""
    runs = tau_runs()[::4]
    together, store = await _recorded_together(runs, tmp_path / "together.db")
    stats = store.stats
    await store.close()
    # How many appends find company depends on the machine's load (a quarter when quiet,
    # a sixth at load 3.5): what this test needs is that the group path was taken.
    assert stats.groups > 0 and stats.grouped > 0, "the concurrent runs' appends were not grouped"
    fresh = SQLiteStore(str(tmp_path / "together.db"))
    for run, (agent, thread) in zip(runs, together, strict=True):
        _, in_memory = await run_recorded(run)
        stored = await fresh.load(thread.id)
        assert _recorded_shape(thread) == _recorded_shape(in_memory), run["task_id"]
        assert _recorded_shape(stored) == _recorded_shape(in_memory), run["task_id"]
        assert stored.status == in_memory.status
        replay_thread(agent, stored)
    await fresh.close()
