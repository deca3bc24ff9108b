"""Stored rows (the SQL stores): an append's events and projection as written (their JSON,
the `INSERT` of several events); read back: a thread's row, density, committed retries,
parsing; a table's columns as an object (`Columns`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic_core import PydanticSerializationError, to_json

from ..errors import CorruptEvent, ThreadNotFound
from ..events import Event, ThreadState, event_from_json
from .dialect import Dialect, Result

__all__ = [
    "Columns",
    "Projected",
    "already_written",
    "check_dense",
    "event_json",
    "event_rows",
    "insert_statement",
    "joined_rows",
    "nullable",
    "parse_row",
    "row_of",
    "state_json",
]

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


def event_rows(d: Dialect, events: Sequence[Event], params: dict[str, Any]) -> str:
    """`events` as the rows of a `VALUES` list, their values added to `params` (`:seq_0`,
    ...; the thread's id is `:id`)."""
    when, text = None, None  # a turn's events share their time: formatted once
    for (seq, kind, at, body), e in zip(_row_names(len(events)), events, strict=True):
        params[seq] = e.seq
        params[kind] = e.kind
        if e.at is not when:
            when, text = e.at, d.time(e.at)
        params[at] = text
        params[body] = event_json(e)
    return _values(len(events))


@lru_cache(maxsize=64)
def _row_names(rows: int) -> tuple[tuple[str, str, str, str], ...]:
    """The parameters of `rows` events' rows, made once (their hashes kept)."""
    return tuple((f"seq_{i}", f"kind_{i}", f"at_{i}", f"body_{i}") for i in range(rows))


@lru_cache(maxsize=64)
def _values(rows: int) -> str:
    """A `VALUES` list of `rows` events' rows (`event_rows`)."""
    return ", ".join(f"(:id, :seq_{i}, :kind_{i}, :at_{i}, :body_{i}{{json}})" for i in range(rows))


@lru_cache(maxsize=64)
def insert_statement(rows: int) -> str:
    """The `INSERT` of `rows` events' rows, one string object a size (`Dialect.sql`'s
    cache then finds it by its kept hash)."""
    return "INSERT INTO events (thread_id, seq, kind, at, body) VALUES " + _values(rows)


def event_json(event: Event) -> str:
    """An event's stored JSON: `model_dump_json`'s, through the model's serializer at once
    (the method's keyword arguments cost a third of the call, three times an append)."""
    return type(event).__pydantic_serializer__.to_json(event).decode()


def state_json(state: ThreadState) -> str:
    """The projection's JSON: pydantic-core's encoder, a third of the instructions of
    `json.dumps` on this small dict, which every append writes (bench/instructions.py).
    A string it cannot encode as UTF-8 (a lone surrogate) goes through `json.dumps`, whose
    ASCII escapes store it as before."""
    return _snapshot_json(state.to_dict())


def _snapshot_json(snapshot: dict[str, Any]) -> str:
    try:
        return to_json(snapshot).decode()
    except PydanticSerializationError:
        return json.dumps(snapshot)


class Projected:
    """The state after an append as its projection: what the store writes and remembers
    when the append took the caller's own fold of its events (`append_behind`'s `folded`)
    instead of folding them again. Made from a state with no pending call, whose fields
    are all immutable values: the snapshot (`ThreadState.to_dict`) holds nothing of the
    caller's object, which goes on folding the next turn's events. It stands for the
    state in the store's cache (`next_seq`, `status`) and gives it back when an append
    must fold (`state`)."""

    __slots__ = ("json", "next_seq", "snapshot", "status", "waiting_until")

    def __init__(self, state: ThreadState) -> None:
        if state.pending:  # its calls' arguments are the caller's dicts
            raise ValueError("a state with pending calls is folded by the store, not projected")
        snapshot = self.snapshot = state.to_dict()
        self.json = _snapshot_json(snapshot)
        self.next_seq = state.next_seq
        self.status = state.status
        self.waiting_until = state.waiting_until

    def state(self) -> ThreadState:
        """A new state equal to the one projected (but for `validated`, never stored)."""
        return ThreadState.from_dict(self.snapshot)


def joined_rows(thread_id: str, parts: Sequence[tuple[Any, int]]) -> dict[str, Any]:
    """The `VALUES` parameters of several `event_rows` (each its parameters and its number
    of rows), in order, as one list's (`insert_statement` of their sum)."""
    params: dict[str, Any] = {"id": thread_id}
    names = iter(_row_names(sum(rows for _, rows in parts)))
    for values, rows in parts:
        for old, new in zip(_row_names(rows), names):  # noqa: B905 (`names` runs on)
            for was, now in zip(old, new, strict=True):
                params[now] = values[was]
    return params
