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


_KEYS = {"prompt_name": "prompt", "thread_id": "child_thread"}
"""Log names of the fields whose own names would be unclear (or taken) in a record."""


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
    for name in _logged(event):
        record[_KEYS.get(name, name)] = getattr(event, name)
    if record.get("call_id") == "":
        del record["call_id"]  # calls imported without provider ids
    return record


def _logged(event: ev.Event) -> tuple[str, ...]:
    """The fields of `event` its log record carries, in their order in the record (each a
    field of every class its `case` matches: tests/observability/test_log.py checks)."""
    match event:
        case ev.ModelCall():
            usage = (
                "model",
                "input_tokens",
                "output_tokens",
                "latency_ms",
                "cost_usd",
                "prompt_name",
            )
            if event.cache_write_1h_tokens:
                return (*usage, "cache_write_tokens", "cache_read_tokens", "cache_write_1h_tokens")
            if event.cache_write_tokens or event.cache_read_tokens:
                return (*usage, "cache_write_tokens", "cache_read_tokens")
            return usage
        case ev.ToolCall() | ev.ToolResult() | ev.ApprovalRequested():
            return ("tool", "call_id")
        case ev.ToolError():
            return ("tool", "call_id", "error_type", "message")
        case ev.ToolAttemptFailed():
            return ("tool", "call_id", "error_type", "message", "attempt")
        case ev.ModelError():
            return ("error_type", "message")
        case ev.Approval() | ev.RespondedInstead() | ev.ToolStarted():
            return ("call_id",)
        case ev.ChildStarted():
            return ("call_id", "thread_id")
        case ev.GuardVerdict():
            return ("tool", "call_id", "guard", "verdict", "failed", "reason")
        case ev.InvalidOutput() | ev.Escalated():
            return ("reason",)
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
            | ev.BudgetRaised()
            | ev.Waiting()
            | ev.WaitTimedOut()
        ):
            return ()
        case _:
            assert_never(event)


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
