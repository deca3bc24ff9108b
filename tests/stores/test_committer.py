"""The group committer's thread (`stores/committer.py`), on a real SQLite file: it waits
for the write lock another connection holds, answers every request it was handed (also
when its connection cannot be opened), writes nothing of a withdrawn one, and refuses
groups once closed. tests/stores/test_group_commit.py drives it through the store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from threadline.errors import StoreError
from threadline.stores import write_lock
from threadline.stores.committer import Committer, Outcomes, Request
from threadline.stores.write_lock import WriteLock


def _connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=0")
    if create:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return conn


def _run_group(conn: sqlite3.Connection, group: list[Request], began: float) -> Outcomes:
    """Each request's plan gives the row it inserts; a duplicate fails that request alone."""
    outcomes: Outcomes = []
    for request in group:
        conn.execute("SAVEPOINT one")
        try:
            conn.execute("INSERT INTO t VALUES (?)", (request.plan(),))
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO one")
            outcomes.append((request, exc, False))
        else:
            outcomes.append((request, request.plan(), True))
        conn.execute("RELEASE one")
    conn.execute("COMMIT")
    return outcomes


def _request(value: int) -> Request:
    loop = asyncio.get_running_loop()
    return Request(lambda: value, loop.create_future(), loop, time.monotonic())


def _rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]


def _until(ready: Callable[[], bool]) -> None:
    """Wait (on a thread of the test's) until `ready()`, ten seconds at most."""
    deadline = time.monotonic() + 10
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.001)


async def test_a_group_waits_for_the_lock_and_each_append_gets_its_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_lock, "POLL", 60.0)  # only the release can wake it in time
    path = tmp_path / "c.db"
    holder = _connect(path, create=True)
    holder.execute("INSERT INTO t VALUES (3)")
    lock = WriteLock()
    committer = Committer(
        0.001, lambda: _connect(path), _run_group, lambda: 2, write_lock=lock, busy_timeout=30
    )
    holder.execute("BEGIN IMMEDIATE")
    requests = [_request(value) for value in (1, 2, 3)]
    committer.enqueue(requests)
    await asyncio.to_thread(_until, lambda: lock._waiting > 0)  # it found the lock taken
    assert _rows(path) == [3] and not any(r.future.done() for r in requests)
    holder.execute("COMMIT")
    lock.released()
    results = await asyncio.wait_for(
        asyncio.gather(*(r.future for r in requests), return_exceptions=True), 10
    )
    assert results[:2] == [1, 2]
    assert isinstance(results[2], sqlite3.IntegrityError)  # the duplicate failed alone
    assert _rows(path) == [1, 2, 3]
    committer.close()


async def test_every_request_is_answered_when_the_connection_cannot_be_opened(
    tmp_path: Path,
) -> None:
    opened: list[int] = []

    def connect() -> sqlite3.Connection:
        opened.append(1)
        if len(opened) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return _connect(tmp_path / "c.db")

    _connect(tmp_path / "c.db", create=True).close()
    committer = Committer(
        0.001, connect, _run_group, lambda: 2, write_lock=WriteLock(), busy_timeout=1
    )
    first = [_request(1), _request(2)]
    committer.enqueue(first)
    failed = await asyncio.wait_for(
        asyncio.gather(*(r.future for r in first), return_exceptions=True), 10
    )
    assert [str(e) for e in failed] == ["unable to open database file"] * 2
    # Nothing was left stuck: the next group opens the connection and commits.
    second = [_request(1), _request(2)]
    committer.enqueue(second)
    assert await asyncio.wait_for(asyncio.gather(*(r.future for r in second)), 10) == [1, 2]
    assert _rows(tmp_path / "c.db") == [1, 2]
    committer.close()


async def test_a_withdrawn_request_is_not_written_and_a_closed_committer_refuses(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    _connect(path, create=True).close()
    lock = WriteLock()
    # A long window: the group waits for a second append before it begins.
    committer = Committer(
        30.0, lambda: _connect(path), _run_group, lambda: 2, write_lock=lock, busy_timeout=30
    )
    gone, kept = _request(1), [_request(2), _request(3)]
    committer.enqueue([gone])
    committer.withdraw(gone)
    committer.enqueue(kept)
    assert await asyncio.wait_for(asyncio.gather(*(r.future for r in kept)), 10) == [2, 3]
    assert _rows(path) == [2, 3] and not gone.future.done()
    committer.close()
    late = _request(4)
    committer.enqueue([late])
    with pytest.raises(StoreError, match="store is closed"):
        await late.future
