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

__all__ = ["AppendStats", "answer"]


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


def answer(future: asyncio.Future[Any], value: Any, ok: bool) -> None:
    """Resolve a queued append's `future`: with `value` if `ok`, else with it as the error;
    nothing if the caller was cancelled meanwhile. On the future's own loop."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
