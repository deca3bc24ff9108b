"""What the two group commits share (`group_commit.py` for SQLite, `postgres_group.py`).

* The counters: `SQLiteStore.stats` (`CommitStats`: write transactions, each an fsync at
  `synchronous=FULL`) and `PostgresStore.stats` (`RoundTrips`: exchanges with the server)
  extend `AppendStats` with what their database charges for; the appends, their groups
  and their waits are the same concept in both, and are counted here.
* `answer`: a queued append's caller gets its value or its error, unless it was cancelled
  meanwhile (then nothing: its future is done).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AppendStats", "CommitStats", "answer"]


@dataclass(slots=True)
class AppendStats:
    """Appends a store ran and how they were grouped; read by bench/ and the tests.

    A group is one transaction holding the appends of two threads or more; which appends
    `waits` covers (every append, or only grouped ones) is the store's to say.
    """

    appends: int = 0
    """Appends run (grouped or not)."""
    groups: int = 0
    """Groups run: transactions holding appends of two threads or more, committed or not."""
    grouped: int = 0
    """Appends that ran in a group."""
    group_seconds: float = 0.0
    """Seconds spent running groups (BEGIN to COMMIT returning), in all."""
    longest_wait: float = 0.0
    """Seconds from an append's arrival in the store to its answer, at most."""
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    """The waits (arrival to answer, seconds) of the latest appends."""

    def waited(self, *seconds: float) -> None:
        """Appends were answered `seconds` after they arrived."""
        self.waits.extend(seconds)
        longest = max(seconds, default=0.0)
        if longest > self.longest_wait:
            self.longest_wait = longest


@dataclass(slots=True)
class CommitStats(AppendStats):
    """What a store committed: `commits` write transactions (each one fsync of the WAL at
    `synchronous=FULL`; a checkpoint adds its own now and then), holding `appends` appends.
    `groups` of the transactions were run by the group committer, and `grouped` appends
    shared their transaction with another thread's append. `waits` and `longest_wait` are
    the grouped appends' only (arrival to their group's COMMIT returning)."""

    commits: int = 0
    commit_seconds: float = 0.0
    """Of `group_seconds`, the seconds spent in their COMMIT statements (the fsync)."""
    longest_group: float = 0.0
    """Seconds of the longest group transaction (BEGIN to COMMIT)."""
    behind: int = 0
    """Appends committed behind the event loop (`SQLiteStore.run_behind`: pipelining),
    counted in `commits` and `appends` too."""
    queued: int = 0
    """Of `behind`, the appends that shared their `COMMIT` with an earlier append of their
    thread, queued behind a `COMMIT` in flight (`stores/behind.py`): the fsyncs saved."""
    behind_seconds: float = 0.0
    """Seconds the `COMMIT`s of those appends took, on their own thread."""
    longest_overrun: float = 0.0
    """Seconds a group began after it could have, at most: after the later of its oldest
    append's arrival plus the window and the COMMIT of the group ahead (when that append
    arrived before it). What a grouped append waited beyond the rest of the group ahead,
    the window and its own transaction."""
    longest_lock: float = 0.0
    """Seconds a group's `BEGIN IMMEDIATE` took at most: a wait for another writer's lock
    (this store's `COMMIT` behind the loop, another process), on the committer's thread
    (`WriteLock.begin`)."""
    over_interval: int = 0
    """Appends the committer ran that waited longer than one commit interval of their own:
    the window plus their group's transaction once it held the write lock (`BEGIN
    IMMEDIATE` returned to `COMMIT` returned). Waiting for the group ahead, for the lock or
    for a late committer counts against it."""
    longest_in_intervals: float = 0.0
    """The longest wait of such an append as a multiple of that interval of its own."""


def answer(future: asyncio.Future[Any], value: Any, ok: bool) -> None:
    """Resolve a queued append's `future`: with `value` if `ok`, else with it as the error;
    nothing if the caller was cancelled meanwhile. On the future's own loop."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
