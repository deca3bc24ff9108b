"""The PostgreSQL store's sessions end a transaction left idle (the server-side half of
`test_a_host_cut_off_inside_a_transaction_does_not_block_the_takeover`, without hosts)."""

from __future__ import annotations

import asyncio

import pytest

from threadline.errors import ConfigError, StoreError
from threadline.stores.postgres import PostgresStore


@pytest.mark.postgres
async def test_a_session_idle_in_a_transaction_is_ended_and_its_locks_freed(
    postgres_url: str, pg_schema: str
) -> None:
    store = PostgresStore(
        postgres_url, schema=pg_schema, migrate=True, idle_in_transaction_timeout=0.5
    )
    other = PostgresStore(postgres_url, schema=pg_schema)
    try:
        await store.ping()
        with pytest.raises(StoreError, match="idle-in-transaction"):
            async with store._conn() as conn, conn.transaction():
                await conn.execute("SELECT 1 FROM threadline_migrations FOR UPDATE")
                await asyncio.sleep(3.0)  # idle in the transaction, well past the timeout
                await conn.execute("SELECT 1")
        # The lock went with the session: another session takes it without waiting.
        async with other._conn() as conn:
            await conn.execute("SET lock_timeout = '5s'")
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM threadline_migrations FOR UPDATE")
        # The store goes on working on fresh connections.
        await store.ping()
        assert await store.schema_version() > 0
    finally:
        await store.close()
        await other.close()


def test_the_idle_transaction_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://x@127.0.0.1/db", idle_in_transaction_timeout=0)
