"""How the CLI shows an event: one readable line (Rich markup) per event.

Every event kind is matched by its class and the match ends in `assert_never`, so mypy
names this function when a new kind is added and not handled here.
"""

from __future__ import annotations

import json
from typing import Any, assert_never

from rich.markup import escape

from .. import events as ev

__all__ = ["budget_lines", "event_detail", "format_arguments", "format_event"]

_LIMIT = 300

_VERDICT_STYLES = {"allow": "dim", "block": "bold red", "require_approval": "magenta"}


def format_arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def event_detail(event: ev.Event) -> tuple[str, str]:
    """(Rich style, detail text) of one event.

    Raises:
        AssertionError: `event` is of a kind this function does not know.
    """
    match event:
        case ev.UserMessage() | ev.HumanResponse():
            return ("bold cyan" if isinstance(event, ev.UserMessage) else "blue"), event.text
        case ev.ModelCall():
            return "dim", (
                f"{event.model} in={event.input_tokens} out={event.output_tokens} "
                f"{event.latency_ms:.0f}ms"
            )
        case ev.ToolCall():
            return "yellow", f"{event.tool}({format_arguments(event.arguments)}) [{event.call_id}]"
        case ev.ToolResult():
            return "green", f"{event.tool} -> {json.dumps(event.result, ensure_ascii=False)}"
        case ev.ToolError() | ev.ModelError():
            return "red", f"{event.error_type}: {event.message}"
        case ev.InvalidOutput():
            return "red", event.reason
        case ev.ApprovalRequested():
            call = f"{event.tool}({format_arguments(event.arguments)}) [{event.call_id}]"
            return "bold magenta", f"{call} needs approval"
        case ev.Approval():
            verdict = "approved" if event.approved else "rejected"
            comment = f": {event.comment}" if event.comment else ""
            return "magenta", f"{verdict} {event.call_id}{comment}"
        case ev.RespondedInstead():
            return "blue", f"instead of a verdict on {event.call_id}: {event.text}"
        case ev.HumanRequest():
            return "bold blue", f"{event.question} [{event.request_id}]"
        case ev.Done():
            return "bold green", event.message
        case ev.Escalated() | ev.Failed():
            return "bold red", event.reason
        case ev.ForkedFrom():
            return "white", f"{event.thread_id} at {event.at_seq}"
        case ev.ToolStarted():
            return "white", f"{event.call_id} attempt {event.attempt}"
        case ev.ToolAttemptFailed():
            detail = f"{event.call_id} attempt {event.attempt}: {event.error_type}: {event.message}"
            return "yellow", f"{detail}; again at {event.retry_at:%H:%M:%S}"
        case ev.ChildStarted():
            return "cyan", f"{event.call_id} -> {event.agent} in thread {event.thread_id}"
        case ev.GuardVerdict():
            style = _VERDICT_STYLES[event.verdict]
            failed = " (guard failed)" if event.failed else ""
            reason = f": {event.reason}" if event.reason else ""
            return style, f"{event.guard}: {event.verdict} {event.call_id}{failed}{reason}"
        case ev.BudgetReserved() | ev.BudgetSettled() | ev.BudgetRaised():
            return "dim", ev.summarize(event).text
        case (
            ev.Paused()
            | ev.Resumed()
            | ev.Compacted()
            | ev.ExternalEvent()
            | ev.TokenBudgetExceeded()
            | ev.Waiting()
            | ev.WaitTimedOut()
        ):
            return "white", ev.summarize(event).text
        case _:
            assert_never(event)


def format_event(event: ev.Event) -> str:
    """One readable line for an event (Rich markup)."""
    style, detail = event_detail(event)
    detail = detail if len(detail) <= _LIMIT else detail[: _LIMIT - 1] + "…"
    return f"[dim]{event.seq:>4}[/] [{style}]{event.kind:<18}[/] {escape(detail)}"


def budget_lines(thread: ev.Thread) -> list[str]:
    """What `threads show` says of a thread's budget: what it spent (and holds reserved),
    and for a thread a budget stopped, the figures of each kind (Rich markup)."""
    st = thread.state
    if not any(isinstance(e, ev.BudgetReserved) for e in thread.events):
        return []
    held = ""
    if st.reserved_tokens is not None:
        held = f", reserved {st.reserved_tokens} tokens ${st.reserved_usd or 0:.6f}"
    lines = [
        f"budget: spent {st.spent_calls} calls, {st.spent_tokens} tokens, ${st.spent_usd:.6f}{held}"
    ]
    last = thread.events[-1]
    if isinstance(last, ev.Escalated) and last.details.get("source") == ev.BUDGET_SOURCE:
        scope = last.details.get("scope", "thread")
        lines.append(f"[bold red]{scope} budget exhausted[/] (used + reserved + next > limit):")
        for kind, f in (last.details.get("figures") or {}).items():
            if f["limit"] is None:
                continue
            mark = " [bold red]<- exceeded[/]" if kind in last.details.get("exceeded", ()) else ""
            lines.append(
                f"  {kind:<12} {f['used']} + {f['reserved']} + {f['next']} > {f['limit']}{mark}"
            )
    return lines
