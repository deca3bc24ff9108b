"""One thread's last rendering, unit by unit, that the incremental renderer extends
(`incremental.py`): the blocks, their token costs and line counts, the sections' totals,
and the body joined last time, so that an extension appends and pops at the end instead of
rendering and joining the window again."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ..events import Event
from .messages import Assembly, Checkpoint
from .tokens import ApproxCounter, TokenCounter

__all__ = ["Tail", "joins_cleanly"]


def joins_cleanly(block: Any) -> bool:
    """Whether a compact block starts where the pre-tokenizer cuts (a messages-format
    payload is never summed line by line, so it does not)."""
    return isinstance(block, str) and bool(block) and not block[0].isspace() and block[0] != "/"


@dataclass(eq=False)
class Tail:
    """One thread's last rendering at detail level 0 or 1, unit by unit (a unit's block is
    a compact string, or a messages-format tuple of `Message`s)."""

    key: Hashable
    n: int
    first: Event
    last: Event
    level: int = 0
    stable: int = 0  # leading units no appended event can change (`final_unit`)
    units: list[tuple[str, int, bool]] = field(default_factory=list)
    costs: list[int] = field(default_factory=list)
    lines: list[Any] = field(default_factory=list)  # the unit's block, or None
    texts: list[Any] = field(default_factory=list)  # the blocks that are not None
    line_counts: list[int] = field(default_factory=list)  # count(block + "\n"), or 0
    total: int = 0
    counted: int = 0  # sum of line_counts
    additive: bool = True
    # The approximate counter: line_counts are the lines' UTF-8 bytes beyond their length
    # (non-ASCII text), known for the first `measured` lines.
    sized: bool = False
    measured: int = 0
    unclean: int = 0  # blocks that do not start where the pre-tokenizer cuts
    sections: dict[str, int] = field(default_factory=dict)
    # Every event walked since the summary, oldest first, with its verbatim tokens (the
    # errors level 1 drops included), and their sum with the summary's: level 0's total,
    # which must stay over the history budget for level 1 to be the plan.
    ledger: list[tuple[int, int]] = field(default_factory=list)
    verbatim: int = 0
    # (event index, cut) -> (block, tokens) of the events the next extension walks again.
    memo: dict[tuple[int, bool], tuple[Any, int]] = field(default_factory=dict)
    # The messages format: its assembly, resumable from the checkpoint after each of the
    # last few blocks (block count, state), and how many leading blocks it still holds.
    assembly: Assembly | None = None
    marks: list[tuple[int, Checkpoint]] = field(default_factory=list)
    held: int = 0
    # The compact format: the last body (`body`), whose first `joined_len` characters are
    # "\n".join of the first `joined_n` texts (pops since then cut them back).
    joined: str = ""
    joined_n: int = 0
    joined_len: int = 0

    def push(self, unit: tuple[str, int, bool], cost: int, block: Any, section: str) -> None:
        self.units.append(unit)
        self.costs.append(cost)
        self.lines.append(block)
        self.line_counts.append(0)
        self.total += cost
        if block is not None:
            self.texts.append(block)
            self.sections[section] = self.sections.get(section, 0) + cost
            if self.additive:
                self.unclean += not joins_cleanly(block)

    def pop(self, section: str) -> None:
        self.units.pop()
        cost = self.costs.pop()
        block = self.lines.pop()
        self.total -= cost
        if block is not None:
            self.texts.pop()
            self.held = min(self.held, len(self.texts))
            if len(self.texts) < self.joined_n:  # the last body held it: cut it off
                self.joined_n -= 1
                self.joined_len -= len(block) + (self.joined_n > 0)
            self.sections[section] -= cost
            if self.additive:
                self.unclean -= not joins_cleanly(block)
        self.counted -= self.line_counts.pop()
        self.measured = min(self.measured, len(self.lines))

    def body(self) -> str:
        """`"\n".join(self.texts)`, joining only the blocks added since the last body onto
        the part of it that no pop cut off: at a full 16k window the whole join was about
        16 us of a 230 us turn, the most of what turn 1,000 costs over turn 10
        (docs/performance.md, "A warm growth test")."""
        texts, n = self.texts, self.joined_n
        if n == 0:
            body = "\n".join(texts)
        else:
            kept = self.joined
            if self.joined_len != len(kept):
                kept = kept[: self.joined_len]
            body = kept if n == len(texts) else "\n".join([kept, *texts[n:]])
        self.joined, self.joined_n, self.joined_len = body, len(texts), len(body)
        return body

    def body_bytes(self, counter: ApproxCounter, body: str) -> int:
        """The UTF-8 bytes of `body` (the lines joined), measuring only lines added since
        the last call, and none while the body is ASCII (its length is its size then)."""
        if body.isascii():
            self.measured = len(self.lines)  # every line ASCII: no bytes beyond lengths
            return len(body)
        for j in range(self.measured, len(self.lines)):
            line = self.lines[j]
            if line is not None and not line.isascii():
                n = counter.size(line) - len(line)
                self.line_counts[j] = n
                self.counted += n
        self.measured = len(self.lines)
        return len(body) + self.counted

    def body_tokens(self, counter: TokenCounter, lines: list[Any]) -> int | None:
        """`count("\n".join(lines))` from the line counts, or None when it is not a sum."""
        if not self.additive or self.unclean > (0 if joins_cleanly(lines[0]) else 1):
            return None
        j = len(self.lines) - 1
        while self.lines[j] is None:
            j -= 1
        last = lines[-1]
        return self.counted - self.line_counts[j] + counter.count(last)
