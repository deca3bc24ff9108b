"""When an event loop is likely to look at its queued group commit again (`group_commit.py`).

A group is committed on the event loop by whatever runs there first once it is due; the
loop looks between steps (an append, a store call, a turn's beginning). For an append never
to wait longer than the window and its own transaction, a group must be committed at the
last look before its window ends, so each look estimates the time to the next one:

* as TCP estimates a retransmission timeout (RFC 6298): the smoothed gap between two looks
  plus four times their smoothed deviation;
* or the longest gap seen while this group or the one before it waited, if longer, and
  those of earlier groups fading by `LONGEST_KEPT` a group: the looks of 64 threads come
  4-100 us apart and, every few dozen, one 250-600 us late, which the smoothed estimate
  forgets within a dozen looks (docs/performance.md, "The group that came late"), and a
  stall forgotten after two groups came back later (the eighth session's status there);
* or, when a garbage collection is likely before the next look, the gap the last one of
  its generation took (`Collections`): every group that still came late had one in its
  last gap;
* at most half the window.

A collection of generation 1 is not left to fall inside a group's window at all: with 64
threads it takes 2-5 ms, more than half the window, and every group that still came late in
a normal round had one in its last gap (docs/performance.md, "A collection between groups").
Right after a group is committed on the loop, with none queued, `Collections.collect_now`
runs it if it is the interpreter's next and at least half due: the same collection, a
little early, where no append waits for it.

Written here: no library estimates an event loop's next turn.
"""

from __future__ import annotations

import gc

__all__ = ["COLLECTION_KEPT", "LONGEST_KEPT", "Collections", "Looks"]


class Looks:
    """The gaps between one group committer's looks at its queued groups."""

    __slots__ = ("_checked", "_gap", "_longest", "_longest_before", "_spread", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._checked = 0.0  # when a loop last looked whether its group was due
        self._gap = 0.0  # the seconds between two such looks, smoothed
        self._spread = 0.0  # how far a gap strays from `_gap`, smoothed
        self._longest = 0.0  # the longest gap while the queued group waits
        self._longest_before = 0.0  # the same, while earlier groups waited (fading)

    def look(self, now: float, *, first: bool = False) -> float:
        """A look at `now`: the time to the next one, estimated. `first`: the group's first
        look, whose gap (the time since the last group's last look: that group's `COMMIT`,
        or idle time) is not counted among the longest."""
        gap, self._checked = now - self._checked, now
        gap = min(gap, self.window / 2)
        self._spread += (abs(gap - self._gap) - self._spread) / 4
        self._gap += (gap - self._gap) / 8
        if not first:
            self._longest = max(self._longest, gap)
        return min(max(self.margin(), COLLECTIONS.look(gap)), self.window / 2)

    def margin(self) -> float:
        """The time to the next look from the gaps alone (no collection foreseen)."""
        longest = max(self._longest, self._longest_before)
        return min(max(self._gap + 4 * self._spread, longest), self.window / 2)

    def next_group(self) -> None:
        """The queued group is gone (committed, handed over or withdrawn)."""
        kept = self._longest_before * LONGEST_KEPT
        self._longest_before, self._longest = max(self._longest, kept), 0.0


class Collections:
    """Whether the interpreter's next garbage collection is likely to fall before the
    event loop's next look, and how long a gap between two looks that held one lasted
    (generation 0: about 200 us on the loop's thread with 64 threads, generation 1: 450 us,
    against steps of 4-100 us).

    Read from `gc.get_count()` at each look, no `gc.callbacks` hook (that would cost every
    collection of the process): a collection of generation 0 adds one to the second count
    (one of an older generation resets it, or moves the third); the next one comes once the
    first count passes its threshold, and is of generation 1 once the second count has
    reached its own. One for the process (`COLLECTIONS`): the collector is the process's,
    so a new store starts knowing what a collection costs."""

    __slots__ = ("_allocated", "_counts", "_older", "_young")

    def __init__(self) -> None:
        self._counts = gc.get_count()
        self._allocated = 0.0  # tracked objects allocated between two looks, smoothed
        self._young = 0.0  # the longest gap that held a collection of generation 0
        self._older = 0.0  # ... of generation 1 or 2

    def collect_now(self) -> bool:
        """Between groups (one just committed, none queued): run the interpreter's next
        collection now if it is of generation 1 and at least half due (its young count half
        way to the threshold); whether it ran. Nothing if the collector is off, or if the
        next one may be a full collection (left to the interpreter's own rule). Only pulled
        forward by less than one young collection's allocations, the collections' rate
        unchanged; its gap is not counted as a look's (`look`)."""
        if not gc.isenabled():
            return False
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[1] < thresholds[1] or counts[2] >= thresholds[2]:
            return False
        if 2 * counts[0] < thresholds[0]:
            return False
        gc.collect(1)
        self._counts = gc.get_count()
        return True

    def look(self, gap: float) -> float:
        """A look, `gap` seconds after the one before: the time the next gap needs if a
        collection is likely in it (the longest gap that held one of that generation,
        forgotten slowly: `COLLECTION_KEPT`), else 0."""
        counts = gc.get_count()
        before, self._counts = self._counts, counts
        if counts[1] > before[1]:  # generation 0 was collected in this gap
            self._young = max(gap, self._young * COLLECTION_KEPT)
        elif counts[1] < before[1] or counts[2] != before[2]:  # an older generation
            self._older = max(gap, self._older * COLLECTION_KEPT)
        else:
            self._allocated += (max(counts[0] - before[0], 0) - self._allocated) / 8
        thresholds = gc.get_threshold()
        if counts[0] + 2 * self._allocated < thresholds[0]:
            return 0.0
        return self._older if counts[1] >= thresholds[1] else self._young


COLLECTION_KEPT = 0.9
"""The share of the longest gap that held a collection kept at each later collection."""
LONGEST_KEPT = 0.9
"""The share of the longest gap seen while earlier groups waited kept at each later group."""
COLLECTIONS = Collections()
