"""When the work recorded by an event started: what step latencies and span starts use.

Events carry the time they were appended (`at`), the end of the work. The start is:

* a model call: `at` minus its recorded latency;
* a tool outcome: its `tool_started` checkpoint (tools with side effects), else the event
  its batch followed (the runtime runs a read-only tool right after that append);
* a failed model call: the event its batch followed;
* anything else: `at` (bookkeeping, no work).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import events as ev

__all__ = ["work_started"]


def work_started(thread: ev.Thread, event: ev.Event, batch_start: int) -> datetime | None:
    """The start of the work `event` records, or None when it records no work.

    `batch_start` is the seq of the first event of the batch `event` was appended in.
    """
    match event:
        case ev.ModelCall():
            return event.at - timedelta(milliseconds=event.latency_ms)
        case ev.ToolResult() | ev.ToolError():
            return _checkpoint(thread, event.call_id, event.seq) or _before(
                thread, batch_start, event.at
            )
        case ev.ModelError():
            return _before(thread, batch_start, event.at)
        case _:
            return None


def _before(thread: ev.Thread, seq: int, default: datetime) -> datetime:
    return thread.events[seq - 1].at if 0 < seq <= len(thread.events) else default


def _checkpoint(thread: ev.Thread, call_id: str, before: int) -> datetime | None:
    for event in reversed(thread.events[:before]):
        if isinstance(event, ev.ToolStarted) and event.call_id == call_id:
            return event.at
        if isinstance(event, ev.ToolCall) and event.call_id == call_id:
            return None  # no checkpoint since the call: it had no side effects
    return None
