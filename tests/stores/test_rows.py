"""stores/rows.py: reading event rows back (density, committed retries, a row's seq)."""

from __future__ import annotations

import pytest

from threadline.errors import CorruptEvent
from threadline.events import UserMessage, utcnow
from threadline.stores.rows import already_written, check_dense, parse_row

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
