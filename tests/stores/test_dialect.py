"""The dialects and the plans the SQL stores' queries run as (no database needed)."""

from __future__ import annotations

import pytest

from threadline.errors import StoreError
from threadline.stores.dialect import (
    POSTGRES,
    SQLITE,
    DuplicateKey,
    Plan,
    Query,
    Result,
    Returned,
    advance,
)


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
