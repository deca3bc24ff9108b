"""Reading stored rows back (the SQL stores): a thread's row, density, committed retries,
parsing; a table's columns as an object (`Columns`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import CorruptEvent, ThreadNotFound
from ..events import Event, event_from_json
from .dialect import Result

__all__ = ["Columns", "already_written", "check_dense", "nullable", "parse_row", "row_of"]

T = TypeVar("T")


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


def parse_row(thread_id: str, seq: int, body: str | bytes, schema_version: int) -> Event:
    """One stored row as its event (upgraded from `schema_version`), checked to hold `seq`.
    Bytes: text the database could not decode (SQLite reads such text back as bytes)."""
    if isinstance(body, bytes):
        raise CorruptEvent(thread_id, seq, f"not UTF-8 text: {body[:40]!r}")
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


def nullable(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """`parse` for a column that may be NULL: None is read as None."""

    def read(value: Any) -> T | None:
        return None if value is None else parse(value)

    return read


class Columns(Generic[T]):
    """The columns a query selects and the object each row is read as, declared once.

    `names` is the column list as the query writes it (a JSON column read as text ends in
    `{text}`). Each column fills the keyword of `build` with its name: as the driver
    returned it, or through its entry in `parse` (`stored_time`, `stored_json`, `int`,
    `nullable(...)` where the column may be NULL).
    """

    __slots__ = ("_fields", "build", "names")

    def __init__(self, build: Callable[..., T], names: str, **parse: Callable[[Any], Any]) -> None:
        fields = [name.strip().removesuffix("{text}") for name in names.split(",")]
        unknown = parse.keys() - set(fields)
        if unknown:
            raise ValueError(f"{build.__name__}: no column {sorted(unknown)} in {names!r}")
        self.build = build
        self.names = names
        self._fields = tuple((name, parse.get(name)) for name in fields)

    def read(self, row: Sequence[Any]) -> T:
        """One selected row as its object. A value its parser refuses raises that parser's
        error (ValueError, TypeError)."""
        values = zip(self._fields, row, strict=True)
        return self.build(**{name: v if p is None else p(v) for (name, p), v in values})
