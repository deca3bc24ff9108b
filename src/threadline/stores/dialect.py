"""How a SQL store's queries meet a database: plans, queries, results and the dialect.

A *plan* is a generator that yields `Query` objects and receives each one's `Result`,
ending with a value. Plans hold the logic of a store operation and do no I/O of their own,
so one plan runs on SQLite's synchronous connection and on psycopg's asynchronous one: each
store drives it with its own connection (`advance` feeds it one outcome). A plan has no
effect before its last query, so a driver may throw one away and run a fresh one.

Queries are written with `:name` parameters and `{fragment}` holes that a `Dialect` fills
(`Dialect.sql`): the clock, row locks, JSON casts. A unique-key violation is classified by
the driver and thrown into the plan as `DuplicateKey` at the query that caused it.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

from pydantic_core import to_json

from ..errors import StoreError
from .migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Migration

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "DuplicateKey",
    "Params",
    "Plan",
    "PlanRunner",
    "Query",
    "Result",
    "Returned",
    "Tx",
    "advance",
    "insert_new",
    "iso_time",
    "select",
    "select_one",
    "stored_json",
    "stored_time",
]

T = TypeVar("T")

Params: TypeAlias = Mapping[str, Any]


class Query(NamedTuple):
    """One statement with its named parameters (`many`: run once per mapping in `params`).

    A named tuple, not a dataclass: several are made per append, on the hot path.
    """

    sql: str
    params: Params | Sequence[Params] = ()
    many: bool = False


class Result(NamedTuple):
    """What a statement returned: its rows (none for most writes) and the rows it touched."""

    rows: builtins.list[Sequence[Any]]
    rowcount: int


Plan: TypeAlias = Generator[Query, Result, T]
"""Queries out, results in, a value at the end (see the module docstring)."""


class DuplicateKey(StoreError):
    """Thrown into a plan at the query a unique constraint refused (the driver classifies).

    A plan that expects it turns it into an error naming what already exists.
    """


@dataclass(frozen=True, slots=True)
class Returned(Generic[T]):
    """A finished plan's value."""

    value: T


def advance(plan: Plan[T], outcome: Result | DuplicateKey | None) -> Query | Returned[T]:
    """Feed `plan` the outcome of its last query (None: start it); its next query or value."""
    try:
        if outcome.__class__ is Result:  # the common case first, without isinstance
            return plan.send(outcome)
        if outcome is None:
            return next(plan)
        return plan.throw(outcome)  # type: ignore[arg-type]
    except StopIteration as stop:
        return Returned(stop.value)


class PlanRunner(Protocol):
    """What runs plans on a database: a SQL store (`SQLStore.run`)."""

    @property
    def dialect(self) -> Dialect: ...

    async def run(self, plan: Callable[[], Plan[T]], tx: Tx, *, append_to: str | None = None) -> T:
        """Run a fresh `plan()` to its end and return its value."""
        ...


async def insert_new(store: PlanRunner, sql: str, args: Params, exists: str) -> None:
    """Run one INSERT (`sql` before `Dialect.sql`) in a write transaction.

    Raises:
        StoreError: `exists`, when the row breaks a unique key (nothing is written).
    """
    query = Query(store.dialect.sql(sql), args)

    def plan() -> Plan[None]:
        try:
            yield query
        except DuplicateKey:
            raise StoreError(exists) from None

    await store.run(plan, Tx.WRITE)


async def select(
    store: PlanRunner, sql: str, args: Params, row_to: Callable[[Sequence[Any]], T]
) -> builtins.list[T]:
    """Run one SELECT (`sql` before `Dialect.sql`), outside a transaction; each row as
    `row_to` reads it, in the order the query gives."""
    query = Query(store.dialect.sql(sql), args)

    def plan() -> Plan[builtins.list[T]]:
        return [row_to(row) for row in (yield query).rows]

    return await store.run(plan, Tx.READ)


async def select_one(
    store: PlanRunner, sql: str, args: Params, row_to: Callable[[Sequence[Any]], T]
) -> T | None:
    """`select`'s first row (a query by a unique key); None when there is none."""
    rows = await select(store, sql, args, row_to)
    return rows[0] if rows else None


class Tx(Enum):
    """How a plan needs its statements run."""

    READ = "read"
    """Reads only; no transaction needed."""
    WRITE = "write"
    """Writes that are each atomic alone (one statement, or independent ones): PostgreSQL
    runs them in autocommit; SQLite still takes its write lock (`BEGIN IMMEDIATE`)."""
    ATOMIC = "atomic"
    """Several statements that commit together or not at all."""


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


_FRAGMENTS = ("now", "expires", "lock", "skip_locked", "json", "text")
"""The `Dialect` fields a query template names in braces (`{now}`, `{lock}`, ...)."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases, as data (see the module docstring).

    Attributes:
        name: `sqlite` or `postgresql`.
        migrations: the numbered schema migrations of this database.
        pyformat: parameters are `%(name)s` (psycopg) rather than `:name` (sqlite3).
        now: SQL for the current time (SQLite binds `:now`, PostgreSQL asks its clock).
        expires: SQL for now plus `:ttl` seconds (SQLite binds the time as `:expires`).
        lock / skip_locked: row-lock clauses ending a SELECT (empty where the database's
            write lock already serialises writers).
        json: suffix to a parameter stored in a JSON column; text: suffix reading one as text.
        fused_writes: data-modifying CTEs work, so an append's events and projection go in
            one statement (one round trip fewer).
        returning_from: an `UPDATE ... FROM` may return the FROM table's columns (the old
            lease holder comes back from the leasing statement itself; SQLite forbids it).
        lists: `any` binds a list as `= ANY(:name)`; `expand` writes `IN (:name_0, ...)`.
        time: how a datetime parameter is bound (ISO text for SQLite).
    """

    name: str
    migrations: Sequence[Migration]
    pyformat: bool
    now: str
    expires: str
    lock: str
    skip_locked: str
    json: str
    text: str
    fused_writes: bool
    returning_from: bool
    lists: str
    time: Callable[[datetime], Any]
    _compiled: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, template: str) -> str:
        """`template` with its fragments filled and its parameters in this driver's style."""
        done = self._compiled.get(template)
        if done is None:
            done = template.format_map({name: getattr(self, name) for name in _FRAGMENTS})
            if self.pyformat:
                done = _PARAM.sub(r"%(\1)s", done)
            if len(self._compiled) < 512:  # the templates are few; dynamic ones are bounded
                self._compiled[template] = done
        return done

    def any_of(self, column: str, name: str, values: Sequence[Any]) -> tuple[str, Params]:
        """A condition `column` is one of `values`, and its parameters."""
        if self.lists == "any":
            return f"{column} = ANY(:{name})", {name: builtins.list(values)}
        bound = {f"{name}_{i}": value for i, value in enumerate(values)}
        return f"{column} IN ({', '.join(':' + n for n in bound)})", bound

    def at(self, value: datetime | None) -> Any:
        """A datetime parameter, None kept."""
        return None if value is None else self.time(value)


def iso_time(value: datetime) -> str:
    """`value.isoformat()`; a time in UTC (every time the runtime's clock reads) through
    pydantic-core's formatter, its `Z` written `+00:00` as `isoformat` writes it: about
    half the instructions, three times a turn (bench/instructions.py)."""
    if value.tzinfo is UTC:
        return to_json(value)[1:-2].decode() + "+00:00"
    return value.isoformat()


# -- the two dialects, side by side ------------------------------------------------------

SQLITE = Dialect(
    name="sqlite",
    migrations=SQLITE_MIGRATIONS,
    pyformat=False,
    now=":now",
    expires=":expires",
    lock="",  # BEGIN IMMEDIATE: the writer holds the database's write lock
    skip_locked="",
    json="",
    text="",
    fused_writes=False,  # no INSERT inside WITH
    returning_from=False,
    lists="expand",
    time=iso_time,
)
"""SQLite: times as ISO text bound by the store, JSON as TEXT, one writer at a time."""


def _as_is(value: datetime) -> datetime:
    return value


POSTGRES = Dialect(
    name="postgresql",
    migrations=POSTGRES_MIGRATIONS,
    pyformat=True,
    now="now()",
    expires="now() + make_interval(secs => :ttl)",
    lock=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    json="::jsonb",
    text="::text",
    fused_writes=True,
    returning_from=True,
    lists="any",
    time=_as_is,
)
"""PostgreSQL: its own clock, row locks, JSONB, data-modifying CTEs, array parameters."""


def stored_time(value: str | datetime) -> datetime:
    """A time read back: ISO text from SQLite, a datetime from psycopg."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def stored_json(value: str | dict[str, Any]) -> dict[str, Any]:
    """A JSON object read back: text (SQLite, or `::text` in PostgreSQL) or decoded."""
    return dict(json.loads(value)) if isinstance(value, str) else dict(value)
