"""Logs as an event stream (12-factor logs) and the sinks that carry it.

Every appended event becomes one JSON line: time, thread id, seq, kind, agent, and where
they apply the tool, tokens, cost and latency. Library code never prints; it hands lines to
a sink (stderr by default, a file, or any callable). Secrets are masked by the redactor the
sink is given (see threadline.context.redaction).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, assert_never

from .. import events as ev

__all__ = ["JsonEventLog", "event_log_record", "open_sink"]


def event_log_record(thread: ev.Thread, event: ev.Event) -> dict[str, Any]:
    """The structured log record of one event (stable field names; null fields omitted)."""
    record: dict[str, Any] = {
        "ts": event.at.isoformat(),
        "thread_id": thread.id,
        "seq": event.seq,
        "kind": event.kind,
        "agent": thread.agent,
        "status": thread.status.value,
    }
    match event:
        case ev.ModelCall():
            record.update(
                model=event.model,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                latency_ms=event.latency_ms,
                cost_usd=event.cost_usd,
                prompt=event.prompt_name,
            )
            if event.cache_write_tokens or event.cache_read_tokens:
                record.update(
                    cache_write_tokens=event.cache_write_tokens,
                    cache_read_tokens=event.cache_read_tokens,
                )
        case ev.ToolCall() | ev.ToolResult():
            record.update(tool=event.tool, call_id=event.call_id)
        case ev.ToolError() | ev.ToolAttemptFailed():
            record.update(
                tool=event.tool,
                call_id=event.call_id,
                error_type=event.error_type,
                message=event.message,
            )
            if isinstance(event, ev.ToolAttemptFailed):
                record["attempt"] = event.attempt
        case ev.ModelError():
            record.update(error_type=event.error_type, message=event.message)
        case ev.ApprovalRequested():
            record.update(tool=event.tool, call_id=event.call_id)
        case ev.Approval() | ev.RespondedInstead() | ev.ToolStarted():
            record["call_id"] = event.call_id
        case ev.ChildStarted():
            record["call_id"] = event.call_id
            record["child_thread"] = event.thread_id
        case ev.GuardVerdict():
            record.update(
                tool=event.tool,
                call_id=event.call_id,
                guard=event.guard,
                verdict=event.verdict,
                failed=event.failed,
                reason=event.reason,
            )
        case ev.InvalidOutput() | ev.Escalated():
            record["reason"] = event.reason
        case (
            ev.UserMessage()
            | ev.HumanRequest()
            | ev.HumanResponse()
            | ev.Done()
            | ev.Failed()
            | ev.Paused()
            | ev.Resumed()
            | ev.Compacted()
            | ev.ForkedFrom()
            | ev.ExternalEvent()
            | ev.TokenBudgetExceeded()
            | ev.BudgetReserved()
            | ev.BudgetSettled()
            | ev.Waiting()
            | ev.WaitTimedOut()
        ):
            pass
        case _:
            assert_never(event)
    if record.get("call_id") == "":
        del record["call_id"]  # calls imported without provider ids
    return record


class JsonEventLog:
    """An observer that writes one JSON line per appended event to a sink.

    Args:
        sink: a text stream, or a callable taking one line (without newline).
        redact: optional function applied to each line before it is written.
    """

    def __init__(
        self,
        sink: IO[str] | Callable[[str], None] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._sink = sink if sink is not None else sys.stderr
        self._redact = redact
        self._lock = threading.Lock()

    def __call__(self, thread: ev.Thread, events: Sequence[ev.Event]) -> None:
        for event in events:
            line = json.dumps(event_log_record(thread, event), separators=(",", ":"), default=str)
            if self._redact is not None:
                line = self._redact(line)
            with self._lock:
                if callable(self._sink) and not hasattr(self._sink, "write"):
                    self._sink(line)
                else:
                    stream: IO[str] = self._sink  # type: ignore[assignment]
                    stream.write(line + "\n")
                    stream.flush()


def open_sink(spec: str) -> IO[str] | None:
    """`stderr`, `stdout`, `off` (None) or a file path (appended to, folders created)."""
    if spec in ("", "off", "none"):
        return None
    if spec == "stderr":
        return sys.stderr
    if spec == "stdout":
        return sys.stdout
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
