"""One parametrized fixture runs the store contract suite against every store."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store_env import StoreEnv  # noqa: E402

from pg_support import pg_store_url  # noqa: E402
from threadline.stores import Store  # noqa: E402


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreEnv]:
    kind = request.param
    if kind == "memory":
        env = StoreEnv(kind, "memory://")
    elif kind == "sqlite":
        env = StoreEnv(kind, f"sqlite:///{tmp_path / 'threads.db'}")
    else:
        base = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        env = StoreEnv(kind, pg_store_url(base, schema), _pg=f"{base}|{schema}")
    yield env
    for store in env.opened:
        await store.close()


@pytest.fixture
async def store(store_env: StoreEnv) -> Store:
    return store_env.open()
