"""Group commit (SQLite): concurrent threads' appends share one transaction, each append
keeps its own outcome, and an acknowledged append survives SIGKILL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from commit_proxies import FailingCommit
from group_kill import KilledWriter, event, make_threads

from threadline import Agent, Runtime, tool
from threadline.errors import AppendConflict, ConfigError, LeaseLost, StoreError
from threadline.events import Thread
from threadline.stores import SQLiteStore
from threadline.stores.group_commit import GroupCommit
from threadline.testing import ScriptedModel, intent


async def test_concurrent_threads_share_commits_and_every_event_is_stored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db", group_window=0.02)
    threads = await make_threads(store, 16)
    before = store.stats.commits

    async def append_ten(thread: Thread) -> None:
        for seq in range(1, 11):
            await store.append(thread.id, [event(seq)], expected_seq=seq)

    await asyncio.gather(*(append_ten(t) for t in threads))
    stats = store.stats
    assert stats.appends >= 160
    assert stats.commits - before < 160 / 2, "appends of concurrent threads were not grouped"
    assert stats.grouped > 0
    reopened = SQLiteStore(tmp_path / "g.db")
    for thread in threads:
        loaded = await reopened.load(thread.id)
        assert [e.seq for e in loaded.events] == list(range(11))
        assert (await reopened.get(thread.id)).next_seq == 11
    await reopened.close()
    await store.close()


async def test_a_failing_append_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db", group_window=0.2)
    threads = await make_threads(store, 6)
    lease = (await store.lease("w1", ttl=60, thread_ids=[threads[5].id]))[0]
    await store.break_lease(threads[5].id)  # the lease's holder is fenced off
    groups, grouped = store.stats.groups, store.stats.grouped
    results = await asyncio.gather(
        store.append(threads[0].id, [event(1)], expected_seq=1),  # alone: not crowded yet
        store.append(threads[1].id, [event(1)], expected_seq=1),
        store.append(threads[2].id, [event(5)], expected_seq=5),  # wrong seq: conflict
        store.append(threads[3].id, [event(1)], expected_seq=1),
        store.append(threads[4].id, [event(1)], expected_seq=1),
        store.append(threads[5].id, [event(1)], expected_seq=1, lease=lease),  # lost
        return_exceptions=True,
    )
    # The five after the first shared one transaction (the lost lease is then re-checked by
    # the full append, in a transaction of its own).
    assert store.stats.groups > groups, "the appends after the first were not grouped"
    assert store.stats.grouped >= grouped + 5
    assert results[0] is None and results[1] is None and results[3] is None
    assert results[4] is None
    assert isinstance(results[2], AppendConflict)
    assert isinstance(results[5], LeaseLost)
    for i, length in ((0, 2), (1, 2), (2, 1), (3, 2), (4, 2), (5, 1)):
        assert len(await store.events(threads[i].id)) == length
    await store.close()


@pytest.mark.parametrize("where", ["on-the-loop", "committer-thread", "behind-the-loop"])
async def test_a_group_that_cannot_commit_answers_every_caller_and_writes_nothing(
    tmp_path: Path, where: str
) -> None:
    # Groups are committed on the event loop, or on the committer's thread (without inline
    # appends, `?inline_appends=0`, or when the write lock stays taken), or with their
    # COMMIT behind the loop (a slow disk): in all, a COMMIT that fails fails the group.
    store = SQLiteStore(tmp_path / "g.db", group_window=0.05)
    threads = await make_threads(store, 4)
    group = store._group
    assert group is not None
    on_loop = where != "committer-thread"
    if not on_loop:
        group._connect_here = None  # as without inline appends: groups go to the thread
    if where == "behind-the-loop":
        group._fsync = 1.0  # a slow disk, as measured
    real = group._here_connection() if on_loop else group._committer.connection()
    if on_loop:
        group._conn_here = FailingCommit(real)  # type: ignore[assignment]
    else:
        group._committer.conn = FailingCommit(real)  # type: ignore[assignment]
    results = await asyncio.gather(
        *(store.append(t.id, [event(1)], expected_seq=1) for t in threads),
        return_exceptions=True,
    )
    assert results[0] is None  # alone: not part of the group
    assert [type(r) for r in results[1:]] == [sqlite3.OperationalError] * 3
    assert [len(await store.events(t.id)) for t in threads] == [2, 1, 1, 1]
    assert (group._flusher is not None) == (where == "behind-the-loop")
    if on_loop:  # the group never went to the committer's thread
        assert not group._committer.started() and store.stats.groups == 0
        group._conn_here = real
    else:
        group._committer.conn = real
    # Nothing was left stuck: the next group commits.
    results = await asyncio.gather(
        *(store.append(t.id, [event(1)], expected_seq=1) for t in threads[1:]),
        return_exceptions=True,
    )
    assert results == [None, None, None]
    assert [len(await store.events(t.id)) for t in threads] == [2, 2, 2, 2]
    await store.close()


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("unable to open database file"), PermissionError(13, "denied")],
    ids=["sqlite", "os"],
)
async def test_a_group_whose_file_cannot_be_opened_fails_and_the_next_commits(
    tmp_path: Path, error: Exception
) -> None:
    # Not only sqlite3's errors: making the file's folder can fail with an OSError. Every
    # caller of the group gets it, nothing of the group is written later, and the next
    # group commits on the loop (the loop's connection was not left taken).
    store = SQLiteStore(tmp_path / "g.db", group_window=0.05)
    threads = await make_threads(store, 3)
    group = store._group
    assert group is not None
    connect = group._connect_here

    def broken() -> sqlite3.Connection:  # stands in for a file that cannot be opened
        raise error

    group._connect_here = broken
    results = await asyncio.gather(
        *(store.append(t.id, [event(1)], expected_seq=1) for t in threads),
        return_exceptions=True,
    )
    assert results[0] is None
    assert [type(r) for r in results[1:]] == [type(error)] * 2
    group._connect_here = connect
    await asyncio.sleep(0.2)  # whatever was left queued would have been written by now
    assert [len(await store.events(t.id)) for t in threads] == [2, 1, 1]
    results = await asyncio.gather(
        *(store.append(t.id, [event(1)], expected_seq=1) for t in threads[1:]),
        return_exceptions=True,
    )
    assert results == [None, None]
    assert not group._committer.started(), "the next group went to the committer's thread"
    await store.close()


async def test_groups_commit_on_the_event_loop_without_the_committer_thread(
    tmp_path: Path,
) -> None:
    # The loop holds the GIL anyway; a committer thread had to win it back from a loop
    # running other threads' Python after every statement (docs/performance.md).
    store = SQLiteStore(tmp_path / "g.db", group_window=0.02)
    threads = await make_threads(store, 8)
    loop_thread = threading.get_ident()
    committed_on: set[int] = set()
    group = store._group
    assert group is not None
    record = group._record

    def recording(*args: Any) -> None:
        committed_on.add(threading.get_ident())
        record(*args)

    group._record = recording  # type: ignore[method-assign]

    async def append_five(thread: Thread) -> None:
        for seq in range(1, 6):
            await store.append(thread.id, [event(seq)], expected_seq=seq)

    await asyncio.gather(*(append_five(t) for t in threads))
    assert store.stats.groups > 0 and store.stats.grouped > 0
    assert committed_on == {loop_thread}
    assert not group._committer.started(), "the committer's thread was started"
    assert [len(await store.events(t.id)) for t in threads] == [6] * 8
    await store.close()


async def test_appends_one_after_another_do_not_wait_for_the_window(tmp_path: Path) -> None:
    # Another thread appended recently, so each append goes to a group; nobody else joins it
    # before the loop has gone round once, so it commits then, not after its 5 s window.
    store = SQLiteStore(tmp_path / "g.db", group_window=5.0)
    a, *others = await make_threads(store, 6)
    await store.append(a.id, [event(1)], expected_seq=1)  # a appended: a writer, running
    started = asyncio.get_running_loop().time()
    for thread in others:
        await store.append(thread.id, [event(1)], expected_seq=1)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert store.stats.groups >= 1, "the appends did not go to a group"
    await store.close()


async def _two_queued(
    tmp_path: Path, window: float
) -> tuple[SQLiteStore, list[Thread], list[asyncio.Future[None]]]:
    """A store whose thread `a` appended (a writer, running), then `b`'s and `c`'s appends
    started and queued on the loop for one group (the second joined the first's)."""
    store = SQLiteStore(tmp_path / "g.db", group_window=window)
    a, b, c = await make_threads(store, 3)
    await store.append(a.id, [event(1)], expected_seq=1)
    pending = [
        asyncio.ensure_future(store.append(t.id, [event(1)], expected_seq=1)) for t in (b, c)
    ]
    await asyncio.sleep(0)
    return store, [b, c], pending


async def test_a_due_group_commits_when_the_store_is_asked_between_steps(tmp_path: Path) -> None:
    # On a loop busy with other threads' steps, the window's timer runs late; the runtime
    # asks the store (`due`) as each turn begins, and a group past its window commits then.
    store, _, pending = await _two_queued(tmp_path, 0.05)
    groups = store.stats.groups
    time.sleep(0.06)  # noqa: ASYNC251 - the loop busy past the window: no timer can run
    store.due()
    assert store.stats.groups == groups + 1, "the due group did not commit at once"
    assert await asyncio.gather(*pending) == [None, None]
    await store.close()


async def test_closing_commits_the_appends_queued_on_the_loop(tmp_path: Path) -> None:
    store, (b, c), pending = await _two_queued(tmp_path, 5.0)
    await store.close()
    assert await asyncio.gather(*pending) == [None, None]
    reopened = SQLiteStore(tmp_path / "g.db")
    assert [len(await reopened.events(t.id)) for t in (b, c)] == [2, 2]
    await reopened.close()


async def test_reads_do_not_wait_behind_a_group_commit(tmp_path: Path) -> None:
    # The committer has its own thread and connection: while a group waits for the write
    # lock (another process holds it here), the store's thread still answers reads.
    store = SQLiteStore(tmp_path / "g.db", group_window=0.01, busy_timeout=5.0)
    threads = await make_threads(store, 3)
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    appends = [
        asyncio.ensure_future(store.append(t.id, [event(1)], expected_seq=1)) for t in threads
    ]
    group = store._group
    assert group is not None
    # The loop tries for two windows, then hands the group to the committer's thread,
    # which waits for the lock (the loop never does).
    for _ in range(100):
        await asyncio.sleep(0.005)
        if group._committer._busy:
            break
    # The committer is waiting for the lock.
    assert group._committer._busy and store.stats.groups == 0
    summary = await store.get(threads[0].id)
    assert summary.next_seq == 1  # read while the group is still waiting for the lock
    assert not any(a.done() for a in appends), "the read waited until the group had ended"
    await asyncio.sleep(0.05)  # the lock held well past the window (10 ms)
    other.execute("ROLLBACK")
    other.close()
    assert await asyncio.gather(*appends) == [None, None, None]
    # Each append waited for the other writer's lock beyond its window: each counts as
    # over one commit interval of its own (the window plus its transaction once locked).
    assert store.stats.over_interval == 3
    assert store.stats.longest_in_intervals > 1
    assert 0 < store.stats.longest_lock <= store.stats.longest_group
    assert [(await store.get(t.id)).next_seq for t in threads] == [2, 2, 2]
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.append(threads[0].id, [event(2)], expected_seq=2)


async def _pipelining(
    tmp_path: Path, fails: bool
) -> tuple[SQLiteStore, Thread, Thread, threading.Event]:
    """A store (group window 1 s) with threads `a` and `b`, `a`'s first append done inline
    (the inline connection open, as pipelining needs), whose COMMITs behind the loop
    return (or, if `fails`, fail after rolling back) only once the event is set."""
    store = SQLiteStore(tmp_path / "g.db", group_window=1.0)
    a, b = await make_threads(store, 2)
    await store.append(a.id, [event(1)], expected_seq=1)  # alone: inline
    flush = store._behind._flush
    release = threading.Event()

    def held(conn: sqlite3.Connection, began: threading.Lock, appends: int) -> None:
        if not fails:
            flush(conn, began, appends)
            release.wait(5)
            return
        conn.execute("ROLLBACK")  # the disk refused the COMMIT: nothing of it stays
        began.release()
        release.wait(5)
        raise sqlite3.OperationalError("disk I/O error")

    store._behind._flush = held  # type: ignore[method-assign]
    return store, a, b, release


async def _next_append_of_a(store: SQLiteStore, a: Thread, b: Thread) -> asyncio.Future[Any]:
    """`a`'s seq 2 in flight behind the loop, `b`'s append queued for a group, then `a`'s
    seq 3 started: what it returns (it is not done while seq 2 is in flight)."""
    in_flight = await store.append_behind(a.id, [event(2)], expected_seq=2)
    assert in_flight is not None  # alone still: its COMMIT goes behind the loop
    b_done = asyncio.ensure_future(store.append(b.id, [event(1)], expected_seq=1))
    await asyncio.sleep(0)  # b's append queued for a group (committed once the loop went round)
    assert store._group is not None and (store._group._here or b_done.done())
    third = asyncio.ensure_future(store.append_behind(a.id, [event(3)], expected_seq=3))
    for _ in range(5):
        await asyncio.sleep(0)
    return third


async def test_a_pipelining_thread_joins_the_group_once_others_append(tmp_path: Path) -> None:
    # Before, a thread with a COMMIT in flight behind the loop queued its next appends
    # behind it for as long as it kept appending, whatever the other threads did: its
    # transactions held the write lock while their group waited for it (SQLite's busy
    # handler: 1, 2, 5, 10, 15 ms...). Now, once others append, its next append waits for
    # its own in flight to be durable, then joins their group.
    store, a, b, release = await _pipelining(tmp_path, fails=False)
    third = await _next_append_of_a(store, a, b)
    assert not third.done(), "seq 3 did not wait for seq 2 to be durable"
    release.set()
    assert await third is None, "queued behind its own COMMIT instead of joining the group"
    # a's seq 3 went to a group: b's (if b's was still waiting), or one of its own after.
    stats = store.stats
    assert stats.queued == 0 and (stats.grouped >= 2 or stats.groups == 2)
    assert [e.seq for e in await store.events(a.id)] == [0, 1, 2, 3]
    assert [e.seq for e in await store.events(b.id)] == [0, 1]
    await store.close()


async def test_a_pipelining_thread_whose_commit_failed_writes_nothing_after_it(
    tmp_path: Path,
) -> None:
    store, a, b, release = await _pipelining(tmp_path, fails=True)
    third = await _next_append_of_a(store, a, b)
    assert not third.done(), "seq 3 did not wait for seq 2's COMMIT"
    release.set()
    # Built on seq 2, which failed: it fails and writes nothing, as it did when it queued
    # behind seq 2 (now the call itself fails, or the full append it falls back to finds
    # the thread at seq 2).
    with pytest.raises((sqlite3.OperationalError, AppendConflict)):
        await third
    store._behind._flush = lambda *args: None  # type: ignore[method-assign]
    await store.close()
    reopened = SQLiteStore(tmp_path / "g.db")
    assert [e.seq for e in await reopened.events(a.id)] == [0, 1]
    assert [e.seq for e in await reopened.events(b.id)] == [0, 1]
    await reopened.close()


async def test_a_lone_thread_never_waits_for_a_group(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db", group_window=5.0)
    (thread,) = await make_threads(store, 1)
    for seq in range(1, 6):
        await store.append(thread.id, [event(seq)], expected_seq=seq)
    # Five appends inline: none queued for the committer (which would wait for the 5 s
    # window), none grouped, no wait recorded.
    assert (store.stats.appends, store.stats.groups, store.stats.grouped) == (5, 0, 0)
    assert not store.stats.waits
    await store.close()


async def test_group_commit_can_be_turned_off_and_bad_windows_are_refused(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'g.db'}?group_window_ms=0")
    threads = await make_threads(store, 8)
    await asyncio.gather(*(store.append(t.id, [event(1)], expected_seq=1) for t in threads))
    assert store.stats.groups == 0
    assert [len(await store.events(t.id)) for t in threads] == [2] * 8
    await store.close()
    with pytest.raises(ConfigError, match="group_window_ms"):
        SQLiteStore.from_url(f"sqlite:///{tmp_path / 'g.db'}?group_window_ms=soon")
    with pytest.raises(ConfigError, match="group_window"):
        SQLiteStore(tmp_path / "g.db", group_window=-1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "slow"), [(1, False), (2, False), (3, False), (4, True), (5, True)]
)
def test_sigkill_inside_group_commits_keeps_every_acknowledged_event(
    tmp_path: Path, seed: int, slow: bool
) -> None:
    # `slow`: the disk taken for slow, every group's COMMIT behind the loop, answered
    # only once it returned.
    db = tmp_path / "kill.db"
    with KilledWriter(f"sqlite:///{db}", slow=slow) as writer:  # synchronous=FULL
        writer.read_random_acks(seed)
        writer.kill()
    acked, stats = writer.acknowledged()
    assert (writer.behind() > 0) == slow
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT thread_id, MAX(seq) FROM events GROUP BY thread_id"))
        dense = conn.execute(
            "SELECT thread_id FROM events GROUP BY thread_id HAVING COUNT(*) != MAX(seq) + 1"
        ).fetchall()
    assert dense == []
    lost = {t: s for t, s in acked.items() if stored.get(t, -1) < s}
    assert lost == {}, f"acknowledged events missing after SIGKILL: {lost}"
    print(
        f"\nkilled after {writer.acks()} acknowledged appends; "
        f"last stats: {stats[0]} commits for {stats[1]} appends ({stats[2]} grouped); "
        f"every acknowledged event found"
    )


async def test_the_runtime_asks_the_store_for_due_writes_as_each_turn_begins(
    tmp_path: Path,
) -> None:
    asked: list[int] = []

    class Counting(SQLiteStore):
        def due(self) -> None:
            asked.append(1)
            super().due()

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key.upper()

    agent = Agent("due", tools=[lookup])
    answers = [intent("lookup", key=f"k{n}") for n in range(3)]
    model = ScriptedModel([*answers, intent("done_for_now", message="ok")])
    store = Counting(tmp_path / "t.db")
    thread = await Runtime(store, agents=[agent], model=model).launch(agent, "go")
    assert thread.status == "done"
    assert len(asked) >= 4, "the runtime did not ask the store as each model turn began"
    await store.close()


class _SlowCommit(FailingCommit):
    """A connection whose COMMIT takes 20 ms (a slow disk's fsync); `committers`: the
    threads that ran its COMMITs, in order."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.committers: list[str] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.committers.append(threading.current_thread().name)
            time.sleep(0.02)
        return self.conn.execute(sql, *args)


W = TypeVar("W", bound=FailingCommit)


async def _wrapped_here(
    tmp_path: Path, count: int, wrap: Callable[[sqlite3.Connection], W]
) -> tuple[SQLiteStore, list[Thread], GroupCommit, W]:
    """A store (window 10 ms) with `count` threads whose groups on the loop are committed on
    `wrap` of the loop's connection."""
    store = SQLiteStore(tmp_path / "g.db", group_window=0.01)
    threads = await make_threads(store, count)
    group = store._group
    assert group is not None
    wrapped = wrap(group._here_connection())
    group._conn_here = wrapped  # type: ignore[assignment]
    return store, threads, group, wrapped


async def test_on_a_slow_disk_a_group_commits_behind_the_loop(tmp_path: Path) -> None:
    # A COMMIT on the loop stalls every thread on it: past half the window (smoothed), a
    # group's statements run on the loop and its COMMIT on a thread of its own, not on the
    # committer's thread (which needs the GIL back from the loop after every statement).
    store, threads, group, here = await _wrapped_here(tmp_path, 6, _SlowCommit)
    group._committer.conn = _SlowCommit(group._committer.connection())  # type: ignore[assignment]

    async def append_ten(thread: Thread) -> None:
        for seq in range(1, 11):
            await store.append(thread.id, [event(seq)], expected_seq=seq)

    await asyncio.gather(*(append_ten(t) for t in threads))
    loop_thread = threading.current_thread().name
    assert here.committers[0] == loop_thread, "the first COMMIT measures the disk, on the loop"
    behind = [name for name in here.committers if name != loop_thread]
    assert behind, "every group's COMMIT stalled the loop"
    assert set(behind) == {"threadline-group-commit-behind"}
    assert not group._committer.started(), "a group went to the committer's thread"
    assert [len(await store.events(t.id)) for t in threads] == [11] * 6
    assert store.stats.groups == len(here.committers)
    await store.close()


class _GatedCommit(FailingCommit):
    """A connection whose COMMIT waits until `gate` is set (`waiting` set meanwhile)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.gate, self.waiting = threading.Event(), threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.waiting.set()
            assert self.gate.wait(30)
        return self.conn.execute(sql, *args)


async def test_a_group_committing_behind_the_loop_is_answered_only_once_durable(
    tmp_path: Path,
) -> None:
    # The loop goes on while the group's COMMIT runs on its thread, but none of the group's
    # appends returns before that COMMIT did.
    store, threads, group, gated = await _wrapped_here(tmp_path, 4, _GatedCommit)
    group._fsync = 1.0  # a slow disk, as measured
    await store.append(threads[0].id, [event(1)], expected_seq=1)  # a writer: the rest group
    appends = [
        asyncio.ensure_future(store.append(t.id, [event(1)], expected_seq=1)) for t in threads[1:]
    ]
    assert await asyncio.to_thread(gated.waiting.wait, 30)  # the loop runs on meanwhile
    await asyncio.sleep(0.05)
    assert not any(a.done() for a in appends), "an append returned before its COMMIT"
    gated.gate.set()
    await asyncio.gather(*appends)
    assert [len(await store.events(t.id)) for t in threads] == [2, 2, 2, 2]
    await store.close()


def test_a_loop_that_ends_with_an_append_queued_on_it_leaves_no_group_behind(
    tmp_path: Path,
) -> None:
    # A sync caller's loop (`run_sync`: `asyncio.run`) can end while an append waits in a
    # group on it for a lock another process holds; `asyncio.run` cancels the caller. The
    # group must not outlive its loop: nothing flushes it any more, and the store would take
    # every later append for crowded (grouped, never inline, never pipelined).
    db = tmp_path / "g.db"
    store = SQLiteStore(db, group_window=0.05)
    other = sqlite3.connect(db, isolation_level=None)

    async def first() -> Thread:
        a, b = await make_threads(store, 2)
        await store.append(a.id, [event(1)], expected_seq=1)  # a writer: b's append is grouped
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        asyncio.ensure_future(store.append(b.id, [event(1)], expected_seq=1))
        await asyncio.sleep(0)  # b's append queued on this loop
        return a  # the loop ends: asyncio.run cancels b's append

    a = asyncio.run(first())
    other.execute("ROLLBACK")
    other.close()

    async def second() -> tuple[int, bool]:
        await asyncio.sleep(0.1)  # a and b have gone quiet (past the window)
        groups = store.stats.groups
        durable = await store.append_behind(a.id, [event(2)], expected_seq=2)
        if durable is not None:
            await durable
        await store.close()
        return store.stats.groups - groups, durable is not None

    grouped, pipelined = asyncio.run(second())
    assert (grouped, pipelined) == (0, True), "a lone thread's append was taken for crowded"


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-the-loop", "committer-thread"])
async def test_an_append_cancelled_before_its_group_began_writes_nothing(
    tmp_path: Path, on_loop: bool
) -> None:
    # As an append cancelled while it waits at the pipeline depth (stores/behind.py): an
    # append whose caller was cancelled before its group began is not written afterwards
    # (the thread's next append, its caller's or another's, would find it there). On the
    # loop the group waits for the lock another process holds; on the committer's thread
    # (no inline appends) for its window.
    store = SQLiteStore(
        tmp_path / "g.db",
        group_window=0.1 if on_loop else 0.3,
        busy_timeout=5.0,
        inline_appends=on_loop,
    )
    a, b, c = await make_threads(store, 3)
    await store.append(a.id, [event(1)], expected_seq=1)  # a writer: the next are grouped
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    cancelled = asyncio.ensure_future(store.append(b.id, [event(1)], expected_seq=1))
    kept = asyncio.ensure_future(store.append(c.id, [event(1)], expected_seq=1))
    await asyncio.sleep(0.005)  # both queued, their group waiting
    assert not cancelled.done() and not kept.done()
    cancelled.cancel()
    await asyncio.sleep(0.3)  # on the loop, past two windows: the group goes to the thread
    other.execute("ROLLBACK")
    other.close()
    assert await kept is None
    assert cancelled.cancelled()
    assert [len(await store.events(t.id)) for t in (b, c)] == [1, 2]
    await store.close()


class _PausedGroup(FailingCommit):
    """The loop's connection: a group stops at its first `SAVEPOINT` (`paused` set) until
    the connection is closed or a second has passed."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.paused = threading.Event()
        self.closed = threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("SAVEPOINT") and not self.paused.is_set():
            self.paused.set()
            self.closed.wait(1.0)
        return self.conn.execute(sql, *args)

    def close(self) -> None:
        self.conn.close()
        self.closed.set()


async def test_closing_waits_for_a_group_running_on_another_loop(tmp_path: Path) -> None:
    # Another event loop (on its own thread) is running a group on the loop's connection
    # when this one closes the store: the connection is closed only once that group ended
    # (closed under it, the group was never answered, and two threads in one sqlite3
    # connection at once crashed the process).
    store = SQLiteStore(tmp_path / "g.db", group_window=0.005)
    theirs = await make_threads(store, 4)
    group = store._group
    assert group is not None
    conn = _PausedGroup(group._here_connection())
    group._conn_here = conn  # type: ignore[assignment]
    results: list[object] = []
    ended = threading.Event()

    async def other_loop() -> None:
        results.extend(
            await asyncio.gather(
                *(store.append(t.id, [event(1)], expected_seq=1) for t in theirs),
                return_exceptions=True,
            )
        )

    def run_other_loop() -> None:
        asyncio.run(other_loop())
        ended.set()

    threading.Thread(target=run_other_loop, daemon=True).start()
    assert await asyncio.to_thread(conn.paused.wait, 5), "no group ran on the other loop"
    await store.close()
    assert await asyncio.to_thread(ended.wait, 5), "the other loop's group was never answered"
    assert results == [None] * 4
    reopened = SQLiteStore(tmp_path / "g.db")
    assert [len(await reopened.events(t.id)) for t in theirs] == [2] * 4
    await reopened.close()
