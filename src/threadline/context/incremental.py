"""Incremental rendering: a thread's next rendering, extended from its previous one.

Between compactions the rendering of a thread only grows at its end, at either detail level
the planner reaches without compacting: level 0 (the latest stored summary, then every later
event verbatim) and level 1 (the same with the newest `keep_recent` shown events verbatim,
older results cut to `max_result_tokens` and resolved errors dropped). `Tails` keeps, per
thread (bounded, least recently used out first), that rendering's layout units, each unit's
planned tokens and block, running sums per section, level 0's total (a ledger of every
event's verbatim tokens), and the exact token count of every line of the body.

The cut point moves only forward: a result older than the newest `keep_recent` shown events
is cut for good (later events only push it further back), and an error a later success
resolved stays dropped. So every unit before the first one an appended event may still
change (`final_unit`: a call whose outcome may yet arrive right after it; at level 1 an event
still shown verbatim, or an error nothing resolved yet) is byte-identical from render to
render and is never looked at again. The next render walks again only from that unit to the
end, newest first as the planner does, so it costs O(new events + keep_recent); whether the
level still holds is two running sums against the history budget (level 1's total under it,
level 0's over it), not a walk of the thread.

Both built-in formats extend. The compact body is the blocks joined by newlines; the
`messages` format's assembly (it moves a call's results next to it and merges an
answer's calls, across events) is a fold, `messages.Assembly`, resumed from the
checkpoint after the last unchanged block and weighing each message as it is emitted, so
an extension assembles and counts only the new payloads.

Anything else falls back to the full plan (`budget.plan_layout`), which seeds the next
extension when it comes out at level 0 or 1: a new `compacted` event, retrieved or
pre-fetched material, another budget, format or prompt, a format of the user's own, or a
change of level (level 0 outgrows the history budget, or level 1 does and the full plan
compacts: its summary starts the next run of extensions).

Exact counts. The request is counted exactly on both paths. For the BPE encodings whose
pre-tokenizer never joins a newline to the character after it when that character is
neither whitespace nor `/` (`o200k_base`, `cl100k_base`), `count("\\n".join(lines))` is the
sum of `count(line + "\\n")` over every line but the last, plus `count(last)`; compact blocks
start with `<`, so the count of the body is a running sum (a line that starts otherwise
makes the body be counted whole). The approximate counter's count is a function of the
text's UTF-8 bytes: an ASCII body's length, else that plus each line's bytes beyond its
length, kept per line as lines are added (encoding the whole body at every call was most of
a level-1 render, whose cut results hold a non-ASCII `…`). Other counters count the joined
body. The messages format's count is a sum over messages (`base.message_tokens`), kept by
the assembly.

Invariant: an extension equals the full path's rendering of the same thread, byte for byte
(tests/context/test_incremental.py compares them over the 200 recorded airline runs and
random event sequences).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from ..events import Compacted, Event, Thread, ToolCall, ToolResult
from ..models.base import Context, Message
from .base import ContextFormat, Rendered, message_tokens
from .budget import ContextBudget, Layout
from .compact import CompactFormat, call_settled
from .messages import Assembly, MessagesFormat
from .prompt_cache import Marks, latest_model_call
from .tail import Tail
from .tokens import ApproxCounter, BPECounter, TokenCounter

__all__ = ["LINE_ADDITIVE", "Bound", "RenderPass", "Tails", "final_unit", "line_additive"]

LINE_ADDITIVE = frozenset({"o200k_base", "cl100k_base"})
"""Encodings whose count of newline-joined lines is the sum of the lines' counts (above)."""


def line_additive(counter: TokenCounter) -> bool:
    """Whether `counter` counts newline-joined compact blocks as a sum (module docstring)."""
    return isinstance(counter, BPECounter) and counter.name in LINE_ADDITIVE


class Bound(Protocol):
    """The counter and budget a renderer holds for the model that answers."""

    counter: TokenCounter
    budget: ContextBudget


class RenderPass(Protocol):
    """One rendering of one thread, as the incremental path reads it (the renderer's pass
    is one); declared here so this module sits below the renderer that uses it."""

    thread: Thread
    form: ContextFormat
    system: str
    prompt: tuple[str | None, str | None, str]
    sys_tokens: int
    tools_tokens: int
    fixed: int
    retrieved: list[int]
    limit: int

    @property
    def r(self) -> Bound: ...

    def share(self, budget: ContextBudget) -> ContextBudget: ...

    def payload(
        self, i: int, reduced: bool, budget: ContextBudget, limit: int | None = None
    ) -> tuple[Any, int]: ...

    def context(
        self,
        messages: tuple[Message, ...],
        budget: ContextBudget,
        exact: int,
        marks: Marks,
    ) -> Context: ...


def _section(render: RenderPass, unit: tuple[str, int, bool]) -> str:
    kind, i, _ = unit
    if kind == "summary":
        return "summary"
    event_kind = render.thread.events[i].kind
    name = _SECTIONS.get(event_kind)
    if name is None:
        name = _SECTIONS[event_kind] = f"history:{event_kind}"
    return name


_SECTIONS: dict[str, str] = {}
"""`history:<kind>` per event kind, spelled once (a closed set of kinds)."""


def _compacts(events: Sequence[Event], start: int) -> bool:
    """Whether a `compacted` event is among `events[start:]` (a loop, not `any()` of a
    generator: this runs on every render)."""
    for k in range(start, len(events)):  # noqa: SIM110
        if type(events[k]) is Compacted:
            return True
    return False


def final_unit(events: Sequence[Event], unit: tuple[str, int, bool], level: int) -> bool:
    """Whether no appended event can change `unit` of a level-`level` layout: a summary;
    an event whose block is settled and that is already cut at level 1 (newer events only
    push older ones out of `keep_recent`), unless it is an error a later success could
    still drop from view."""
    kind, i, reduced = unit
    if kind == "summary":
        return True
    e = events[i]
    if type(e) is ToolCall and not call_settled(events, i):
        return False  # its block changes when its outcome arrives right after it
    return level == 0 or (reduced and not e.traits.error)


class Tails:
    """Per-thread state of the incremental path (bounded: `maxsize` threads)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._data: OrderedDict[str, Tail] = OrderedDict()
        self._maxsize = maxsize
        self.extended = 0

    def _key(self, render: RenderPass) -> Hashable | None:
        """What must not change between two renders for an extension to hold."""
        if render.retrieved or type(render.form) not in (CompactFormat, MessagesFormat):
            return None
        budget = render.share(render.r.budget)
        return (
            render.form.name,
            render.r.counter.name,
            budget,
            render.system,
            render.fixed,
            render.prompt,
        )

    def seed(self, render: RenderPass, rendered: Rendered) -> None:
        """Keep a full-path rendering that later renders may extend (detail level 0 or 1,
        not compacting anew): walked again the way an extension walks, and kept only when
        that walk lays the units out as the full plan did."""
        thread = render.thread
        self._data.pop(thread.id, None)
        layout = rendered.layout
        key = self._key(render)
        if key is None or layout.level > 1 or layout.compact is not None or not len(thread):
            return
        events = thread.events
        tail = Tail(key, len(events), events[0], events[-1], layout.level)
        compact = type(render.form) is CompactFormat
        tail.sized = compact and isinstance(render.r.counter, ApproxCounter)
        tail.additive = compact and line_additive(render.r.counter)
        budget = render.share(render.r.budget)
        start = 0
        if layout.units and layout.units[0][0] == "summary":
            self._add(render, tail, layout.units[0], budget)
            tail.verbatim = tail.total
            tail.stable = 1
            start = _summary_args(render, layout.units[0][1])[1] + 1
        if not self._walk(render, tail, start, budget) or tuple(tail.units) != layout.units:
            return
        self._count_lines(render, tail, 0)
        self._data[thread.id] = tail
        while len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    def extend(self, render: RenderPass) -> Rendered | None:
        """The rendering of `render.thread` extended from its tail, or None (full path)."""
        thread = render.thread
        tail = self._data.get(thread.id)
        if tail is None:
            return None
        events = thread.events
        n = len(events)
        if (
            n < tail.n
            or self._key(render) != tail.key
            or (events[tail.n - 1] is not tail.last and events[tail.n - 1] != tail.last)
            or (events[0] is not tail.first and events[0] != tail.first)
            or _compacts(events, tail.n)
        ):
            del self._data[thread.id]
            return None
        self._data.move_to_end(thread.id)
        budget = render.share(render.r.budget)
        kept = tail.stable
        if not self._walk(render, tail, self._rewind(render, tail), budget):
            del self._data[thread.id]
            return None
        self._count_lines(render, tail, kept)
        kept, tail.n, tail.last = tail.n, n, events[-1]
        avail = budget.available(render.fixed)
        if avail <= 0 or tail.total > avail or (tail.level == 1 and tail.verbatim <= avail):
            # The plan's level changed (level 0 no longer fits, or it fits again), or it
            # must compact: the full plan decides, and seeds the next extensions.
            del self._data[thread.id]
            return None
        rendered = self._rendered(render, tail, budget, avail, kept)
        if rendered is None:
            del self._data[thread.id]
        else:
            self.extended += 1
        return rendered

    def _rewind(self, render: RenderPass, tail: Tail) -> int:
        """Drop the units an appended event may change (from the first that is not
        `final_unit`) and their ledger; the index of the first event to walk again."""
        start = tail.units[tail.stable][1] if tail.stable < len(tail.units) else tail.n
        while len(tail.units) > tail.stable:
            tail.pop(_section(render, tail.units[-1]))
        while tail.ledger and tail.ledger[-1][0] >= start:
            tail.verbatim -= tail.ledger.pop()[1]
        return start

    def _walk(self, render: RenderPass, tail: Tail, start: int, budget: ContextBudget) -> bool:
        """Lay out `events[start:]` after the tail's units as `budget._fit` does at the
        tail's level (newest first: the newest `keep_recent` shown events verbatim, older
        results cut and resolved errors dropped at level 1). False when the walk does not
        join the units before it (they were cut, so `keep_recent` must be reached). Level 0
        is `_walk_verbatim`."""
        if tail.level == 0:
            self._walk_verbatim(render, tail, start, budget)
            return True
        events = render.thread.events
        keep = budget.keep_recent
        walked: list[tuple[int, bool, Any, int, int]] = []  # newest first
        memo, seen = tail.memo, {}

        def payload(i: int, reduced: bool) -> tuple[Any, int]:
            # At level 1, the blocks of the events walked last time, unless an appended
            # event may have changed them (see `_remember`); else the renderer's cache.
            key = (i, reduced and type(events[i]) is ToolResult)
            hit = memo.get(key)
            if hit is None:
                block, cost = render.payload(i, reduced, budget)
                hit = (block, int(cost))
            seen[key] = hit
            return hit

        shown = 0
        resolved = False
        for i in range(len(events) - 1, start - 1, -1):
            e = events[i]
            kind = type(e)  # not `isinstance`: see `compact._block`
            if kind is Compacted:
                continue
            traits = e.traits
            reduced = shown >= keep
            if traits.human_input or kind is ToolResult:
                resolved = True
            elif reduced and traits.error and resolved:
                walked.append((i, True, _DROPPED, 0, payload(i, False)[1]))
                continue
            block, cost = payload(i, reduced)
            plain = payload(i, False)[1] if reduced else cost
            if cost:
                shown += 1
            walked.append((i, reduced, block, cost, plain))
        if shown < keep and any(u[0] == "event" for u in tail.units):
            return False
        final = tail.stable == len(tail.units)
        for i, reduced, block, cost, plain in reversed(walked):
            final = _place(render, tail, (i, reduced, block, cost, plain), final)
        _remember(tail, events, seen)
        return True

    def _walk_verbatim(
        self, render: RenderPass, tail: Tail, start: int, budget: ContextBudget
    ) -> None:
        """`_walk` at level 0: every event verbatim, so nothing depends on what is newer
        and the events are laid out in one pass, oldest first."""
        events = render.thread.events
        payload = render.payload
        final = tail.stable == len(tail.units)
        for i in range(start, len(events)):
            if type(events[i]) is Compacted:
                continue
            block, cost = payload(i, False, budget)
            cost = int(cost)
            final = _place(render, tail, (i, False, block, cost, cost), final)

    def _add(
        self, render: RenderPass, tail: Tail, unit: tuple[str, int, bool], budget: ContextBudget
    ) -> None:
        kind, i, reduced = unit
        if kind == "summary":
            block = render.form.summary(*_summary_args(render, i))
            cost = render.form.tokens(block, render.r.counter)
        else:
            block, cost = render.payload(i, reduced, budget)
        tail.push(unit, int(cost), block, _section(render, unit))

    def _count_lines(self, render: RenderPass, tail: Tail, start: int) -> None:
        if not tail.additive:
            return
        count = render.r.counter.count
        for j in range(start, len(tail.lines)):
            line = tail.lines[j]
            if line is not None:
                n = count(line + "\n")
                tail.line_counts[j] = n
                tail.counted += n

    def _rendered(
        self, render: RenderPass, tail: Tail, budget: ContextBudget, avail: int, kept: int
    ) -> Rendered | None:
        """The extension's rendering; `kept`: the thread's length at the rendering it
        extends, whose settled prefix it keeps unit for unit (`prompt_cache`)."""
        lines = tail.texts
        messages, body_tokens = _body(render, tail, lines)
        exact = render.fixed + body_tokens
        if exact > render.limit:
            return None
        layout = Layout(
            tuple(tail.units),
            (),
            False,
            None,
            tail.level,
            tail.total,
            retrieved_cap=int(avail * budget.retrieved_share),
        )
        native = render.form.native_tools
        sections = {
            "system": render.sys_tokens - (0 if native else render.tools_tokens),
            "tools": render.tools_tokens,
            "retrieved": 0,
            "summary": 0,
            **{k: v for k, v in tail.sections.items() if v or k == "summary"},
        }
        marks = _marks(render, tail, messages, lines, kept)
        context = render.context(messages, budget, exact, marks)
        return Rendered(context, layout, sections, None)


def _place(
    render: RenderPass, tail: Tail, walked: tuple[int, bool, Any, int, int], final: bool
) -> bool:
    """Lay out one walked event after the tail's units: its ledger entry (`plain`: its
    verbatim tokens), and its unit unless level 1 drops it. Returns whether every unit so
    far is `final_unit` (`final`: every one before it was)."""
    i, reduced, block, cost, plain = walked
    tail.ledger.append((i, plain))
    tail.verbatim += plain
    if block is _DROPPED:
        return final
    unit = ("event", i, reduced)
    tail.push(unit, cost, block, _section(render, unit))
    if final and final_unit(render.thread.events, unit, tail.level):
        tail.stable = len(tail.units)
        return True
    return False


def _remember(
    tail: Tail, events: Sequence[Event], seen: dict[tuple[int, bool], tuple[Any, int]]
) -> None:
    """Keep the blocks the next extension walks again (from the first unit that is not
    final), but not a call's whose outcome may still change it."""
    start = tail.units[tail.stable][1] if tail.stable < len(tail.units) else len(events)
    tail.memo = {
        key: hit
        for key, hit in seen.items()
        if key[0] >= start
        and (type(events[key[0]]) is not ToolCall or call_settled(events, key[0]))
    }


_DROPPED = object()
"""A walked error that level 1 drops from view (it has a ledger entry, no unit)."""


def _body(render: RenderPass, tail: Tail, lines: list[Any]) -> tuple[tuple[Message, ...], int]:
    """The messages of the extended rendering and their exact tokens (as the full path's
    `message_tokens`)."""
    counter = render.r.counter
    if type(render.form) is not CompactFormat:
        # The messages format: its assembly moves results next to their calls across
        # events, so the payloads are assembled whole (a walk over the window's messages,
        # no rendering or planning) and the request is counted as the full path counts it.
        return _assembled(tail, lines, counter)
    # `CompactFormat.assemble`, joining the list directly (its blocks are not empty).
    body = tail.body()
    if not lines:
        return (), 0
    if tail.sized and isinstance(counter, ApproxCounter):
        return (Message("user", body),), 4 + counter.tokens_for(tail.body_bytes(counter, body))
    summed = tail.body_tokens(counter, lines)
    return (Message("user", body),), 4 + (counter.count(body) if summed is None else summed)


_MARKS = 32
"""Checkpoints kept: an extension walks again only the units an appended event may change
(a call waiting for its outcome; at level 1 the newest `keep_recent` shown events), so it
resumes from one of the last few (else the assembly starts over)."""


def _assembled(
    tail: Tail, lines: list[Any], counter: TokenCounter
) -> tuple[tuple[Message, ...], int]:
    """The messages format's assembly of `lines` and its exact tokens, resumed from the
    last checkpoint whose blocks are unchanged: O(new blocks), not O(window)."""
    while tail.marks and tail.marks[-1][0] > tail.held:
        tail.marks.pop()
    if tail.assembly is None or not tail.marks:
        tail.assembly = Assembly(lambda m: message_tokens((m,), counter))
        tail.marks = [(0, tail.assembly.checkpoint())]
    assembly = tail.assembly
    done, state = tail.marks[-1]
    assembly.restore(state)
    for k in range(done, len(lines)):
        assembly.add(lines[k])
        tail.marks.append((k + 1, assembly.checkpoint()))
    del tail.marks[:-_MARKS]
    tail.held = len(lines)
    return assembly.weighed()


def _summary_args(render: RenderPass, i: int) -> tuple[int, int, str]:
    c = render.thread.events[i]
    if not isinstance(c, Compacted):
        raise TypeError(f"event {i} is not a compacted event")
    return c.from_seq, c.to_seq, c.summary


def _marks(
    render: RenderPass, tail: Tail, messages: tuple[Message, ...], lines: list[Any], kept: int
) -> Marks:
    """The extended body's `Marks` (`prompt_cache`), in characters counted back from the end
    (plain loops: this runs on every render): the settled prefix is the tail's `stable`
    units, the fallback the lines of events before the latest model call (`_prefix`)."""
    if not lines or not isinstance(lines[0], str):
        return None
    total = len(messages[-1].content)
    settled = total
    for j in range(len(tail.lines) - 1, tail.stable - 1, -1):
        line = tail.lines[j]
        if line is not None:
            settled -= len(line) + 1
    latest = latest_model_call(render.thread.events)
    return _prefix(tail, total, latest), max(settled, 0), kept, latest


def _prefix(tail: Tail, total: int, latest: int | None) -> int:
    """The fallback read mark of an extended body of `total` characters: the lines of events
    before the latest model call, at `latest` (`prompt_cache`), found from the end. 0 at
    level 1: a block before that call may have changed since it was sent (a result cut once
    it left `keep_recent`, an error a later success dropped)."""
    if latest is None or tail.level != 0:
        return 0
    chars = total
    for (kind, i, _), line in zip(reversed(tail.units), reversed(tail.lines), strict=True):
        if kind == "summary" or i < latest:
            break
        if line is not None:
            chars -= len(line) + 1
    return max(chars, 0)
