"""Both databases' migration lists stay in step: same numbers, names, tables and columns.

The comparison is made on real databases, migrated by the stores themselves: a SQLite file
and a PostgreSQL schema are introspected after every migration has run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from pg_support import pg_store_url
from threadline.stores import SQLiteStore, open_store
from threadline.stores.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from threadline.stores.postgres import PostgresStore

# Each PostgreSQL type stands for one SQLite type (times and JSON are TEXT in SQLite).
SAME_TYPE = {
    "text": "TEXT",
    "jsonb": "TEXT",
    "timestamp with time zone": "TEXT",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "double precision": "REAL",
}

Columns = dict[str, dict[str, tuple[str, bool]]]  # table -> column -> (type, nullable)


def test_lists_are_numbered_densely_with_the_same_names() -> None:
    assert [m[0] for m in SQLITE_MIGRATIONS] == list(range(1, len(SQLITE_MIGRATIONS) + 1))
    assert [(m[0], m[1]) for m in SQLITE_MIGRATIONS] == [(m[0], m[1]) for m in POSTGRES_MIGRATIONS]


def test_each_database_gets_its_own_types_in_every_migration() -> None:
    postgres_only = ("TIMESTAMPTZ", "JSONB", "BIGINT", "DOUBLE PRECISION", "threads_runnable")
    for (_, _, lite), (_, _, pg) in zip(SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS, strict=True):
        assert not any(word in lite for word in postgres_only), lite
        assert "WITHOUT ROWID" not in pg and "{" not in pg + lite
    assert "WITHOUT ROWID" in SQLITE_MIGRATIONS[0][2]
    assert "threads_runnable" in POSTGRES_MIGRATIONS[0][2]


async def _sqlite_columns(path: Path) -> tuple[Columns, set[str]]:
    async with SQLiteStore(path) as store:
        await store.ping()  # opening the file applies every migration
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'threadline_migrations'"
            )
        ]
        columns: Columns = {}
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            # (cid, name, type, notnull, default, pk); a primary key is never null.
            columns[table] = {r[1]: (r[2].upper(), not (r[3] or r[5])) for r in info}
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        return columns, indexes
    finally:
        conn.close()


async def _postgres_columns(url: str, schema: str) -> tuple[Columns, set[str]]:
    store = open_store(pg_store_url(url, schema, migrate=False))
    try:
        assert isinstance(store, PostgresStore)
        assert await store.migrate() == [m[0] for m in POSTGRES_MIGRATIONS]
    finally:
        await store.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name != 'threadline_migrations'",
            (schema,),
        ).fetchall()
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s "
                "AND indexname NOT LIKE '%%_pkey' AND indexname NOT LIKE '%%_key'",
                (schema,),
            )
        }
    columns: Columns = {}
    for table, column, data_type, nullable in rows:
        columns.setdefault(table, {})[column] = (data_type, nullable == "YES")
    return columns, indexes


@pytest.mark.postgres
async def test_migrated_databases_have_the_same_tables_and_columns(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    lite, lite_indexes = await _sqlite_columns(tmp_path / "m.db")
    pg, pg_indexes = await _postgres_columns(postgres_url, pg_schema)
    assert (
        set(lite)
        == set(pg)
        == {
            "threads",
            "events",
            "api_keys",
            "webhook_deliveries",
            "channel_outbox",
            "channel_conversations",
            "schedules",
            "schedule_firings",
            "rate_limit_slots",
            "rate_limit_buckets",
            "budget_trees",
        }
    )
    for table, columns in pg.items():
        assert set(lite[table]) == set(columns), table
        for name, (pg_type, pg_nullable) in columns.items():
            lite_type, lite_nullable = lite[table][name]
            assert SAME_TYPE[pg_type] == lite_type, (table, name, pg_type, lite_type)
            assert pg_nullable == lite_nullable, (table, name)
    # PostgreSQL alone has a partial index for leasing (SQLite's planner needs none).
    assert lite_indexes == pg_indexes - {"threads_runnable"}


async def test_sqlite_lists_its_applied_migrations(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "m.db") as store:
        applied = await store.migrations()
    assert [(n, name) for n, name, _ in applied] == [(m[0], m[1]) for m in SQLITE_MIGRATIONS]
    assert all(at.tzinfo is not None for _, _, at in applied)
