"""`threadline.stores.behind`: a lone thread's appends queued behind its `COMMIT` in flight
share the next one, on a real SQLite file (synchronous=FULL). The disk is made slower than
the loop (`slow_disk`: each `COMMIT` reported late) so that the appends do queue."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from commit_proxies import GatedFailingCommit

from pipeline_child import slow_disk
from threadline import SQLiteStore, Thread
from threadline.errors import AppendConflict, ConfigError, LeaseLost
from threadline.events import ToolCall, UserMessage, utcnow
from threadline.stores import write_lock

ID = "th_behind"


def _msg(seq: int) -> UserMessage:
    return UserMessage(seq=seq, at=utcnow(), text=f"m{seq}")


async def _store(db: Path, depth: int = 2, late: float = 0.05) -> SQLiteStore:
    store = SQLiteStore(db, pipeline_depth=depth)
    await store.create(Thread(ID, "a", [_msg(0)]))
    await store.append(ID, [_msg(1)], expected_seq=1)  # the inline connection is open
    slow_disk(store, late)
    return store


async def _behind(store: SQLiteStore, seq: int) -> asyncio.Future[None]:
    """An append that returns before durable; what completes when it is."""
    durable = await store.append_behind(ID, [_msg(seq)], expected_seq=seq)
    assert durable is not None
    return asyncio.ensure_future(durable)


async def _append_elsewhere(db: Path, seq: int) -> None:
    """Another store's append (another process's, as far as this store knows) at `seq`."""
    other = SQLiteStore(db)
    try:
        await other.append(ID, [_msg(seq)], expected_seq=seq)
    finally:
        await other.close()


def _seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM events ORDER BY seq")]


async def test_appends_queued_behind_a_commit_share_the_next_one(tmp_path: Path) -> None:
    store = await _store(tmp_path / "t.db")
    try:
        commits = store.stats.commits
        first = await _behind(store, 2)  # statements now, COMMIT behind
        second = await _behind(store, 3)  # queued: returns at once
        assert not first.done() and not second.done()
        # A third would put three on their way: it waits for the first COMMIT, then goes
        # in one transaction with the second.
        third = await _behind(store, 4)
        assert first.done() and not second.done()
        await asyncio.gather(second, third)
        assert store.stats.commits - commits == 2 and store.stats.queued == 1
        assert _seqs(tmp_path / "t.db") == [0, 1, 2, 3, 4]
        assert (await store.get(ID)).next_seq == 5
    finally:
        await store.close()


async def test_a_lone_queued_append_waits_for_the_next_to_fill_its_transaction(
    tmp_path: Path,
) -> None:
    """After a transaction lands, one queued append (fewer than `depth`) is not committed
    alone at once: the next append, arriving before the loop next waits, goes with it;
    without one, the loop's next wait commits it."""
    store = await _store(tmp_path / "t.db")
    try:
        commits = store.stats.commits
        await _behind(store, 2)  # in flight
        await _behind(store, 3)  # queued
        await _behind(store, 4)  # waited, then went with 3
        fifth = await _behind(store, 5)  # waited for 3 and 4; now queued alone
        sixth = await _behind(store, 6)  # no wait between: the two share a transaction
        await asyncio.gather(fifth, sixth)
        assert store.stats.commits - commits == 3 and store.stats.queued == 2
        seventh = await _behind(store, 7)  # alone, nothing in flight: the wait commits it
        await seventh
        assert store.stats.commits - commits == 4
        assert _seqs(tmp_path / "t.db") == list(range(8))
    finally:
        await store.close()


def _row_updates(db: Path) -> None:
    """Log each update of a thread's row (its `next_seq` after it) in `updates`."""
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE updates (next_seq INTEGER)")
        conn.execute(
            "CREATE TRIGGER logged AFTER UPDATE ON threads "
            "BEGIN INSERT INTO updates VALUES (new.next_seq); END"
        )


def _updates(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [n for (n,) in conn.execute("SELECT next_seq FROM updates ORDER BY rowid")]


async def test_queued_appends_are_written_as_one_update_and_one_insert(tmp_path: Path) -> None:
    """The known-state appends queued in one transaction write the thread's row once (the
    last one's projection, the first one's checks: `known.merged`) and their events in one
    `INSERT`; the rows are what the appends one after the other leave."""
    db = tmp_path / "t.db"
    store = await _store(db, depth=3)
    _row_updates(db)
    try:
        first = await _behind(store, 2)  # alone: its own UPDATE
        queued = [await _behind(store, seq) for seq in (3, 4, 5)]  # the third waits
        await asyncio.gather(first, *queued)
        assert _updates(db) == [3, 6]  # not [3, 4, 5, 6]
        assert _seqs(db) == list(range(6))
        assert (await store.get(ID)).next_seq == 6
        thread = await SQLiteStore(db).load(ID)
        assert [e.text for e in thread.events] == [f"m{seq}" for seq in range(6)]  # type: ignore[union-attr]
        with sqlite3.connect(db) as conn:
            (state,) = conn.execute("SELECT state FROM threads").fetchone()
        assert json.loads(state)["next_seq"] == 6
    finally:
        await store.close()


async def test_merged_queued_appends_find_a_wrong_status_and_write_the_whole_row(
    tmp_path: Path,
) -> None:
    """A status written by hand while queued appends wait (their `UPDATE` checks the status
    it keeps): the merged write is refused for it alone and writes the whole projection,
    every append stored, as one after the other would."""
    db = tmp_path / "t.db"
    store = await _store(db, late=0.0)
    _row_updates(db)

    def poke() -> None:  # by hand, right after the first COMMIT
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE threads SET status = 'paused' WHERE id = ?", (ID,))

    try:
        slow_disk(store, 0.05, poke)
        first = await _behind(store, 2)
        second = await _behind(store, 3)
        third = await _behind(store, 4)
        await asyncio.gather(first, second, third)
        summary = await store.get(ID)
        assert (summary.status, summary.next_seq) == ("running", 5)
        assert _seqs(db) == list(range(5))
        assert _updates(db) == [3, 3, 5]  # ours, the poke, the rewrite after the refusal
    finally:
        await store.close()


async def test_depth_one_waits_for_each_commit(tmp_path: Path) -> None:
    """`pipeline_depth=1`: nothing queues; the caller's `after` (its join) orders them."""
    store = await _store(tmp_path / "t.db", depth=1)
    try:
        commits = store.stats.commits
        for seq in (2, 3, 4):
            durable = await _behind(store, seq)
            await durable
        assert store.stats.commits - commits == 3 and store.stats.queued == 0
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="pipeline_depth"):
        SQLiteStore.from_url(f"sqlite:///{tmp_path}/u.db?pipeline_depth=0")


async def test_a_conflict_at_queued_statements_fails_it_and_everything_after_it(
    tmp_path: Path,
) -> None:
    """Another writer appends right after the first COMMIT, before the queued appends'
    statements run: they raise `AppendConflict` from their awaitables (not from the call,
    which had returned), and nothing of them is stored."""
    db = tmp_path / "t.db"
    store = await _store(db, late=0.0)

    def intrude() -> None:  # another process's append, on the committing thread
        asyncio.run(_append_elsewhere(db, 3))

    try:
        slow_disk(store, 0.05, intrude)
        first = await _behind(store, 2)
        second = await _behind(store, 3)
        third = await _behind(store, 4)
        await first
        for queued in (second, third):
            with pytest.raises(AppendConflict):
                await queued
        assert _seqs(db) == [0, 1, 2, 3]  # the intruder's row 3, none of ours
        # The store forgot the state it had remembered: the next append finds the row.
        with pytest.raises(AppendConflict):
            await store.append(ID, [_msg(3)], expected_seq=3)
        await store.append(ID, [_msg(4)], expected_seq=4)
    finally:
        await store.close()


async def test_queued_appends_whose_commit_cannot_be_handed_off_fail_and_nothing_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the queued appends' `COMMIT` cannot be handed to the committing thread (say the
    process can start no thread), their transaction is rolled back and their awaitables
    raise that error, the one waiting at the depth included: no append is left waiting for
    ever, nothing of them is stored, and the store takes the next append."""
    db = tmp_path / "t.db"
    store = await _store(db)
    try:
        first = await _behind(store, 2)  # its COMMIT handed off
        second = await _behind(store, 3)  # queued behind it
        flusher = store._behind._flusher
        assert flusher is not None

        def refuse(*_: object) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(flusher, "hand", refuse)
        # Waits at the depth for the first COMMIT, whose landing begins the second's and
        # this one's transaction, whose hand-off is refused.
        third = await asyncio.wait_for(_behind(store, 4), 10)
        await first
        for queued in (second, third):
            with pytest.raises(RuntimeError, match="can't start new thread"):
                await asyncio.wait_for(queued, 10)
        monkeypatch.undo()
        assert _seqs(db) == [0, 1, 2]
        await store.append(ID, [_msg(3)], expected_seq=3)
        assert _seqs(db) == [0, 1, 2, 3]
    finally:
        await store.close()


@pytest.mark.parametrize("depth", [2, 3])
async def test_a_failed_queued_append_leaves_no_state_remembered(
    tmp_path: Path, depth: int
) -> None:
    """Queued appends that failed (a conflict at their statements) are forgotten by the
    store with them: another process then takes the row to the seq the store would have
    believed, and the store's next append writes the projection of what is stored, not
    of its own appends that failed (a pending call none of the stored events made). At
    depth 2 the last append fails while it waits at the depth, before it returned; at 3
    all have returned."""
    db = tmp_path / "t.db"
    store = await _store(db, depth=depth, late=0.0)

    try:
        slow_disk(store, 0.05, lambda: asyncio.run(_append_elsewhere(db, 3)))
        first = await _behind(store, 2)
        call = ToolCall(seq=3, at=utcnow(), call_id="c1", tool="t", version="1", arguments={})
        second = await store.append_behind(ID, [call], expected_seq=3)
        third = await _behind(store, 4)
        await first
        for queued in (second, third):
            with pytest.raises(AppendConflict):
                await queued  # type: ignore[misc]
        await _append_elsewhere(db, 4)  # the row now at seq 5, as the store's own appends were
        await store.append(ID, [_msg(5)], expected_seq=5)
        with sqlite3.connect(db) as conn:
            [(state,)] = conn.execute("SELECT state FROM threads WHERE id = ?", (ID,))
        assert json.loads(state)["pending"] == []
        assert json.loads(state)["next_seq"] == 6 and _seqs(db) == [0, 1, 2, 3, 4, 5]
    finally:
        await store.close()


@pytest.mark.parametrize("queued", [1, 2])
async def test_a_lease_lost_at_queued_statements_raises_lease_lost(
    tmp_path: Path, queued: int
) -> None:
    """One append queued (its transaction begun when the loop next waits) or two (a
    transaction's worth at depth 2, begun at once when the first COMMIT lands)."""
    db = tmp_path / "t.db"
    store = await _store(db, late=0.0)
    (lease,) = await store.lease("w1", ttl=60)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)

    def steal() -> None:
        other.execute("UPDATE threads SET lease_owner = 'w2' WHERE id = ?", (ID,))

    try:
        slow_disk(store, 0.05, steal)
        first = await store.append_behind(ID, [_msg(2)], expected_seq=2, lease=lease)
        after = [
            await store.append_behind(ID, [_msg(seq)], expected_seq=seq, lease=lease)
            for seq in range(3, 3 + queued)
        ]
        assert first is not None and None not in after
        await first
        assert store.stats.queued == 0
        for durable in after:
            with pytest.raises(LeaseLost):
                await durable  # type: ignore[misc]
        assert _seqs(db) == [0, 1, 2]
    finally:
        other.close()
        await store.close()


@pytest.mark.parametrize("queued", [1, 2])
async def test_queued_appends_that_find_the_lock_taken_commit_on_the_store_thread(
    tmp_path: Path, queued: int
) -> None:
    """Another process takes the write lock between the first COMMIT and the queued
    statements (one append queued, or a transaction's worth): the queued appends go to the
    store's thread, which waits for the lock, and land once it is free; the loop never
    waits for it."""
    db = tmp_path / "t.db"
    store = await _store(db, late=0.0)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)

    def take_lock() -> None:
        blocker.execute("BEGIN IMMEDIATE")

    try:
        slow_disk(store, 0.05, take_lock)
        first = await _behind(store, 2)
        after = [await _behind(store, seq) for seq in range(3, 3 + queued)]
        await first
        await asyncio.sleep(0.2)
        assert not any(durable.done() for durable in after)
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.gather(*after), 10)
        assert _seqs(db) == [0, 1, 2, 3, 4][: 3 + queued]
    finally:
        blocker.close()
        await store.close()


async def test_an_append_cancelled_while_waiting_at_depth_writes_nothing(tmp_path: Path) -> None:
    """The loop hears of the first COMMIT only after the cancel (the committing thread waits
    for it): a slow disk's 50 ms could pass before the cancel on a loaded machine, and the
    third append would then be written, as it should, before it was cancelled."""
    db = tmp_path / "t.db"
    store = await _store(db, late=0.0)
    cancelled = threading.Event()
    slow_disk(store, 0.0, lambda: cancelled.wait(10))
    try:
        first = await _behind(store, 2)
        second = await _behind(store, 3)
        waiting = asyncio.ensure_future(_behind(store, 4))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        cancelled.set()
        await first
        await second
        assert _seqs(db) == [0, 1, 2, 3]
        await store.append(ID, [_msg(4)], expected_seq=4)
    finally:
        await store.close()


async def test_another_threads_append_never_takes_over_a_commit_the_loop_has_not_heard_of(
    tmp_path: Path,
) -> None:
    """Thread A's `COMMIT` behind the loop has returned, but the loop has not cycled to hear
    of it, when thread B's append arrives: B's append must not take A's place in flight
    (A's awaitable would never complete); it goes as a plain append, durable on return."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db, pipeline_depth=2, group_window=0)
    try:
        await store.create(Thread(ID, "a", [_msg(0)]))
        await store.create(Thread("th_other", "a", [_msg(0)]))
        await store.append(ID, [_msg(1)], expected_seq=1)  # the inline connection is open
        a = await store.append_behind(ID, [_msg(2)], expected_seq=2)
        assert a is not None
        job = store._behind._carrying
        assert job is not None
        for _ in range(1000):  # returned, on its thread; the loop has not run since
            if job.done:
                break
            time.sleep(0.01)  # noqa: ASYNC251 - blocking on purpose: the loop must not run
        assert job.done
        b = await store.append_behind("th_other", [_msg(1)], expected_seq=1)
        await asyncio.wait_for(asyncio.ensure_future(a), 10)
        if b is not None:
            await asyncio.wait_for(asyncio.ensure_future(b), 10)
        assert (await store.get(ID)).next_seq == 3
        assert (await store.get("th_other")).next_seq == 2
    finally:
        await store.close()


def _until(ready: Callable[[], bool]) -> None:
    """Wait (on a thread of the test's) until `ready()`, ten seconds at most."""
    deadline = time.monotonic() + 10
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.001)


async def test_a_failed_commit_behind_the_loop_wakes_a_writer_waiting_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback of a `COMMIT` behind the loop that failed lets the write lock go, and a
    committer waiting for it is told at once (`WriteLock.released`), not at its next poll
    (a minute here): its append commits, the failed one is not written."""
    monkeypatch.setattr(write_lock, "POLL", 60.0)
    db = tmp_path / "t.db"
    store = SQLiteStore(db, pipeline_depth=2)
    await store.create(Thread(ID, "a", [_msg(0)]))
    await store.append(ID, [_msg(1)], expected_seq=1)  # the inline connection is open
    gated = GatedFailingCommit(store._inline_connection())
    store._inline_conn = gated  # type: ignore[assignment]
    waiter = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    waiter.execute("PRAGMA busy_timeout=0")
    began: list[float] = []
    refused: list[str] = []  # the waiter's tries that found the lock taken

    class Trying:
        def execute(self, sql: str) -> sqlite3.Cursor:
            try:
                return waiter.execute(sql)
            except sqlite3.OperationalError as exc:
                refused.append(str(exc))
                raise

    def wait_for_the_lock() -> None:
        store._write_lock.begin(Trying(), 60.0)  # type: ignore[arg-type]
        began.append(time.monotonic())
        waiter.execute("ROLLBACK")

    try:
        failing = await _behind(store, 2)  # its statements done, its COMMIT waits
        other = threading.Thread(target=wait_for_the_lock)
        other.start()
        # Its first try failed: from then on only a release (or the poll) can wake it.
        await asyncio.to_thread(_until, lambda: bool(refused))
        assert not began
        gated.gate.set()
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await asyncio.wait_for(failing, 10)
        await asyncio.to_thread(other.join, 10)
        assert not other.is_alive() and began, "the waiter was not told of the rollback"
        assert _seqs(db) == [0, 1]
    finally:
        gated.gate.set()
        store._inline_conn = gated.conn
        waiter.close()
        await store.close()
