"""The `Store` interface: threads as append-only event logs (stores as attached resources).

A store knows events and threads, nothing of models or tools. Every implementation keeps
these invariants, and `tests/stores/` runs one suite against each:

* `append(thread_id, events, expected_seq=n)` writes all of `events` (seq n, n+1, ...) in one
  transaction, or nothing. If the thread is not at seq `n`, it raises `AppendConflict`;
  two writers racing on the same seq: exactly one wins.
* Beside the events, a store keeps a *projection* of the folded `ThreadState` (status, next
  seq, due time) so threads can be listed and leased by status without loading them. It is
  written in the same transaction as the events and can always be rebuilt from them.
* A stored row that does not parse raises `CorruptEvent` naming the thread and seq; nothing
  is rewritten.
* A `tool_started` is appended only as the next attempt of a pending call
  (`ThreadState.start_refused`); a write-ahead record delivered twice raises
  `StaleWriteAhead`, nothing written, so its writer never runs the tool a second time.
* Leases (the work queue): `lease()` hands each runnable thread to at most one live holder
  and bumps its fencing token; an append made with a `Lease` checks owner, token and expiry
  in the same transaction as the seq check and raises `LeaseLost` otherwise, so a holder
  that was frozen or cut off past its expiry can never write again.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias, TypedDict

from pydantic import ConfigDict

from ..errors import AppendConflict, CorruptEvent, StaleWriteAhead, ThreadlineError
from ..events import Event, Status, Thread, ThreadState, ToolStarted
from ..wire import SkippedThread, ThreadListItem

__all__ = [
    "Append",
    "Lease",
    "LeaseQuery",
    "ListOptions",
    "Page",
    "Store",
    "ThreadQuery",
    "ThreadSummary",
    "new_thread_id",
    "takes_fold",
]


def new_thread_id() -> str:
    """A time-ordered, unguessable id: `th_` + 12 hex digits of ms time + 16 random hex."""
    return f"th_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


class ThreadSummary(ThreadListItem):
    """A thread's row without its events: what the HTTP API lists of it
    (`threadline.wire.ThreadListItem`, which leaves the rest out), and when it is due
    and who holds its lease."""

    model_config = ConfigDict(frozen=True)

    due_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; pass `cursor` back to get the next (None: no more).

    `skipped` are the rows of this page that did not parse, with why."""

    items: list[ThreadSummary]
    cursor: str | None
    skipped: list[SkippedThread] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's exclusive right to append to a thread until `expires`."""

    thread_id: str
    owner: str
    expires: datetime
    token: int = 0
    """Fencing token: grows every time the thread is leased; stale holders carry old ones."""
    taken_over_from: str | None = None
    """The previous holder, when this lease replaced one that lapsed instead of being
    released (its holder crashed or stalled): a takeover, which metrics count."""


Append: TypeAlias = tuple[
    str,
    Sequence[Event],
    int,
    Lease | None,
    bool,
    Callable[[], Awaitable[None]] | None,
    bool,
    ThreadState | None,
]
"""An append's arguments as a store's `_append` takes them: `(thread_id, events,
expected_seq, lease, behind, after, ahead, folded)`, `behind` True for `append_behind` (see
there for `after`, `ahead` and `folded`). A plain tuple: one is built per append, on the hot
path, where a named tuple's constructor costs more than the rest of the call."""


@dataclass(frozen=True, slots=True)
class ThreadQuery:
    """A listing's arguments, parsed (`Store.list`): `before` is the decoded cursor, the id
    the page continues below."""

    status: Status | None
    agent: str | None
    limit: int
    before: str | None


class ListOptions(TypedDict, total=False):
    """`Store.list`'s keywords (defaults and meaning there), as taken by what passes them on:
    the HTTP `Client` and the CLI's `LocalThreads` (`list_threads`)."""

    status: Status | str | None
    agent: str | None
    limit: int
    cursor: str | None


@dataclass(frozen=True, slots=True)
class LeaseQuery:
    """A lease request (`Store.lease`): `agents` and `thread_ids` are None or not empty."""

    owner: str
    ttl: float
    limit: int
    agents: Sequence[str] | None
    thread_ids: Sequence[str] | None


class Store(ABC):
    """Where threads live. Async throughout; sync callers use `threadline.run_sync`.

    The public methods check and parse their arguments here, once; an implementation
    writes the hooks they call (`_append`, `_list`, `_lease`) and the abstract methods."""

    @abstractmethod
    async def create(self, thread: Thread) -> None:
        """Store a new thread with its initial events. Raises StoreError if the id exists."""

    async def create_behind(self, thread: Thread) -> Awaitable[None] | None:
        """`create`, perhaps returning before the thread is durable, as `append_behind`
        does: None when it is, else what completes when it is (or raises the error that
        undid it). The errors of `create` are raised here, having written nothing. This
        default is `create`."""
        await self.create(thread)
        return None

    def append(
        self,
        thread_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        lease: Lease | None = None,
    ) -> Awaitable[object]:
        """Append `events` atomically at `expected_seq`; durable once awaited.

        Not `async` itself: it returns `_append`'s coroutine for the caller to await (one
        coroutine fewer per append, on the hot path), whose value means nothing here.

        Raises:
            ThreadNotFound: no such thread.
            AppendConflict: the thread is not at `expected_seq`; nothing written.
            LeaseLost: `lease` is given and no longer held; nothing written.
        """
        return self._append((thread_id, events, expected_seq, lease, False, None, True, None))

    def append_behind(
        self,
        thread_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        lease: Lease | None = None,
        after: Callable[[], Awaitable[None]] | None = None,
        ahead: bool = True,
        folded: ThreadState | None = None,
    ) -> Awaitable[Awaitable[None] | None]:
        """`append`, returning once the events are written, perhaps before they are durable
        (pipelining: the caller computes meanwhile what does not depend on them).

        `after`, if given, is awaited once the append is prepared and before anything of it
        is written: the caller's previous append becoming durable (see `threadline.pipeline`),
        so the store prepares this one meanwhile. If it raises, nothing is written. A store
        may instead queue the append behind that previous one, still in flight, and write
        both in one transaction (`after` not awaited; SQLite, `stores/behind.py`): then the
        errors below are raised by the awaitable returned. Without `ahead` the caller will
        wait for durability at once: the store goes behind only to share a commit in flight.

        `folded`, if given, is the caller's own fold of the thread through `events` (its
        `Thread.state` once it extended them): a store that knows the state before them
        may write that state's projection instead of folding them again (`takes_fold`
        says when). It is read before this returns and nothing of it is kept: the caller
        may go on folding into it at once.

        Returns None when they are durable already, else an awaitable that completes when
        they are, or raises the error that undid them (a failed `COMMIT`: then nothing of
        this append stays). It must be awaited before any other append to the thread, and
        before anything that may only follow durable events. The errors of `append`
        (conflict, lost lease, unknown thread) are raised here, having written nothing.
        A store that cannot return early (`MemoryStore`) is durable on return.
        """
        return self._append((thread_id, events, expected_seq, lease, True, after, ahead, folded))

    @abstractmethod
    async def _append(self, append: Append) -> Awaitable[None] | None:
        """`append` (`behind` False: durable on return, returning None) or `append_behind`
        (awaiting `after`, if any, before anything is written, unless queued)."""

    @abstractmethod
    async def load(self, thread_id: str) -> Thread:
        """The whole thread. Raises ThreadNotFound or CorruptEvent."""

    @abstractmethod
    async def events(self, thread_id: str, *, after: int = -1, limit: int = 1000) -> list[Event]:
        """Events with seq > `after`, oldest first, at most `limit`."""

    @abstractmethod
    async def get(self, thread_id: str) -> ThreadSummary:
        """The thread's row. Raises ThreadNotFound."""

    async def list(
        self,
        *,
        status: Status | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Threads newest first, optionally filtered; paginated by an opaque cursor.

        Raises:
            ValueError: `status` is not a status, or `cursor` is not one a listing returned
                (`InvalidCursor`).
        """
        wanted = Status(status) if status is not None else None
        before = decode_cursor(cursor) if cursor else None
        return await self._list(ThreadQuery(wanted, agent, limit, before))

    @abstractmethod
    async def _list(self, query: ThreadQuery) -> Page:
        """`list` with its arguments parsed: at most `query.limit` rows (`page_of`)."""

    @abstractmethod
    async def delete(self, thread_id: str) -> None:
        """Remove a thread and its events (retention). Raises ThreadNotFound."""

    # -- leases: the work queue ----------------------------------------------------------

    async def lease(
        self,
        owner: str,
        *,
        ttl: float,
        limit: int = 1,
        agents: Sequence[str] | None = None,
        thread_ids: Sequence[str] | None = None,
    ) -> builtins.list[Lease]:
        """Lease up to `limit` runnable threads to `owner` for `ttl` seconds.

        Runnable: status `running` with no live lease, or status `waiting` whose `due_at`
        has passed (and no live lease). Each lease bumps the thread's fencing token, so a
        previous holder's `Lease` can never append again. Two callers never receive the same
        thread while its lease is live. `agents` restricts the leasing to those agent names
        (a worker only takes threads it can advance); `thread_ids` to those threads (a
        server advancing the thread a request just touched).
        """
        if (agents is not None and not agents) or (thread_ids is not None and not thread_ids):
            return []  # an empty filter admits no thread
        return await self._lease(LeaseQuery(owner, ttl, limit, agents, thread_ids))

    @abstractmethod
    async def _lease(self, query: LeaseQuery) -> builtins.list[Lease]:
        """`lease` once its filters admit some thread."""

    @abstractmethod
    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        """Extend a live lease by `ttl` seconds from now.

        Raises LeaseLost if the lease expired or was taken (a lapsed lease is gone even if
        nobody took it: its holder may have been frozen and must stop).
        """

    @abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Give the thread back. Returns False (and changes nothing) if the lease was lost."""

    @abstractmethod
    async def break_lease(self, thread_id: str) -> None:
        """Clear whatever lease the thread has (operators: `threadline threads retry`).

        The fencing token is bumped, so the old holder's appends are refused.
        """

    async def wait_for_work(self, seconds: float) -> None:
        """Return when a thread may have become runnable, or after `seconds`.

        The default just sleeps (polling); PostgreSQL wakes on LISTEN/NOTIFY.
        """
        await asyncio.sleep(seconds)

    async def ping(self) -> None:  # noqa: B027 - optional hook with a working default
        """Raise if the store cannot answer (readiness checks)."""

    def due(self) -> None:  # noqa: B027 - optional hook with a working default
        """On the event loop, between steps: write what is due now (a group of appends whose
        window has passed). The runtime calls it as each turn begins: on a loop busy with
        many threads' turns, a timer runs only once the loop has gone round all of them."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a working default
        """Release connections. The store must not be used afterwards."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_append(thread_id: str, next_seq: int, events: Sequence[Event], expected_seq: int) -> None:
    """Check `events` continue a thread whose next seq is `next_seq` at `expected_seq`.

    Raises AppendConflict (another writer is ahead) or CorruptEvent (events not dense)."""
    if next_seq != expected_seq:
        raise AppendConflict(thread_id, expected_seq, next_seq)
    for i, event in enumerate(events):
        if event.seq != expected_seq + i:
            raise CorruptEvent(
                thread_id, event.seq, f"appended events must be dense from seq {expected_seq}"
            )


def fold_for_append(
    thread_id: str,
    state: ThreadState,
    events: Sequence[Event],
    expected_seq: int,
    *,
    in_place: bool = False,
) -> ThreadState:
    """Check `events` continue the thread at `expected_seq` (`check_append`) and that each
    `tool_started` starts a pending call's next attempt (else `StaleWriteAhead`); return
    the state after them, a copy: `state` itself is not modified. With `in_place`, `state`
    itself is folded and returned (no copy): only for a state nobody else holds, and
    thrown away if this raises (it may be half folded)."""
    check_append(thread_id, state.next_seq, events, expected_seq)
    new = state if in_place else state.copy()
    for event in events:
        if type(event) is ToolStarted and (refused := new.start_refused(event)):
            raise StaleWriteAhead(thread_id, event.seq, refused)
        new.apply(event)
    return new


def takes_fold(events: Sequence[Event], expected_seq: int, folded: ThreadState) -> bool:
    """Whether an append of `events` at `expected_seq`, to a thread whose state there the
    store knows, may write `folded` (its caller's fold through them) instead of folding
    them again: `folded` ends where they end, with their last kind; it holds no pending
    call (its fields are then all immutable values, read at once: nothing of the
    caller's object is kept); and none of them is to be checked against the state before
    it (a `tool_started` is, `start_refused`: a write-ahead sent twice comes from a
    caller whose state is not the store's). `check_append` is still the store's to call.
    The runtime's read-only turns (a model call, its calls and their results) qualify."""
    if (
        folded.pending
        or folded.next_seq != expected_seq + len(events)
        or folded.last_kind != events[-1].kind
    ):
        return False
    return ToolStarted not in map(type, events)


def page_of(rows: Sequence[ThreadSummary | SkippedThread], limit: int) -> Page:
    """A page from up to `limit + 1` rows (the extra one says there is a next page); bad
    rows take their place in the page (and the cursor) but are reported apart."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [r for r in rows if isinstance(r, ThreadSummary)],
        encode_cursor(rows[-1].id) if more and rows else None,
        [r for r in rows if isinstance(r, SkippedThread)],
    )


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None


class InvalidCursor(ThreadlineError, ValueError):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"invalid cursor {cursor[:40]!r}: pass back a cursor a listing returned")


def state_from_json(thread_id: str, raw: str | bytes | dict[str, Any]) -> ThreadState:
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return ThreadState.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptEvent(thread_id, -1, f"thread state projection unreadable: {exc}") from None
