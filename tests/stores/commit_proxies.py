"""Connections whose `COMMIT` misbehaves as a disk can (tests/stores/test_group_commit.py,
tests/stores/test_behind.py): everything else is the real connection's."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any


class FailingCommit:
    """A connection whose COMMIT fails after its statements ran (a disk that refuses the
    fsync)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()


class GatedFailingCommit(FailingCommit):
    """A connection whose `COMMIT` waits for `gate` and then fails; it reports having begun
    first, as SQLite's trace hook would (a `COMMIT` behind the loop waits for that)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.gate = threading.Event()
        self._trace: Any = None

    def set_trace_callback(self, trace: Any) -> None:
        self._trace = trace

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            if self._trace is not None:
                self._trace(sql)
            self.gate.wait(30)
        return super().execute(sql, *args)
