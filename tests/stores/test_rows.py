"""stores/rows.py: reading rows back (density, committed retries, a row's seq; a table's
columns as an object); a caller's fold as projected (`Projected`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from threadline.errors import CorruptEvent
from threadline.events import (
    Done,
    ModelCall,
    Thread,
    ToolCall,
    UserMessage,
    Waiting,
    utcnow,
)
from threadline.stores.dialect import stored_json, stored_time
from threadline.stores.rows import (
    Columns,
    Projected,
    already_written,
    check_dense,
    nullable,
    parse_row,
    state_json,
)

FIRST = UserMessage(seq=0, at=utcnow(), text="hi")
SECOND = UserMessage(seq=1, at=utcnow(), text="again")


def test_a_hole_in_the_rows_names_the_missing_seq() -> None:
    check_dense("t", [(3,), (4,)], first=3)
    with pytest.raises(CorruptEvent, match="missing") as found:
        check_dense("t", [(0,), (2,)], first=0)
    assert found.value.seq == 1 and found.value.thread_id == "t"


def test_a_committed_retry_is_recognised_only_when_every_event_matches() -> None:
    rows = [(0, FIRST.model_dump_json()), (1, SECOND.model_dump_json())]
    assert already_written(rows, [FIRST, SECOND])
    assert not already_written(rows[:1], [FIRST, SECOND])
    assert not already_written(rows, [FIRST, SECOND.model_copy(update={"text": "other"})])
    assert not already_written([(0, "{not json"), rows[1]], [FIRST, SECOND])


def test_a_row_holding_another_seq_or_no_event_is_corrupt() -> None:
    assert parse_row("t", 0, FIRST.model_dump_json(), 1) == FIRST
    with pytest.raises(CorruptEvent, match="holds an event with seq 0"):
        parse_row("t", 5, FIRST.model_dump_json(), 1)
    with pytest.raises(CorruptEvent) as found:
        parse_row("t", 2, '{"kind": "nope"}', 1)
    assert found.value.seq == 2


@dataclass(frozen=True)
class Row:
    id: str
    at: datetime
    body: dict[str, object]
    until: datetime | None
    count: int


ROWS = Columns(
    Row,
    "id, at, body{text}, until, count",
    at=stored_time,
    body=stored_json,
    until=nullable(stored_time),
)


def test_columns_give_the_select_list_and_read_each_column_into_its_field() -> None:
    assert f"SELECT {ROWS.names} FROM t" == "SELECT id, at, body{text}, until, count FROM t"
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # SQLite returns ISO text and JSON text; psycopg a datetime (and the JSON as text).
    read = ROWS.read(("r1", at.isoformat(), '{"a": 1}', None, 3))
    assert read == Row("r1", at, {"a": 1}, None, 3)
    assert ROWS.read(("r1", at, '{"a": 1}', at, 3)).until == at


def test_a_row_that_does_not_parse_raises_its_parsers_error() -> None:
    with pytest.raises(ValueError):
        ROWS.read(("r1", "not a time", "{}", None, 3))
    with pytest.raises(ValueError):  # a row of another query: as many values as columns
        ROWS.read(("r1", "2026-01-02T03:04:05+00:00", "{}", None))


def test_a_parser_for_a_column_not_selected_is_refused_where_it_is_declared() -> None:
    with pytest.raises(ValueError, match=r"Row: no column \['when'\]"):
        Columns(Row, "id, at, body{text}, until, count", when=stored_time)


def test_a_projected_state_is_its_json_and_gives_an_equal_state_back() -> None:
    """What the store remembers of a caller's fold: its projection's JSON, seq, status and
    due time as the state's own, and an equal state (a new object) when it must fold."""
    now = utcnow()
    waiting = Thread("t", "a", [FIRST, ModelCall(seq=1, at=now, model="m", cost_usd=0.1)])
    waiting.append(Waiting(seq=2, at=now, until=datetime(2030, 1, 2, 3, 4, tzinfo=UTC)))
    done = Thread("t", "a", [FIRST, Done(seq=1, at=now, message="ok")])
    for thread in (waiting, done):
        projected = Projected(thread.state)
        assert projected.json == state_json(thread.state)
        assert (projected.next_seq, projected.status) == (thread.next_seq, thread.status)
        assert projected.waiting_until == thread.state.waiting_until
        again = projected.state()
        assert again == thread.state and again is not thread.state


def test_a_state_with_pending_calls_is_not_projected() -> None:
    """A pending call's arguments are the caller's own dicts: such a state is refused, with
    why (the store folds it instead), rather than kept by reference."""
    call = ToolCall(seq=1, at=utcnow(), call_id="c1", tool="t", version="1", arguments={})
    with pytest.raises(ValueError, match="pending"):
        Projected(Thread("t", "a", [FIRST, call]).state)
