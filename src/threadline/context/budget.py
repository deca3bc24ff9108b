"""The token budget of one model call, and the plan that fits a thread into it.

    window = fixed (system prompt + tool definitions + framing) + output reservation
             + retrieved (pre-fetched material, at most `retrieved_share` of the rest)
             + history  (everything else)

When the history does not fit, the planner tries, in order, until it does:

1. every event verbatim;
2. the newest `keep_recent` events verbatim, older ones *reduced*: errors that were already
   resolved (a later tool result or human input reset the error count) are dropped and tool
   results over `max_result_tokens` are cut, ending with
   `[truncated: full result in event N]` so nothing is lost, only moved out of view;
3. the oldest span summarised into one `compacted` summary (room for it is reserved up
   front), cutting the kept history to `compact_to` of its budget so that the next few
   steps fit without compacting again; the rest is laid out as in 1 or 2.

Retrieved material (pre-fetched results, and the search results of an agent's retriever
since the latest user message) never takes more than its share: over it, the larger
results are cut to the level that fills the share (`Layout.retrieved_limit`), each ending
with the pointer to the full event. The share is
static, or moved per call by `dynamic_share`.

If even the newest event cannot fit next to the fixed parts and the summary, the planner
raises `TokenBudgetError`: the runtime records `token_budget_exceeded` and escalates. A
prompt is never silently cut and a provider never sees an oversize request.

The planner walks the thread from its newest event backwards and stops as soon as the
budget is spent, reading per-event token counts from a cache, so its cost depends on the
size of the window, not the length of the thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TokenBudgetError
from ..events import Compacted, ToolResult

if TYPE_CHECKING:
    from ..events import Event

__all__ = ["DEFAULT_WINDOW", "ContextBudget", "Layout", "dynamic_share", "plan_layout"]


DEFAULT_WINDOW = 32_000
"""The window assumed for a model that declares none (set `context_window` instead)."""


@dataclass(frozen=True, slots=True)
class ContextBudget:
    """How the model's window is shared out. Set per agent through `ContextSettings`.

    Attributes:
        window: the model's context window in tokens (`ContextSettings.context_window`).
        max_output_tokens: reserved for the answer (`ContextSettings.max_output_tokens`).
        retrieved_share: at most this share of what is left after the fixed parts goes to
            retrieved / pre-fetched material; whatever it does not use goes to history.
        keep_recent: the newest events that stay verbatim while older ones are reduced.
        max_result_tokens: tool results larger than this are cut when reducing.
        summary_tokens: room reserved for the compaction summary.
        compact_to: when compacting, the kept history is cut to this share of its budget,
            so the following steps fit without compacting again at every call.
        margin: tokens kept free for tokenizer boundary effects and message framing.
    """

    window: int = DEFAULT_WINDOW
    max_output_tokens: int = 1024
    retrieved_share: float = 0.25
    keep_recent: int = 6
    max_result_tokens: int = 800
    summary_tokens: int = 600
    compact_to: float = 0.75
    margin: int = 32

    def __post_init__(self) -> None:
        if self.window <= 0 or self.max_output_tokens <= 0:
            raise ConfigError("context_window and max_output_tokens must be positive")
        if not 0.0 <= self.retrieved_share < 1.0:
            raise ConfigError("retrieved_share must be in [0, 1)")
        if not 0.1 <= self.compact_to <= 1.0:
            raise ConfigError("compact_to must be in [0.1, 1]")
        if self.keep_recent < 1 or self.max_result_tokens < 16 or self.summary_tokens < 16:
            raise ConfigError("keep_recent >= 1, max_result_tokens >= 16, summary_tokens >= 16")

    @classmethod
    def sized(cls, window: int, opts: Mapping[str, Any] | None = None) -> ContextBudget:
        """A budget for `window`: explicit `opts` win; the output reservation, result cut
        and summary room default to a share of small windows (a 2k-token local model
        cannot spare 1,024 tokens for output or 800 for one tool result)."""
        opts = opts or {}
        fields: dict[str, Any] = {
            "window": window,
            "max_output_tokens": min(1024, max(64, window // 4)),
            "max_result_tokens": min(800, max(32, window // 10)),
            "summary_tokens": min(600, max(32, window // 10)),
        }
        for name in (
            "max_output_tokens",
            "keep_recent",
            "max_result_tokens",
            "summary_tokens",
            "margin",
        ):
            if name in opts:
                fields[name] = int(opts[name])
        for name in ("retrieved_share", "compact_to"):
            if name in opts:
                fields[name] = float(opts[name])
        return cls(**fields)

    def available(self, fixed: int) -> int:
        """Tokens left for retrieved material and history after the fixed parts."""
        return self.window - self.max_output_tokens - self.margin - fixed


@dataclass(slots=True)
class Layout:
    """Which events a context shows and how (made once a render and not changed after:
    not a frozen dataclass, whose constructor sets each field through `object.__setattr__`,
    4x the cost).

    Attributes:
        units: oldest first; `("event", i, reduced)` for `events[i]`, `("summary", i, False)`
            for the summary of compacted event `events[i]` (or `i == -1` for the virtual
            summary of `compact`).
        retrieved: indexes of retrieved events, shown before the history.
        retrieved_reduced: whether retrieved results are cut to fit their share.
        compact: `(from_seq, to_seq)` the planner wants summarised and is not yet (None when
            the thread fits without a new compaction).
        level: 0 verbatim, 1 reduced, 2 compacted.
        tokens: planned tokens of retrieved material plus history.
        retrieved_cap: the tokens the retrieval share allows in this call.
        retrieved_limit: when set, each retrieved result is cut to this many tokens (cutting
            to `max_result_tokens` was not enough to fit the share).
    """

    units: tuple[tuple[str, int, bool], ...]
    retrieved: tuple[int, ...]
    retrieved_reduced: bool
    compact: tuple[int, int] | None
    level: int
    tokens: int
    retrieved_cap: int = 0
    retrieved_limit: int | None = None


def dynamic_share(share: float, model_calls: int, relevance: float) -> float:
    """The retrieval share for one call under the `dynamic` split.

    More history as the conversation grows: each model call already made moves 5% of the
    share to history, down to half of it. More retrieval when the best hit is relevant: the
    share is scaled by `0.5 + relevance` (relevance in [0, 1]: half the share for a miss, one
    and a half for a hit both rankers put first). The result stays in [0.05, 0.9].
    """
    growth = max(0.5, 1.0 - 0.05 * max(0, model_calls))
    scaled = share * growth * (0.5 + min(1.0, max(0.0, relevance)))
    return round(min(0.9, max(0.05, scaled)), 4)


TokenFn = Callable[[int, bool], int]
"""`tokens(i, reduced)` for `events[i]` (0 for events that render nothing)."""


def _walk(
    events: Sequence[Event], skip: frozenset[int], virtual: tuple[int, int] | None
) -> Iterator[tuple[str, int]]:
    """Units newest first, hiding ranges covered by compactions (persisted or virtual)."""
    covered: list[tuple[int, int, int]] = []  # (from, to, compacted index)
    if virtual is not None:
        covered.append((virtual[0], virtual[1], -1))
    i = len(events) - 1
    while i >= 0:
        hit = next((c for c in covered if c[0] <= i <= c[1]), None) if covered else None
        if hit is not None:
            yield ("summary", hit[2])
            covered = [c for c in covered if c[0] < hit[0]]
            i = hit[0] - 1
            continue
        event = events[i]
        # Exact types: event classes have no subclasses, and a failing `isinstance` goes
        # through pydantic's ABC metaclass (~1,100 instructions, per event walked).
        if type(event) is Compacted:
            if event.to_seq < i:
                covered.append((event.from_seq, event.to_seq, i))
                covered.sort(key=lambda x: -x[1])
            i -= 1
            continue
        if i not in skip:
            yield ("event", i)
        i -= 1


_Unit = tuple[str, int, bool]
"""A layout unit: ("event" or "summary", event index, reduced)."""


def _fit(
    events: Sequence[Event],
    skip: frozenset[int],
    virtual: tuple[int, int] | None,
    tokens: TokenFn,
    summary_tokens: Callable[[int], int],
    budget: int,
    keep_recent: int,
    reduce: bool,
) -> tuple[list[tuple[str, int, bool]], int, int | None]:
    """Walk newest first. Returns (units newest first, tokens, index of the first unit that
    did not fit or None when everything fit)."""
    units: list[tuple[str, int, bool]] = []
    total = 0
    shown = 0
    resolved = False
    for kind, i in _walk(events, skip, virtual):
        if kind == "summary":
            cost = summary_tokens(i)
            reduced = False
        else:
            event = events[i]
            traits = event.traits
            reduced = reduce and shown >= keep_recent
            if traits.human_input or type(event) is ToolResult:
                resolved = True  # a success or a person's input resolves earlier errors
            elif reduced and traits.error and resolved:
                continue  # an error a later success resolved: dropped from view
            cost = tokens(i, reduced)
        if total + cost > budget:
            return units, total, i if kind == "event" else _summary_end(events, i, virtual)
        total += cost
        if cost:
            shown += 1
        units.append((kind, i, reduced))
    return units, total, None


def _summary_end(events: Sequence[Event], index: int, virtual: tuple[int, int] | None) -> int:
    if index == -1 and virtual is not None:
        return virtual[1]
    c: Compacted = events[index]  # type: ignore[assignment]
    return c.to_seq


def plan_layout(
    events: Sequence[Event],
    *,
    budget: ContextBudget,
    fixed: int,
    tokens: TokenFn,
    summary_tokens: Callable[[int], int],
    virtual_summary_tokens: int | None = None,
    retrieved: Sequence[int] = (),
) -> Layout:
    """Fit `events` into `budget` (see the module docstring for the order of measures).

    Args:
        fixed: tokens of the system prompt, tool definitions and framing.
        tokens: per-event token counts, verbatim or reduced (cached by the caller).
        summary_tokens: tokens of the summary of the compacted event at an index.
        virtual_summary_tokens: when given, the planner may compact (the size the new
            summary will have, at most `budget.summary_tokens`).
        retrieved: indexes of pre-fetched events (budgeted apart from history).

    Raises:
        TokenBudgetError: the fixed parts, or the fixed parts plus the newest event, do not
            fit the window.
    """
    avail = budget.available(fixed)
    minimum = fixed + budget.max_output_tokens + budget.margin
    if avail <= 0:
        raise TokenBudgetError(
            minimum, budget.window, "system prompt and tool definitions alone exceed the window"
        )
    ret_cap = int(avail * budget.retrieved_share)
    ret_tokens, ret_reduced, ret_limit = _fit_retrieved(events, retrieved, tokens, ret_cap)
    if ret_tokens > ret_cap:
        raise TokenBudgetError(
            minimum + ret_tokens, budget.window, "retrieved tool calls alone exceed their share"
        )
    layout = _plan_history(
        events,
        budget,
        fixed,
        tokens,
        summary_tokens,
        virtual_summary_tokens,
        retrieved,
        avail,
        ret_tokens,
        ret_reduced,
    )
    return replace(layout, retrieved_cap=ret_cap, retrieved_limit=ret_limit)


def _fit_retrieved(
    events: Sequence[Event], retrieved: Sequence[int], tokens: TokenFn, cap: int
) -> tuple[int, bool, int | None]:
    """(planned tokens, reduced, per-result limit) of the retrieved events under `cap`.

    Over the cap, the results share what the calls leave like water: results smaller than
    an equal part keep their size, the larger ones are cut to the level that fills the
    share exactly (`limit`), so the share is used, never exceeded.
    """
    full = sum(tokens(i, False) for i in retrieved)
    if full <= cap:
        return full, False, None
    results = [i for i in retrieved if type(events[i]) is ToolResult]
    others = sum(tokens(i, True) for i in retrieved if i not in results)
    room = cap - others
    sizes = sorted(tokens(i, False) for i in results)
    level = 0
    for k, size in enumerate(sizes):
        level = room // (len(sizes) - k)
        if size > level:
            break
        room -= size
    if not results or level < 16:  # not even a pointer fits: the calls are over the share
        return others + sum(sizes), True, None
    return others + sum(min(size, level) for size in sizes), True, level


def _plan_history(
    events: Sequence[Event],
    budget: ContextBudget,
    fixed: int,
    tokens: TokenFn,
    summary_tokens: Callable[[int], int],
    virtual_summary_tokens: int | None,
    retrieved: Sequence[int],
    avail: int,
    ret_tokens: int,
    ret_reduced: bool,
) -> Layout:
    minimum = fixed + budget.max_output_tokens + budget.margin
    skip = frozenset(retrieved)
    history = avail - ret_tokens

    def laid(units: list[_Unit], span: tuple[int, int] | None, level: int, total: int) -> Layout:
        """The layout of `units` (newest first) beside the retrieved events."""
        laid_out = tuple(reversed(units))
        return Layout(laid_out, tuple(retrieved), ret_reduced, span, level, total + ret_tokens)

    for level, reduce in ((0, False), (1, True)):
        units, total, stop = _fit(
            events, skip, None, tokens, summary_tokens, history, budget.keep_recent, reduce
        )
        if stop is None:
            return laid(units, None, level, total)
    if virtual_summary_tokens is None:
        needed = fixed + budget.max_output_tokens + budget.margin + ret_tokens + total
        raise TokenBudgetError(
            needed, budget.window, "history does not fit and this renderer cannot compact"
        )
    reserve = min(virtual_summary_tokens, budget.summary_tokens)
    # Compact down to a low-water mark, not just below the limit: the next steps then fit
    # without compacting again at every model call. The newest events stay verbatim when
    # they can; when even they cannot, their large results are cut too (with a pointer),
    # first without compacting, then with.
    target = int((history - reserve) * budget.compact_to)
    found = _compact(
        events, skip, tokens, summary_tokens, target, history - reserve, budget.keep_recent
    )
    keep = budget.keep_recent
    if found is None:
        units, total, stop = _fit(events, skip, None, tokens, summary_tokens, history, 0, True)
        if stop is None:
            return laid(units, None, 1, total)
        found = _compact(events, skip, tokens, summary_tokens, target, history - reserve, 0)
        keep = 0
    if found is None:
        newest = next((i for k, i in _walk(events, skip, None) if k == "event"), None)
        need = minimum + ret_tokens + reserve + (tokens(newest, True) if newest is not None else 0)
        raise TokenBudgetError(
            need, budget.window, "the newest event does not fit next to the summary"
        )
    units, total, stop = found
    span = (0, stop)
    # Lay out what remains exactly as a later render will once the compaction is stored.
    for reduce, keep_recent in ((False, keep), (True, budget.keep_recent), (True, 0)):
        kept, kept_total, again = _fit(
            events,
            skip,
            span,
            tokens,
            lambda i: reserve if i == -1 else summary_tokens(i),
            history,
            keep_recent,
            reduce,
        )
        if again is None:
            return laid(kept, span, 2, kept_total)
    return laid([*units, ("summary", -1, False)], span, 2, total + reserve)


def _compact(
    events: Sequence[Event],
    skip: frozenset[int],
    tokens: TokenFn,
    summary_tokens: Callable[[int], int],
    target: int,
    room: int,
    keep_recent: int,
) -> tuple[list[tuple[str, int, bool]], int, int] | None:
    """The newest events that fit `target` (else `room`) with older ones reduced, and the
    index where the summarised span ends; None when not even the newest event fits."""
    for limit in (target, room):
        units, total, stop = _fit(
            events, skip, None, tokens, summary_tokens, limit, keep_recent, True
        )
        if units and stop is not None:
            return units, total, stop
    return None
