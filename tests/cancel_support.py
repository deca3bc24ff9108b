"""Writes from another process landing at a chosen moment, on the real stores: the
SQLite file and the PostgreSQL schema are opened twice, as two processes would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pg_support import pg_store_url
from threadline.stores import Store
from threadline.stores.base import Append

__all__ = ["STORES", "land_before", "store_url"]

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The kinds of store these races run on (a `params` list for a fixture)."""


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh SQLite file or PostgreSQL schema, for `open_store`."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    base = request.getfixturevalue("postgres_url")
    return pg_store_url(base, request.getfixturevalue("pg_schema"))


def land_before(store: Store, kind: str, write: Callable[[], Awaitable[object]]) -> list[bool]:
    """Run `write` (another process's action) just before the first append to `store` that
    holds an event of `kind`, then let that append go on. Returns a list that holds True
    once `write` ran."""
    real = store._append
    landed: list[bool] = []

    async def _append(append: Append) -> Awaitable[None] | None:
        if not landed and any(e.kind == kind for e in append[1]):
            landed.append(True)
            await write()
        return await real(append)

    store._append = _append  # type: ignore[method-assign]
    return landed
