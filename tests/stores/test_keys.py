"""API keys and webhook delivery ids, kept beside each store (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from threadline.errors import ConfigError, StoreError
from threadline.events import utcnow
from threadline.server.auth import create_key, hash_secret
from threadline.stores import (
    ApiKey,
    MemoryStore,
    SQLiteStore,
    Store,
    delivery_log,
    key_store,
    open_store,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        from pg_support import pg_store_url

        url = pg_store_url(
            request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")
        )
        s: Store = open_store(url)
    elif request.param == "memory":
        s = MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "k.db")
    yield s
    await s.close()


async def test_keys_are_stored_hashed_found_listed_and_revoked(store: Store) -> None:
    keys = key_store(store)
    key, secret = await create_key(keys, "alice", ["respond", "read", "respond"])
    assert key.scopes == ("respond", "read")
    assert await keys.find(secret) is None  # never by the secret itself
    found = await keys.find(hash_secret(secret))
    assert found is not None and found.id == key.id and found.revoked_at is None
    other, _ = await create_key(keys, "bob", ["admin"])
    assert [k.name for k in await keys.list()] == ["alice", "bob"]
    assert await keys.revoke(key.id, at=utcnow())
    assert not await keys.revoke(key.id, at=utcnow())  # already revoked
    assert not await keys.revoke("key_missing", at=utcnow())
    revoked = await keys.find(hash_secret(secret))
    assert revoked is not None and revoked.revoked_at is not None
    assert (await keys.find(hash_secret(_))).id == other.id  # type: ignore[union-attr]


async def test_duplicate_key_is_refused(store: Store) -> None:
    keys = key_store(store)
    key = ApiKey("key_1", "x", ("read",), utcnow())
    await keys.create(key, "h1")
    with pytest.raises(StoreError):
        await keys.create(key, "h2")
    with pytest.raises(StoreError):
        await keys.create(ApiKey("key_2", "y", ("read",), utcnow()), "h1")


async def test_deliveries_are_remembered_once_even_when_racing(store: Store) -> None:
    log, now = delivery_log(store), utcnow()
    results = await asyncio.gather(*(log.remember("d-1", at=now) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert not await log.remember("d-1", at=now + timedelta(minutes=10))
    assert await log.remember("d-2", at=now)
    # Ids older than a day may be forgotten (stale deliveries are refused by timestamp).
    assert await log.remember("d-3", at=now + timedelta(days=2))


async def test_delivery_ids_are_kept_as_long_as_configured(store: Store) -> None:
    week = delivery_log(store, timedelta(days=7))
    now = utcnow()
    assert await week.remember("d-1", at=now)
    # Three days later the default (a day) would have forgotten it; a week's has not.
    assert not await week.remember("d-1", at=now + timedelta(days=3))
    assert await week.remember("d-2", at=now + timedelta(days=8))  # d-1 pruned now
    assert await week.remember("d-1", at=now + timedelta(days=8))
    with pytest.raises(ConfigError, match="at least 0:10:00"):
        delivery_log(store, timedelta(minutes=5))  # shorter than a signature's window


async def test_a_forgotten_delivery_may_be_received_again(store: Store) -> None:
    log, now = delivery_log(store), utcnow()
    assert await log.remember("d-1", at=now) and await log.remember("d-2", at=now)
    await log.forget("d-1")
    await log.forget("never-seen")  # nothing to forget: no error
    assert await log.remember("d-1", at=now)
    assert not await log.remember("d-2", at=now)


def test_bad_scopes_and_names() -> None:
    from threadline.errors import ConfigError

    async def go() -> None:
        keys = key_store(MemoryStore())
        with pytest.raises(ConfigError, match="unknown: root"):
            await create_key(keys, "x", ["root"])
        with pytest.raises(ConfigError, match="none given"):
            await create_key(keys, "x", [])
        with pytest.raises(ConfigError, match="name"):
            await create_key(keys, "  ", ["read"])

    asyncio.run(go())


def test_sqlite_migration_two_is_recorded(tmp_path: Path) -> None:
    import sqlite3

    async def touch() -> None:
        async with SQLiteStore(tmp_path / "m.db") as s:
            await s.ping()

    asyncio.run(touch())
    with sqlite3.connect(tmp_path / "m.db") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM threadline_migrations")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert 2 in versions and {"api_keys", "webhook_deliveries"} <= tables
