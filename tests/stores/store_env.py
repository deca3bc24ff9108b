"""The store environment behind the `store_env` fixture (see conftest.py).

`store_env` gives a `StoreEnv`: `open()` makes a new store on the same database (a second
connection / pool, as a second process would have), `url` for subprocesses, and `sql()`
to poke the database directly (corrupt rows, inspect migrations).
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from threadline.stores import MemoryStore, Store, open_store  # noqa: E402


@dataclass
class StoreEnv:
    kind: str
    url: str
    opened: list[Store] = field(default_factory=list)
    _memory: MemoryStore | None = None
    _pg: str | None = None

    def open(self) -> Store:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryStore()
            return self._memory
        store = open_store(self.url)
        self.opened.append(store)
        return store

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement directly on the database (outside any store)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                rows = conn.execute(statement, args).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        if self.kind == "postgres":
            import psycopg

            assert self._pg is not None
            base, schema = self._pg.split("|")
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{schema}"')
                cur = conn.execute(statement.replace("?", "%s"), args)
                return cur.fetchall() if cur.description else []
        raise NotImplementedError("the memory store has no SQL")


def needs_sql(env: StoreEnv) -> None:
    if env.kind == "memory":
        pytest.skip("the memory store has no database to poke")
