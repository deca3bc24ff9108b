"""Which events a context budgets as retrieved material, and how relevant they are.

Pre-fetched calls (made at launch, before any model call) and, for an agent with a
retriever, its searches since the latest user message are shown before the history under
their own share of the budget (`budget.plan_layout`); `best_relevance` moves that share
under a `dynamic` split.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events import (
    PREFETCH_PREFIX,
    InvalidOutput,
    ModelCall,
    ModelError,
    Thread,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
    UserMessage,
)

__all__ = ["best_relevance", "retrieved_indexes"]


_MODEL = (ModelCall, ModelError, InvalidOutput)
"""The model's turn: pre-fetched material is what comes before the first one."""


def retrieved_indexes(thread: Thread, tool: str | None = None) -> list[int]:
    """The events budgeted as retrieved material, oldest first.

    Pre-fetched tool calls and outcomes that follow the first message, before any model
    call (a bounded scan from the start finds them all); and, for an agent with a retriever
    (`tool`), the calls of that tool and their outcomes since the latest user message, plus
    the pre-fetched search of that message (a bounded scan back from the end). Older
    searches have aged into history.
    """
    out: list[int] = []
    for i, e in enumerate(thread.events):
        if type(e) is UserMessage:
            continue  # no call id, and never ends the pre-fetched run
        if isinstance(e, _MODEL):
            break
        call_id = getattr(e, "call_id", "")
        if isinstance(call_id, str) and call_id.startswith(PREFETCH_PREFIX):
            if isinstance(e, ToolCall | ToolResult | ToolError):
                out.append(i)
        elif i > 0 and not isinstance(e, ToolStarted | UserMessage):
            break
    if tool is None:
        return out
    events = thread.events
    # The retriever's searches are retrieved material only until the next user message
    # (then they have aged into history): collect the tool's calls since that message.
    calls: set[str] = set()
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if isinstance(e, UserMessage):
            break
        if isinstance(e, ToolCall) and e.tool == tool:
            calls.add(e.call_id)
    aged = {
        e.call_id
        for e in (events[i] for i in out)
        if isinstance(e, ToolCall) and e.tool == tool and e.call_id not in calls
    }
    keep = {i for i in out if getattr(events[i], "call_id", None) not in aged}
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if isinstance(e, UserMessage):
            break
        if isinstance(e, ToolCall | ToolResult | ToolError) and e.call_id in calls:
            keep.add(i)
    return sorted(keep)


def best_relevance(thread: Thread, indexes: Sequence[int]) -> float:
    """The highest `relevance` among the retrieved hits at `indexes` (0 when none says)."""
    best = 0.0
    for i in indexes:
        e = thread.events[i]
        if isinstance(e, ToolResult) and isinstance(e.result, list):
            for hit in e.result:
                value = hit.get("relevance") if isinstance(hit, dict) else None
                if isinstance(value, int | float):
                    best = max(best, float(value))
    return best
