"""The dialects and the plans the SQL stores' queries run as (no database needed but for
the one-query reads, `select` and `select_one`, run on a SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline.errors import StoreError
from threadline.stores import SQLiteStore
from threadline.stores.dialect import (
    POSTGRES,
    SQLITE,
    DuplicateKey,
    Plan,
    Query,
    Result,
    Returned,
    advance,
    select,
    select_one,
)
from threadline.stores.migrations import SQLITE_MIGRATIONS


def test_dialects_fill_fragments_and_parameter_style() -> None:
    template = "SELECT :a{json}, {now}, x::text FROM t WHERE id = :id{lock}"
    assert POSTGRES.sql(template) == (
        "SELECT %(a)s::jsonb, now(), x::text FROM t WHERE id = %(id)s FOR UPDATE"
    )
    assert SQLITE.sql(template) == "SELECT :a, :now, x::text FROM t WHERE id = :id"
    assert POSTGRES.any_of("agent", "agents", ("a", "b")) == (
        "agent = ANY(:agents)",
        {"agents": ["a", "b"]},
    )
    assert SQLITE.any_of("agent", "agents", ("a", "b")) == (
        "agent IN (:agents_0, :agents_1)",
        {"agents_0": "a", "agents_1": "b"},
    )


def test_a_plan_sees_a_duplicate_key_where_it_happened() -> None:
    seen: list[str] = []

    def plan() -> Plan[str]:
        first = yield Query("INSERT 1")
        seen.append(f"rows {first.rowcount}")
        try:
            yield Query("INSERT 2")
        except DuplicateKey:
            raise StoreError("thread x already exists") from None
        return "unreachable"

    steps = plan()
    assert advance(steps, None) == Query("INSERT 1")
    assert advance(steps, Result([], 1)) == Query("INSERT 2")
    with pytest.raises(StoreError, match="already exists"):
        advance(steps, DuplicateKey("unique"))
    assert seen == ["rows 1"]

    def reader() -> Plan[int]:
        return len((yield Query("SELECT")).rows)

    steps = reader()
    advance(steps, None)
    assert advance(steps, Result([(1,), (2,)], 2)) == Returned(2)


async def test_one_query_reads_give_each_row_as_read_or_none(tmp_path: Path) -> None:
    applied = "SELECT version, name FROM threadline_migrations"
    store = SQLiteStore(tmp_path / "d.db")
    async with store:
        rows = await select(store, f"{applied} ORDER BY version DESC", {}, tuple)
        first = await select_one(store, f"{applied} WHERE version = :v", {"v": 1}, tuple)
        none = await select_one(store, f"{applied} WHERE version = :v", {"v": 10_000}, tuple)
    assert rows == [(n, name) for n, name, _ in reversed(SQLITE_MIGRATIONS)]
    assert first == (1, "threads and events")
    assert none is None
