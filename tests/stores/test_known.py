"""`threadline.stores.known`: a thread's queued known-state appends merged into one write,
or left apart when they cannot be (their writes on a real SQLite file:
tests/stores/test_behind.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from threadline.events import UserMessage, utcnow
from threadline.stores.base import Lease
from threadline.stores.dialect import SQLITE, Query
from threadline.stores.known import KNOWN_UPDATE, ROWS_A_STATEMENT, KnownAppend, merged
from threadline.stores.rows import event_rows, insert_statement

ID = "th_known"
LEASE = Lease(ID, "worker", datetime(2030, 1, 1, tzinfo=UTC), token=7)


def _known(
    expected: int,
    events: int = 2,
    *,
    was: str = "running",
    status: str = "running",
    lease: Lease | None = None,
) -> KnownAppend:
    rows: dict[str, Any] = {"id": ID}
    msgs = [
        UserMessage(seq=expected + i, at=utcnow(), text=f"m{expected + i}") for i in range(events)
    ]
    event_rows(SQLITE, msgs, rows)
    params = {
        "id": ID,
        "state": f'{{"next_seq": {expected + events}}}',
        "status": status,
        "next_seq": expected + events,
        "due_at": None,
        "expected": expected,
    }
    if lease is not None:
        params |= {"owner": lease.owner, "token": lease.token}
    update = Query(SQLITE.sql(KNOWN_UPDATE[lease is not None, status == was]), params)
    insert = Query(SQLITE.sql(insert_statement(events)), rows)
    return KnownAppend(ID, expected, was, lease, update, insert, events)


def test_consecutive_appends_become_one_update_and_one_insert() -> None:
    parts: list[KnownAppend | None] = [_known(3), _known(5, 1), _known(6, 3)]
    whole = merged(parts, SQLITE)
    assert whole is not None
    assert (whole.expected, whole.was, whole.events) == (3, "running", 6)
    assert whole.params["expected"] == 3  # the first one's check
    assert whole.params["next_seq"] == 9 and whole.params["state"] == '{"next_seq": 9}'
    assert whole.update.sql == SQLITE.sql(KNOWN_UPDATE[False, True])  # status kept
    assert whole.insert is not None and whole.insert.sql == SQLITE.sql(insert_statement(6))
    rows = whole.insert.params
    assert [rows[f"seq_{i}"] for i in range(6)] == [3, 4, 5, 6, 7, 8]  # type: ignore[call-overload]
    assert rows["body_5"] == parts[2].insert.params["body_2"]  # type: ignore[union-attr, call-overload]
    assert parts[2].params["expected"] == 6  # the parts themselves are left as they were


def test_a_status_that_changes_across_them_is_written() -> None:
    whole = merged([_known(3), _known(5, status="awaiting_human")], SQLITE)
    assert whole is not None and not whole.kept
    assert whole.update.sql == SQLITE.sql(KNOWN_UPDATE[False, False])
    assert whole.params["status"] == "awaiting_human"
    back = merged([_known(3, status="paused"), _known(5, was="paused", status="running")], SQLITE)
    assert back is not None and back.kept  # running before the first, running after the last


def test_the_lease_is_checked_once_when_all_hold_the_same() -> None:
    whole = merged([_known(3, lease=LEASE), _known(5, lease=LEASE)], SQLITE)
    assert whole is not None and whole.lease == LEASE
    assert whole.update.sql == SQLITE.sql(KNOWN_UPDATE[True, True])
    assert (whole.params["owner"], whole.params["token"]) == ("worker", 7)


def test_appends_that_cannot_be_merged_are_left_apart() -> None:
    other = Lease(ID, "worker", LEASE.expires, token=8)
    assert merged([_known(3)], SQLITE) is None  # one alone
    assert merged([_known(3), None], SQLITE) is None  # not a known-state append
    assert merged([_known(3), _known(6)], SQLITE) is None  # a gap: 5 expected
    assert merged([_known(3, lease=LEASE), _known(5, lease=other)], SQLITE) is None
    assert merged([_known(3), _known(5, lease=LEASE)], SQLITE) is None
    big = ROWS_A_STATEMENT // 2 + 1
    assert merged([_known(0, big), _known(big, big)], SQLITE) is None  # over one INSERT
