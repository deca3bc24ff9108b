"""Compaction: the oldest span of a thread, summarised into one `compacted` event.

The budget planner (`budget.plan_layout`) decides *which* span must go; this module decides
*what replaces it*, and gives the runtime the events to store before a model call:

* `Summariser`: any callable `(events, previous_summary) -> str`, sync or async, set with
  `Agent.options["summariser"]`. The default is `digest`: a deterministic summary (the first
  request, counts of events and tool calls, the latest inputs and calls before the cut).
  It is an incremental fold cached per thread, so summarising a span that grew by k events
  costs O(k). `LLMSummariser(model)` asks a model instead.
* `prepare_call(agent, thread, at)`: what the runtime appends before calling the model:
  a `compacted` event when the history must be compacted, `token_budget_exceeded` plus
  `escalated` when even the minimum context cannot fit (or a prompt cannot render), or
  nothing.

The stored `compacted` event is an *input* for replay (it is fed in, not re-derived), and
no event is ever deleted: a compacted thread replays exactly, and every summarised event
is still in the log for `threadline threads show`.
"""

from __future__ import annotations

import inspect
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import PromptError, TokenBudgetError
from ..events import (
    Compacted,
    Escalated,
    Event,
    HumanResponse,
    Thread,
    TokenBudgetExceeded,
    ToolCall,
    ToolResult,
    UserMessage,
)
from ..models.base import Context, Message
from .notation import dump_inline
from .tokens import CountCache

if TYPE_CHECKING:
    from ..agent import Agent
    from ..models.base import Model
    from .render import AgentContextState

__all__ = [
    "CONTEXT_SOURCE",
    "DigestCache",
    "LLMSummariser",
    "Summariser",
    "digest",
    "is_context_input",
    "prepare_call",
    "summarise_span",
]

CONTEXT_SOURCE = "context"
"""`details["source"]` of escalations the context layer writes (budget, prompt errors)."""


def is_context_input(event: Event) -> bool:
    """Events the context layer writes that `decide` does not derive: pre-fetched tool
    calls and escalations for budget or prompt failures. Replay feeds them in."""
    from .prefetch import is_prefetch

    if event.kind == "escalated":
        return event.details.get("source") == CONTEXT_SOURCE
    return is_prefetch(event)


Summariser = Callable[[Sequence[Event], str | None], "str | Awaitable[str]"]
"""`(events of the span, the previous summary or None) -> summary text`."""

_SNIPPET = 240


def _clip(text: str, limit: int = _SNIPPET) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Digest:
    """The running fold behind `digest`: O(1) per event, bounded in size."""

    upto: int = -1
    last: Event | None = None
    first_request: str | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    tools: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    inputs: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    calls: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    answers: deque[str] = field(default_factory=lambda: deque(maxlen=2))

    def add(self, e: Event) -> None:
        self.upto = e.seq
        self.last = e
        kind = e.kind
        if kind == "compacted":
            return
        self.kinds[kind] += 1
        if isinstance(e, UserMessage | HumanResponse):
            if self.first_request is None:
                self.first_request = _clip(e.text, 600)
            else:
                self.inputs.append(f"[{e.seq}] user: {_clip(e.text)}")
        elif isinstance(e, ToolCall):
            self.tools[e.tool] += 1
            if e.tool in ("done_for_now", "request_more_information"):
                message = _clip(str(e.arguments.get("message", "")))
                self.answers.append(f"[{e.seq}] {e.tool}: {message}")
            else:
                self.calls.append(f"[{e.seq}] {e.tool} {_clip(dump_inline(e.arguments), 160)}")
        elif isinstance(e, ToolResult) and self.calls:
            self.calls[-1] += f" -> {_clip(dump_inline(e.result), 160)}"
        elif kind in ("tool_error", "invalid_output", "model_error"):
            self.errors += 1

    def text(self, from_seq: int) -> str:
        lines = [
            f"Events {from_seq}-{self.upto} are summarised here; each is still in the "
            "thread log under its number."
        ]
        if self.first_request:
            lines.append(f"First request: {self.first_request}")
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items()))
        lines.append(f"Events: {counts}.")
        if self.tools:
            lines.append(
                "Tool calls: " + ", ".join(f"{t} x{n}" for t, n in self.tools.most_common()) + "."
            )
        if self.errors:
            lines.append(f"Errors: {self.errors} (all before the events below).")
        if self.answers:
            lines.append("Latest answers:\n" + "\n".join(self.answers))
        if self.inputs:
            lines.append("Latest inputs:\n" + "\n".join(self.inputs))
        if self.calls:
            lines.append("Latest tool calls:\n" + "\n".join(self.calls))
        return "\n".join(lines)


class DigestCache:
    """Running digests per thread id (bounded), so a growing span is folded once."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._data = CountCache(maxsize)

    def fold(self, thread: Thread, upto: int, exclude: frozenset[int]) -> _Digest:
        events = thread.events
        state: _Digest | None = self._data.get(thread.id, thread.id)
        if (
            state is None
            or state.upto > upto
            or (state.upto >= 0 and events[state.upto] != state.last)
        ):
            state = _Digest()
        for i in range(state.upto + 1, upto + 1):
            if i not in exclude:
                state.add(events[i])
            else:
                state.upto, state.last = i, events[i]
        self._data.put(thread.id, thread.id, state)
        return state


def digest(events: Sequence[Event], previous: str | None = None) -> str:
    """The default summariser: a deterministic digest of `events` (no model involved)."""
    state = _Digest()
    for e in events:
        state.add(e)
    text = state.text(events[0].seq if events else 0)
    return f"{previous}\n{text}" if previous and not events else text


def summarise_span(
    state: AgentContextState,
    thread: Thread,
    upto: int,
    max_tokens: int,
    *,
    exclude: frozenset[int] = frozenset(),
) -> str:
    """The digest of events `0..upto`, cut to `max_tokens` (incremental per thread)."""
    from .render import truncate_to

    if state.digests is None:
        state.digests = DigestCache()
    fold = state.digests.fold(thread, upto, exclude)
    return _fit(fold.text(0), max_tokens, state, upto, truncate_to)


def _fit(
    text: str, max_tokens: int, state: AgentContextState, seq: int, truncate: Callable[..., str]
) -> str:
    if state.count_text(text) + 12 <= max_tokens:
        return text
    return str(truncate(text, max_tokens - 24, state.counter, seq))


class LLMSummariser:
    """Summarise with a model: `Agent(options={"summariser": LLMSummariser(model)})`.

    The model receives the previous summary and the span in the compact form and answers
    in plain text. Its answer is cut to the agent's `summary_tokens`.
    """

    def __init__(self, model: Model, *, instructions: str | None = None) -> None:
        self.model = model
        self.instructions = instructions or (
            "Summarise this part of an agent's work log for the agent itself. Keep every "
            "fact it may still need: the user's goal, identifiers, decisions, results and "
            "open questions. Plain text, no preamble."
        )

    async def __call__(self, events: Sequence[Event], previous: str | None) -> str:
        from .render import compact_block

        blocks = [b for b in (compact_block(events, i) for i in range(len(events))) if b]
        if previous:
            blocks.insert(0, f"<previous_summary>\n{previous}\n</previous_summary>")
        out = await self.model.request(
            Context(
                system=self.instructions,
                messages=(Message("user", "\n".join(blocks)),),
                max_output_tokens=600,
            )
        )
        return out.text.strip()


async def prepare_call(
    agent: Agent, thread: Thread, at: datetime, model: Model | None = None
) -> list[Event]:
    """The events to store before the next model call of `thread` (see module doc).

    `model` is the model that will answer; the budget is sized for it (`bind_model`).
    Never raises for budget or prompt problems: those become events, so the runtime
    records them and escalates instead of crashing or sending an oversize request.
    """
    from .render import bind_model, context_state, render

    if agent.renderer is None:
        bind_model(agent, model)

    seq = thread.next_seq
    try:
        if agent.renderer is not None:
            agent.render(thread)
            return []
        rendered = render(agent, thread)
    except TokenBudgetError as exc:
        return [
            TokenBudgetExceeded(seq=seq, at=at, needed=exc.needed, available=exc.available),
            Escalated(
                seq=seq + 1,
                at=at,
                reason=f"token budget exceeded: {exc}",
                details={
                    "needed": exc.needed,
                    "available": exc.available,
                    "source": CONTEXT_SOURCE,
                },
            ),
        ]
    except PromptError as exc:
        return [
            Escalated(
                seq=seq, at=at, reason=f"prompt error: {exc}", details={"source": CONTEXT_SOURCE}
            )
        ]
    if rendered.compaction is None:
        return []
    lo, hi, text = rendered.compaction
    summariser = agent.options.get("summariser")
    if summariser is not None:
        previous = _previous_summary(thread, hi)
        start = previous[1] + 1 if previous else lo
        span = [e for e in thread.events[start : hi + 1] if e.kind != "compacted"]
        result: Any = summariser(span, previous[0] if previous else None)
        if inspect.isawaitable(result):
            result = await result
        state = context_state(agent)
        from .render import truncate_to

        text = _fit(str(result), state.budget.summary_tokens, state, hi, truncate_to)
        if state.redactor is not None:
            text = state.redactor.redact(text)
    return [Compacted(seq=seq, at=at, from_seq=lo, to_seq=hi, summary=text)]


def _previous_summary(thread: Thread, upto: int) -> tuple[str, int] | None:
    """The latest stored summary whose span ends at or before `upto` (scanning back from
    the end; compactions are recent, so this stops early)."""
    for e in reversed(thread.events):
        if e.kind == "compacted" and e.to_seq <= upto:
            return e.summary, e.to_seq
    return None
