"""Reading stored rows back (the SQL stores): a thread's row, density, committed retries,
parsing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import CorruptEvent, ThreadNotFound
from ..events import Event, event_from_json
from .dialect import Result

__all__ = ["already_written", "check_dense", "parse_row", "row_of"]


def check_dense(thread_id: str, rows: Sequence[Sequence[Any]], *, first: int) -> None:
    """Rows hold seqs first, first+1, ...: a hole raises CorruptEvent naming the missing seq
    (a page with a hole would otherwise serve a gap silently)."""
    for expected, row in enumerate(rows, start=first):
        if row[0] != expected:
            raise CorruptEvent(thread_id, expected, f"missing (the next stored is {row[0]})")


def already_written(rows: Sequence[Sequence[Any]], events: Sequence[Event]) -> bool:
    """Whether the stored `rows` (seq, body) are exactly `events` (a committed retry)."""
    if len(rows) != len(events):
        return False
    try:
        return all(
            seq == e.seq and event_from_json(body) == e
            for (seq, body), e in zip(rows, events, strict=True)
        )
    except CorruptEvent:
        return False


def parse_row(thread_id: str, seq: int, body: str, schema_version: int) -> Event:
    """One stored row as its event (upgraded from `schema_version`), checked to hold `seq`."""
    try:
        event = event_from_json(body, schema_version=schema_version, thread_id=thread_id)
    except CorruptEvent as exc:
        raise CorruptEvent(thread_id, seq, exc.reason) from None
    if event.seq != seq:
        raise CorruptEvent(thread_id, seq, f"row seq {seq} holds an event with seq {event.seq}")
    return event


def row_of(thread_id: str, found: Result) -> Sequence[Any]:
    """The row a query by the thread's id found; ThreadNotFound when it found none."""
    if not found.rows:
        raise ThreadNotFound(thread_id)
    return found.rows[0]
