"""Prompt-cache marks: where a provider's cache of a thread's previous call can be read.

A rendering's last message (the compact body) carries two marks (`Context`):

* `settled_prefix`: the leading blocks no appended event changes at this detail level
  (a summary; events whose block is final, `incremental.final_unit`: at level 1 a result
  already cut, never an event still among the newest `keep_recent` or an error a later
  success could drop). A backend with explicit caching writes a cache entry there as well
  as at the end of the request (Anthropic: `cache_control` on both).
* `cached_prefix`: where this call reads what the thread's latest model call wrote: the
  end of that call's body when this body repeats it whole, else that call's
  `settled_prefix` when this body repeats that far, else 0. Anthropic reads a cache entry
  only at a block boundary where an earlier request wrote one, so the read mark sits at a
  write mark of the previous call, never merely anywhere the bytes agree.

At detail level 0 nothing before the latest call changes, and the read mark is the end of
that call's body. At level 1 a result the latest call was sent whole is cut once it leaves
the newest `keep_recent` events (and an error a later success resolved is dropped), which
moves the first changed byte back into the previous call's body, past its settled prefix:
this call then reads the settled prefix and writes its own.

The read mark is checked, not assumed: `SentBodies` keeps, per thread, the body this
renderer rendered last (the thread's length then, its last event, the body string, its
settled prefix); when the latest model call was made at that length, the new body is
compared with it by `str.startswith` (one `memcmp`). When that fails (a cut), its settled
prefix is repeated by construction if this rendering extends that one (the incremental
path kept every unit before it, `Marks`' third field), else it is compared too (a copy of
the prefix: a full plan, already O(window); a body with a pointer's `…` is UCS-2, whose
slices cost about a cycle a character, so the extension does not slice). A thread this
renderer did not render the latest call of (another process, a fresh renderer, a render
in between that no call followed) gets what the thread alone supports: at level 0 the
blocks of events before the latest call (the caller's `fallback`), else 0. A wrong mark
could only cost a cache miss; these are byte-identical to what the previous call was sent
(tests/context/test_incremental.py and test_prompt_cache.py compare on every render).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import Compacted, Event, ModelCall, Thread, ToolResult
from ..models.base import Message
from .compact import settled_before

__all__ = [
    "Marks",
    "SentBodies",
    "body_marks",
    "cached_prefix",
    "latest_model_call",
    "read_mark",
    "surely_final",
]


def latest_model_call(events: Sequence[Event]) -> int | None:
    """Index of the thread's latest `model_call` (None before the first)."""
    for i in range(len(events) - 1, -1, -1):
        if type(events[i]) is ModelCall:
            return i
    return None


def surely_final(
    events: Sequence[Event], units: Sequence[tuple[str, int, bool]], level: int
) -> int:
    """An event index before which every unit of a level-0 or level-1 layout is final
    (`incremental.final_unit`), found from the end, so a full plan tests only the units
    after it: calls before `settled_before` are settled; at level 1 a unit older than the
    newest unreduced ones is reduced, and an error older than the latest result or human
    input is resolved (dropped, so not a unit). -1 at any other level."""
    if level > 1:
        return -1
    sure = settled_before(events)
    if level == 0:
        return sure
    for kind, i, reduced in reversed(units):
        if kind == "summary" or reduced:
            break
        sure = min(sure, i)
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if type(e) is ToolResult or e.traits.human_input:
            return min(sure, i)
    return 0


def cached_prefix(messages: Sequence[Message], blocks: Sequence[Any], stable: int) -> int:
    """Characters of a compact body (`blocks` joined by newlines) made of its first
    `stable` blocks, those of events before the latest model call, which that call was
    sent verbatim (0 for the messages format). Counted back from the end: O(new blocks)."""
    if stable <= 0 or not messages or not isinstance(blocks[0], str):
        return 0
    after = blocks[stable:]
    return len(messages[-1].content) - sum(map(len, after)) - len(after)


Marks = tuple[int, int, int, int | None] | None
"""A compact body's fallback read mark and settled prefix, in characters; the thread's
length at the rendering whose settled prefix it keeps unit for unit (an extension's
previous rendering; -1 for a full plan); the index of the thread's latest model call.
None for a body that is not text blocks (the messages format)."""


def body_marks(
    messages: Sequence[Message],
    blocks: Sequence[Any],
    fallback: int,
    settled: int,
    latest: int | None,
    kept: int = -1,
) -> Marks:
    """The `Marks` of a body of `blocks`, from the blocks each mark ends after."""
    if not blocks or not isinstance(blocks[0], str):
        return None
    prefix = cached_prefix(messages, blocks, fallback)
    return prefix, cached_prefix(messages, blocks, settled), kept, latest


_Sent = tuple[int, Event, str, int]
"""One rendering of a thread's compact body: the thread's length then, its last event (a
thread of the same id may be another), the body, its settled prefix. A plain tuple: one
is made per render, and a frozen dataclass costs several times as much to build."""


def read_mark(body: str, sent: str, settled: int, kept: bool = False) -> int:
    """Where `body` reads the cache a call sent `sent` wrote (at its end and at `settled`):
    `len(sent)` when `body` repeats `sent` whole, else `settled` when it repeats that far
    (`kept`: known by construction, else compared), else 0."""
    if body.startswith(sent):
        return len(sent)
    if settled > 0 and (kept or body.startswith(sent[:settled])):
        return settled
    return 0


class SentBodies:
    """Per thread (bounded: `maxsize` threads, least recently used out first), the compact
    body this renderer rendered last: the next call's, when a model call follows it.

    One body a thread: when a render is not followed by a call (a display render, a
    model error, a rate-limit wait), the next render finds no body at the latest call's
    length and marks what the thread alone supports (`fallback`) for that one call.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._data: dict[str, _Sent] = {}  # oldest first: each render moves its thread last
        self._maxsize = maxsize

    def mark(self, thread: Thread, messages: tuple[Message, ...], marks: Marks) -> tuple[int, int]:
        """(`cached_prefix`, `settled_prefix`) of a rendering of `thread`, given its `marks`
        (None: not a compact body, no marks); a compact body is remembered as the
        rendering at the thread's length."""
        if marks is None or not messages:
            return 0, 0
        fallback, settled, kept, latest = marks
        body = messages[-1].content
        events = thread.events
        cached = fallback
        sent = self._data.pop(thread.id, None)
        if latest is not None and sent is not None:
            n, last = sent[0], sent[1]
            # The call at `latest` was sent the rendering made at that length, or one
            # event earlier when the `compacted` event it asked for was stored first.
            if (n == latest or (n == latest - 1 and type(events[n]) is Compacted)) and (
                events[n - 1] is last or events[n - 1] == last
            ):
                cached = read_mark(body, sent[2], sent[3], kept == n)
        self._data[thread.id] = (len(events), events[-1], body, settled)
        if len(self._data) > self._maxsize:
            del self._data[next(iter(self._data))]
        return cached, settled
