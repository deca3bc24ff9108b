"""OpenTelemetry traces of a runtime, following the GenAI semantic conventions.

`TracingObserver` turns each appended batch of events into spans: one `advance {agent}`
span per batch, with a `chat {model}` child per model call (timed by its recorded latency)
and an `execute_tool {tool}` child per tool outcome. Every span carries
`threadline.thread_id` and the event `seq`.

The trace id of a thread is derived from its id, so any worker or process that advances
the thread later continues the same trace without storing anything. Prompt and completion
text are never recorded. The OpenTelemetry SDK is imported only when this observer is
built (extra `otel`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..events import Event, ModelCall, ModelError, Thread, ToolError, ToolResult

__all__ = ["TracingObserver", "thread_trace_id"]


def thread_trace_id(thread_id: str) -> int:
    """The 128-bit trace id every span of this thread belongs to."""
    return int.from_bytes(hashlib.sha256(thread_id.encode()).digest()[:16], "big") or 1


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


class TracingObserver:
    """A runtime observer that records GenAI spans (see the module docstring).

    Args:
        tracer_provider: where spans go; the global provider when None.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("threadline", tracer_provider=tracer_provider)

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        if not events:
            return
        trace = self._trace
        root = trace.SpanContext(
            trace_id=thread_trace_id(thread.id),
            span_id=thread_trace_id(thread.id + "/root") & ((1 << 64) - 1) or 1,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(root))
        first, last = events[0], events[-1]
        starts = [self._start_of(e) for e in events]
        step = self._tracer.start_span(
            f"advance {thread.agent}",
            context=parent,
            start_time=min(starts),
            attributes={
                "threadline.thread_id": thread.id,
                "threadline.agent": thread.agent,
                "seq": first.seq,
                "threadline.seq_last": last.seq,
                "threadline.status": thread.status.value,
            },
        )
        inner = trace.set_span_in_context(step)
        for event, start in zip(events, starts, strict=True):
            self._child(thread, event, start, inner)
        step.end(end_time=max(_ns(last.at), min(starts)))

    @staticmethod
    def _start_of(event: Event) -> int:
        if isinstance(event, ModelCall):
            return _ns(event.at) - int(event.latency_ms * 1_000_000)
        return _ns(event.at)

    def _child(self, thread: Thread, event: Event, start: int, context: Any) -> None:
        base: dict[str, Any] = {"threadline.thread_id": thread.id, "seq": event.seq}
        match event:
            case ModelCall():
                attrs = {
                    **base,
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": event.model.partition(":")[0] or "threadline",
                    "gen_ai.request.model": event.model,
                    "gen_ai.usage.input_tokens": event.input_tokens,
                    "gen_ai.usage.output_tokens": event.output_tokens,
                    "gen_ai.response.finish_reasons": (
                        ["tool_calls"] if event.tool_calls else ["stop"]
                    ),
                }
                if event.cost_usd is not None:
                    attrs["threadline.cost_usd"] = event.cost_usd
                name = f"chat {event.model}"
            case ModelError():
                attrs = {**base, "gen_ai.operation.name": "chat", "error.type": event.error_type}
                attrs["gen_ai.request.model"] = event.model
                name = f"chat {event.model}"
            case ToolResult() | ToolError():
                attrs = {
                    **base,
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": event.tool,
                    "gen_ai.tool.call.id": event.call_id,
                }
                if isinstance(event, ToolError):
                    attrs["error.type"] = event.error_type
                name = f"execute_tool {event.tool}"
            case _:
                return
        span = self._tracer.start_span(name, context=context, start_time=start, attributes=attrs)
        if "error.type" in attrs:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end(end_time=_ns(event.at))
