"""Waiting for SQLite's write lock: told when the store's own transaction ends
(`stores/write_lock.py`), polled for another process's, given up after the timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from threadline.stores import write_lock
from threadline.stores.write_lock import WriteLock


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    return conn


def _wait_in_thread(lock: WriteLock, conn: sqlite3.Connection, timeout: float) -> list[object]:
    out: list[object] = []

    def go() -> None:
        try:
            out.append(lock.begin(conn, timeout))
        except sqlite3.OperationalError as exc:
            out.append(exc)

    waiter = threading.Thread(target=go)
    out.append(waiter)
    waiter.start()
    return out


def test_a_waiter_is_woken_when_the_store_lets_the_lock_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No polling at all: only `released` can wake the waiter in time.
    monkeypatch.setattr(write_lock, "POLL", 60.0)
    holder, waiter = _connect(tmp_path / "w.db"), _connect(tmp_path / "w.db")
    lock = WriteLock()
    holder.execute("BEGIN IMMEDIATE")
    out = _wait_in_thread(lock, waiter, timeout=60.0)
    while not lock._waiting:  # the waiter tried once and waits
        time.sleep(0.001)
    time.sleep(0.05)
    assert len(out) == 1, "it began while the lock was held"
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("COMMIT")
    lock.released()
    thread = out[0]
    assert isinstance(thread, threading.Thread)
    thread.join(timeout=10)
    assert not thread.is_alive(), "the waiter was not woken by the release"
    waited = out[1]
    assert isinstance(waited, float) and 0.05 <= waited < 10
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")


def test_another_processes_lock_is_polled_for(tmp_path: Path) -> None:
    # Nobody here tells the waiter: it tries again every POLL seconds and gets the lock.
    other, waiter = _connect(tmp_path / "w.db"), _connect(tmp_path / "w.db")
    lock = WriteLock()
    other.execute("BEGIN IMMEDIATE")
    out = _wait_in_thread(lock, waiter, timeout=30.0)
    time.sleep(0.03)
    other.execute("ROLLBACK")  # no `released`: another process
    thread = out[0]
    assert isinstance(thread, threading.Thread)
    thread.join(timeout=10)
    assert isinstance(out[1], float)
    waiter.execute("ROLLBACK")


def test_the_wait_ends_with_sqlites_busy_error_at_the_timeout(tmp_path: Path) -> None:
    other, waiter = _connect(tmp_path / "w.db"), _connect(tmp_path / "w.db")
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        WriteLock().begin(waiter, 0.02)
    assert not waiter.in_transaction
    other.execute("ROLLBACK")


def test_a_lock_free_at_once_is_taken_without_waiting(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "w.db")
    lock = WriteLock()
    assert lock.begin(conn, 1.0) < 1.0
    assert conn.in_transaction and not lock._waiting
    conn.execute("ROLLBACK")
    lock.released()  # nobody waits: nothing happens
