"""The dialects and the plans the SQL stores' queries run as (no database needed but for
the one-query reads, `select` and `select_one`, run on a SQLite file)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
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
    iso_time,
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


def test_sqlite_times_are_written_as_isoformat_writes_them() -> None:
    """Stored times compare as text in time order, old rows beside new: the faster UTC
    formatting writes exactly `isoformat`'s text (whole seconds without a fraction, the
    offset as `+00:00`), and other offsets go through `isoformat` itself."""
    rng = random.Random(15)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = [epoch + timedelta(microseconds=rng.randrange(2**57)) for _ in range(20_000)]
    times += [
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 30, 22, 33, 9, 100000, tzinfo=UTC),
        datetime(2026, 11, 30, 22, 33, 9, 5, tzinfo=timezone(timedelta(hours=2))),
    ]
    for value in times:
        assert iso_time(value) == value.isoformat()
    assert SQLITE.time(times[-2]) == "2026-11-30T22:33:09.100000+00:00"


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
