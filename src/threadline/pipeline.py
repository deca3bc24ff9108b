"""Pipelining: a turn's commit on its way to disk while the next model call is made.

At `synchronous=FULL` a turn's commit is an fsync, and the fsync is most of a turn. When a
held turn (`Runtime._turn`: a model's answer with its read-only tools' outcomes) ends
because the next step is another model call, its append returns as soon as its statements
ran (`Store.append_behind`), and the runtime renders, asks the model, reads its answer and
runs its read-only tools while the `COMMIT` goes on on a thread of its own (sqlite3
releases the GIL during it).
The rules (docs/core.md, "Pipelining"), which this module and its callers keep:

* Only the model call and read-only tools run ahead of durability: the render, the call,
  reading the answer and, when it calls only read-only tools, running them and holding
  their outcomes in memory (the next held turn). Observers are told of the commit's
  events by its task once it returned, with a copy of the thread as committed (`as_of`).
* Everything else waits for the commit first (`join`): every append to the thread (so
  the thread's appends stay in order, and a side effect's `tool_started` is durable
  before its tool runs), any step a held turn cannot hold, a rate limit's permit before
  a model call, and the end of `advance` (so every public call returns only when all it
  appended is durable, or raises).
* A commit that fails raises its own error at the join, as the append would have raised
  it; the thread's events from that append on are dropped from memory, and whatever was
  computed on top of them (the model's next answer) is dropped with the unwinding, never
  appended. A conflict or a lost lease cannot fail a commit: they are checked with the
  statements, before the append returns, and raised there as before.

* A store may queue an append behind the thread's commit still in flight instead of
  waiting for it (SQLite, `stores/behind.py`: at most `pipeline_depth` appends on their
  way): then a thread has several commits in flight here, joined in order, and a conflict
  found by a queued append's statements is raised at the join as `Refused`, the thread
  cut back to before it; `Runtime.advance_only` loads the thread and decides again.

A crash while commits are in flight loses at most their turns' events (none was
acknowledged: observers hear of them only after the `COMMIT` returned) and the turn being
held; on resume the model is asked again, exactly as after a crash before the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import AppendConflict
from .events import Thread

__all__ = ["Pipeline", "Refused", "as_of", "rollback"]


@dataclass(slots=True)
class _InFlight:
    thread: Thread
    expected: int
    """The thread's length before the append: what it falls back to if the commit fails."""
    task: asyncio.Future[None]


class Refused(Exception):
    """An append that went behind a commit in flight was refused when its statements ran
    (another writer appended first): raised at the join, the thread already cut back to
    before the first append not stored. `Runtime.advance_only` reloads and decides again."""

    def __init__(self, conflict: AppendConflict) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


class Pipeline:
    """The commits in flight behind a runtime's event loop, in order, per thread object.

    Keyed by the `Thread` object the advancing loop holds (not its id): another caller
    working on the same thread (a human action loading it afresh) appends through the
    store, whose write lock and expected-seq checks order it, and never settles a commit
    it did not start. A thread may have several appends in flight when the store queues
    each behind the one before (SQLite, `stores/behind.py`)."""

    def __init__(self) -> None:
        self._flying: dict[int, list[_InFlight]] = {}

    def start(
        self,
        thread: Thread,
        expected: int,
        durable: Awaitable[None],
        then: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """`thread`'s events from `expected` on are written and will be durable once
        `durable` completes; `then` (the observers), if any, runs right after, in a task of
        its own. Without `then`, a future `durable` is itself what `join` waits for: no task
        a turn, where nobody is told."""

        flights = self._flying.setdefault(id(thread), [])
        if then is None and isinstance(durable, asyncio.Future):
            flights.append(_InFlight(thread, expected, durable))
            return
        before = flights[-1].task if flights else None

        async def settle() -> None:
            await durable
            if before is not None and not before.done():  # observers hear them in order
                with contextlib.suppress(BaseException):
                    await asyncio.shield(before)
            if then is not None:
                await then()

        task = asyncio.ensure_future(settle())
        # Retrieved here too: a caller cancelled while waiting never reads it.
        task.add_done_callback(_retrieved)
        flights.append(_InFlight(thread, expected, task))

    def flying(self, thread: Thread) -> bool:
        """Whether a commit of `thread` is in flight (`join` has something to wait for)."""
        return id(thread) in self._flying

    async def join(self, thread: Thread) -> None:
        """Wait until `thread`'s commits in flight, if any, are durable (and observed).

        Raises the first one's error, the thread cut back to before that append (a
        conflict found by the statements of an append queued behind a commit: `Refused`).
        A caller cancelled while waiting leaves the commits to finish on their own (their
        tasks still settle the store's cache and the observers)."""
        for flight in self._flying.pop(id(thread), ()):
            try:
                if flight.task.done():
                    flight.task.result()
                else:
                    await asyncio.shield(flight.task)
            except asyncio.CancelledError:
                if not flight.task.done():
                    raise
                if flight.task.cancelled():  # the commit's own task was cancelled: not durable
                    rollback(flight.thread, flight.expected)
                raise
            except AppendConflict as conflict:
                rollback(flight.thread, flight.expected)
                raise Refused(conflict) from conflict
            except BaseException:
                rollback(flight.thread, flight.expected)
                raise


def _retrieved(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        task.exception()


def as_of(thread: Thread) -> Thread:
    """A copy of `thread` as it is now, for the observers of a commit in flight: the thread
    itself goes on to hold the next turn's events meanwhile. O(events) pointers and the
    state's fields; made only when there are observers."""
    view = Thread(
        thread.id,
        thread.agent,
        metadata=thread.metadata,
        created_at=thread.created_at,
        schema_version=thread.schema_version,
    )
    view.events = thread.events[:]
    view.state = thread.state.copy()
    return view


def rollback(thread: Thread, seq: int) -> None:
    """Drop the events from `seq` on that were extended in memory but never stored, and
    fold the state again (a conflict or an error: rare, so no copy is kept for it)."""
    del thread.events[seq:]
    thread.state = Thread(thread.id, thread.agent, thread.events).state
