"""What a person reads for one event: a line, and a block shown as is.

The server sends each event with its `summary` (`threadline.wire`), so the web page shows
every kind, including ones added after the page was written, without a table of its own.
Every kind is matched by its class and the match ends in `assert_never`: mypy names this
function when a new kind is added and not described here.
"""

from __future__ import annotations

import json
from typing import Any, assert_never

from pydantic import BaseModel, ConfigDict

from . import kinds as ev
from .thread import Thread

__all__ = ["Summary", "call_context", "summarize"]


class Summary(BaseModel):
    """One event as a person reads it.

    Attributes:
        text: one line (who did what, to which call).
        detail: a block shown as is (arguments or a result as indented JSON, the model's
            text output), or None.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    detail: str | None = None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _by(who: str | None, prefix: str = " by ") -> str:
    return f"{prefix}{who}" if who else ""


def _answered(event: ev.Approval | ev.RespondedInstead) -> str:
    """The pending call a person answered, by whom and through which channel."""
    return f"{event.call_id}{_by(event.by)} via {event.channel}"


def summarize(event: ev.Event) -> Summary:
    """The summary of `event`.

    Raises:
        AssertionError: `event` is of a kind this function does not know.
    """
    match event:
        case ev.UserMessage():
            via = f" — {event.sender} via {event.channel}" if event.sender else ""
            return Summary(text=event.text + via)
        case ev.ModelCall():
            cost = f" · ${event.cost_usd:.5f}" if event.cost_usd else ""
            usage = f"{event.input_tokens} in / {event.output_tokens} out tokens"
            line = f"{event.model} · {usage} · {round(event.latency_ms)} ms{cost}"
            return Summary(text=line, detail=event.output or None)
        case ev.ToolCall():
            line = f"{event.tool}@{event.version} [{event.call_id}]"
            return Summary(text=line, detail=_json(event.arguments))
        case ev.ApprovalRequested():
            only = f" — only {', '.join(event.approvers)}" if event.approvers else ""
            return Summary(text=f"{event.tool} needs approval [{event.call_id}]{only}")
        case ev.Approval():
            verdict = "approved" if event.approved else "rejected"
            comment = f": “{event.comment}”" if event.comment else ""
            edited = event.edited_arguments
            return Summary(
                text=f"{verdict} {_answered(event)}{comment}",
                detail=_json(edited) if edited is not None else None,
            )
        case ev.RespondedInstead():
            return Summary(text=f"instead of a verdict on {_answered(event)}: “{event.text}”")
        case ev.ToolStarted():
            return Summary(text=f"{event.call_id} attempt {event.attempt}")
        case ev.ToolAttemptFailed():
            return Summary(
                text=f"{event.tool} [{event.call_id}] attempt {event.attempt}: "
                f"{event.error_type}: {event.message}; again at {event.retry_at.isoformat()}"
            )
        case ev.ChildStarted():
            return Summary(text=f"{event.call_id} -> sub-agent {event.agent} in {event.thread_id}")
        case ev.GuardVerdict():
            failed = " (the guard failed)" if event.failed else ""
            reason = f": {event.reason}" if event.reason else ""
            line = f"{event.guard}: {event.verdict} {event.tool} [{event.call_id}]{failed}{reason}"
            return Summary(text=line, detail=event.output or None)
        case ev.ToolResult():
            return Summary(text=f"{event.tool} [{event.call_id}]", detail=_json(event.result))
        case ev.ToolError() | ev.ModelError():
            return Summary(text=f"{event.error_type}: {event.message}")
        case ev.InvalidOutput():
            return Summary(text=event.reason)
        case ev.HumanRequest():
            return Summary(text=event.question)
        case ev.HumanResponse():
            return Summary(text=event.text + _by(event.by, " — "))
        case ev.Done():
            return Summary(text=event.message)
        case ev.Escalated() | ev.Failed():
            return Summary(text=event.reason)
        case ev.Paused():
            return Summary(text=(event.reason or "") + _by(event.by))
        case ev.Resumed():
            return Summary(text=_by(event.by, "by "))
        case ev.ForkedFrom():
            return Summary(text=f"{event.thread_id} at event {event.at_seq}")
        case ev.Compacted():
            return Summary(text=f"events {event.from_seq}-{event.to_seq}", detail=event.summary)
        case ev.ExternalEvent():
            source = f" from {event.source}" if event.source else ""
            return Summary(text=f"{event.name}{source}", detail=_json(event.payload))
        case ev.TokenBudgetExceeded():
            return Summary(text=f"needs {event.needed} tokens, {event.available} available")
        case ev.BudgetReserved():
            tree = f" (tree {event.tree})" if event.tree else ""
            line = f"{event.input_tokens} in + up to {event.output_tokens} out tokens"
            return Summary(text=f"{line}, ${event.usd:.6f} for {event.model}{tree}")
        case ev.BudgetSettled():
            return Summary(
                text=f"used {event.calls} call(s), {event.tokens} tokens, ${event.usd:.6f} "
                f"(reserved {event.reserved_tokens} tokens, ${event.reserved_usd:.6f})"
            )
        case ev.BudgetRaised():
            return Summary(text=_raised(event))
        case ev.Waiting():
            until = f"until {event.until.isoformat()}" if event.until else ""
            wake = f"for event {event.event}" if event.event else ""
            line = " or ".join(p for p in (until, wake) if p)
            return Summary(text=line + (f": {event.reason}" if event.reason else ""))
        case ev.WaitTimedOut():
            return Summary(text=f"no {event.event} came" if event.event else "the time came")
        case _:
            assert_never(event)


def call_context(thread: Thread, call_id: str) -> dict[str, str | None]:
    """What a person deciding on call `call_id` reads beside it: the user's `request` it
    answers and the model's stated `reason` (None where there is none)."""
    request = reason = None
    seen_call = False
    for event in reversed(thread.events):
        if isinstance(event, ev.ToolCall) and event.call_id == call_id:
            seen_call = True
        elif seen_call and reason is None and isinstance(event, ev.ModelCall):
            reason = _stated_reason(event.output) or ""
        elif seen_call and isinstance(event, ev.UserMessage):
            request = event.text
            break
    return {"request": request, "reason": reason or None}


def _stated_reason(output: str) -> str | None:
    """The model's words beside its intent: a JSON intent's `reason` (or `why`), or the
    text of an answer that is not just the intent's JSON."""
    text = output.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return text[:2000]
    if isinstance(data, dict):
        found = data.get("reason") or data.get("why")
        return str(found)[:2000] if found else None
    return None


def _raised(event: ev.BudgetRaised) -> str:
    b = event.budget
    kinds = (("calls", b.max_model_calls), ("tokens", b.max_tokens), ("USD", b.max_usd))
    return "to " + ", ".join(f"{v} {k}" for k, v in kinds if v is not None) + _by(event.by)
