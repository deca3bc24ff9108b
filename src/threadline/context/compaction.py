"""Compaction: the oldest span of a thread, summarised into one `compacted` event.

The budget planner (`budget.plan_layout`) decides *which* span must go; this module decides
*what replaces it*:

* `Summariser`: any callable `(events, previous_summary) -> str`, sync or async, set with
  `ContextSettings(summariser=...)`. The default is `digest`: a deterministic summary (the
  first request, counts of events and tool calls, the latest inputs and calls before the
  cut). It is an incremental fold cached per thread, so summarising a span that grew by k
  events costs O(k). `LLMSummariser(model)` asks a model instead.

The `Renderer` (renderer.py) stores the summary as a `compacted` event before the model call
that needs it. The stored event is an *input* for replay (it is fed in, not re-derived),
and no event is ever deleted: a compacted thread replays exactly, and every summarised
event is still in the log for `threadline threads show`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, assert_never

from .. import events as ev
from ..models.base import Context, Message
from .compact import compact_block
from .notation import dump_inline
from .tokens import CountCache

if TYPE_CHECKING:
    from ..models.base import Model

__all__ = [
    "DigestCache",
    "LLMSummariser",
    "Summariser",
    "digest",
    "previous_summary",
]


Summariser = Callable[[Sequence[ev.Event], str | None], "str | Awaitable[str]"]
"""`(events of the span, the previous summary or None) -> summary text`."""

_SNIPPET = 240


def _clip(text: str, limit: int = _SNIPPET) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Digest:
    """The running fold behind `digest`: O(1) per event, bounded in size."""

    upto: int = -1
    last: ev.Event | None = None
    first_request: str | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    tools: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    inputs: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    calls: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    answers: deque[str] = field(default_factory=lambda: deque(maxlen=2))

    def add(self, e: ev.Event) -> None:
        """Fold one event in.

        Raises:
            AssertionError: `e` is of a kind the digest does not know.
        """
        self.upto = e.seq
        self.last = e
        if isinstance(e, ev.Compacted):
            return
        self.kinds[e.kind] += 1
        match e:
            case ev.RespondedInstead():
                self.inputs.append(f"[{e.seq}] user instead of {e.call_id}: {_clip(e.text)}")
            case ev.UserMessage() | ev.HumanResponse():
                if self.first_request is None:
                    self.first_request = _clip(e.text, 600)
                else:
                    self.inputs.append(f"[{e.seq}] user: {_clip(e.text)}")
            case ev.ToolCall():
                self.tools[e.tool] += 1
                if e.tool in ("done_for_now", "request_more_information"):
                    message = _clip(str(e.arguments.get("message", "")))
                    self.answers.append(f"[{e.seq}] {e.tool}: {message}")
                else:
                    args = _clip(dump_inline(e.arguments), 160)
                    self.calls.append(f"[{e.seq}] {e.tool} {args}")
            case ev.ToolResult():
                if self.calls:
                    self.calls[-1] += f" -> {_clip(dump_inline(e.result), 160)}"
            case ev.ToolError() | ev.InvalidOutput() | ev.ModelError():
                self.errors += 1
            case ev.GuardVerdict():
                self.errors += e.verdict == "block"
            case (
                ev.ModelCall()
                | ev.ApprovalRequested()
                | ev.Approval()
                | ev.ToolStarted()
                | ev.ToolAttemptFailed()
                | ev.ChildStarted()
                | ev.HumanRequest()
                | ev.Done()
                | ev.Escalated()
                | ev.Failed()
                | ev.Paused()
                | ev.Resumed()
                | ev.ForkedFrom()
                | ev.ExternalEvent()
                | ev.TokenBudgetExceeded()
                | ev.BudgetReserved()
                | ev.BudgetSettled()
                | ev.BudgetRaised()
                | ev.Waiting()
                | ev.WaitTimedOut()
            ):
                pass
            case _:
                assert_never(e)

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

    def fold(self, thread: ev.Thread, upto: int, exclude: frozenset[int]) -> _Digest:
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


def digest(events: Sequence[ev.Event], previous: str | None = None) -> str:
    """The default summariser: a deterministic digest of `events` (no model involved)."""
    state = _Digest()
    for e in events:
        state.add(e)
    text = state.text(events[0].seq if events else 0)
    return f"{previous}\n{text}" if previous and not events else text


class LLMSummariser:
    """Summarise with a model: `ContextSettings(summariser=LLMSummariser(model))`.

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

    async def __call__(self, events: Sequence[ev.Event], previous: str | None) -> str:
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


def previous_summary(thread: ev.Thread, upto: int) -> tuple[str, int] | None:
    """The latest stored summary whose span ends at or before `upto` (scanning back from
    the end; compactions are recent, so this stops early)."""
    for e in reversed(thread.events):
        if type(e) is ev.Compacted and e.to_seq <= upto:
            return e.summary, e.to_seq
    return None
