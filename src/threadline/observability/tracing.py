"""OpenTelemetry traces of a runtime, following the GenAI semantic conventions.

`TracingObserver` turns each appended batch of events into spans: one `advance {agent}`
span per batch, with a `chat {model}` child per model call and an `execute_tool {tool}`
child per tool outcome, each starting when its work started (`timing.work_started`).
Every span carries `threadline.thread_id`, `gen_ai.conversation.id` (the thread id) and
the event `seq`.

Which trace a thread's spans join (`propagation.trace_parent_of`): the W3C `traceparent`
the thread was launched under, stored in its metadata, so the steps continue the caller's
trace; otherwise a trace id derived from the thread id. Either way any worker or process
that advances the thread later continues the same trace.

Prompt and completion text are not recorded unless `content=True`
(`THREADLINE_OTEL_CONTENT=1`); then the convention's `gen_ai.input.messages`,
`gen_ai.output.messages`, `gen_ai.tool.call.arguments` and `gen_ai.tool.call.result` are
set as JSON strings, passed through the redactor and cut at `content_limit` characters.
The OpenTelemetry SDK is imported only when this observer is built (extra `otel`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .. import events as ev
from ..context.redaction import Redactor
from .propagation import thread_trace_id, trace_parent_of
from .timing import work_started

__all__ = ["TracingObserver", "chat_attributes", "provider_and_model", "thread_trace_id"]


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def provider_and_model(model_id: str) -> tuple[str, str]:
    """`openai:gpt-4.1-mini` -> (`openai`, `gpt-4.1-mini`); an unprefixed id is ours."""
    provider, sep, name = model_id.partition(":")
    return (provider, name) if sep and provider and name else ("threadline", model_id)


def chat_attributes(model_id: str) -> dict[str, str]:
    """The GenAI attributes of a chat call to `model_id`, shared by its span and metrics."""
    provider, model = provider_and_model(model_id)
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }


class TracingObserver:
    """A runtime observer that records GenAI spans (see the module docstring).

    Args:
        tracer_provider: where spans go; the global provider when None.
        content: record prompt and completion text (redacted) on the spans.
        redact: masks secrets in recorded text; the built-in `Redactor` by default.
        content_limit: recorded text longer than this many characters is cut.
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        content: bool = False,
        redact: Callable[[str], str] | None = None,
        content_limit: int = 8192,
    ) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("threadline", tracer_provider=tracer_provider)
        self.tracer_provider = tracer_provider
        self.content = content
        self._redact = redact or Redactor().redact
        self._limit = content_limit

    def __call__(self, thread: ev.Thread, events: Sequence[ev.Event]) -> None:
        if not events:
            return
        trace = self._trace
        parent_of = trace_parent_of(thread.id, thread.metadata)
        root = trace.SpanContext(
            trace_id=parent_of.trace_id,
            span_id=parent_of.span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(parent_of.flags & 0xFF),
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(root))
        first, last = events[0], events[-1]
        starts = [_ns(work_started(thread, e, first.seq) or e.at) for e in events]
        step = self._tracer.start_span(
            f"advance {thread.agent}",
            context=parent,
            start_time=min(starts),
            attributes={
                "threadline.thread_id": thread.id,
                "threadline.agent": thread.agent,
                "gen_ai.agent.name": thread.agent,
                "gen_ai.conversation.id": thread.id,
                "seq": first.seq,
                "threadline.seq_last": last.seq,
                "threadline.status": thread.status.value,
            },
        )
        inner = trace.set_span_in_context(step)
        for event, start in zip(events, starts, strict=True):
            self._child(thread, event, start, inner)
        step.end(end_time=max(_ns(last.at), min(starts)))

    def _child(self, thread: ev.Thread, event: ev.Event, start: int, context: Any) -> None:
        base: dict[str, Any] = {
            "threadline.thread_id": thread.id,
            "gen_ai.conversation.id": thread.id,
            "seq": event.seq,
        }
        match event:
            case ev.ModelCall():
                attrs = {**base, **self._chat_attributes(thread, event)}
                name = f"chat {attrs['gen_ai.request.model']}"
            case ev.ModelError():
                attrs = {**base, **chat_attributes(event.model), "error.type": event.error_type}
                name = f"chat {attrs['gen_ai.request.model']}"
            case ev.ToolResult() | ev.ToolError():
                attrs = {**base, **self._tool_attributes(thread, event)}
                name = f"execute_tool {event.tool}"
            case _:
                return
        span = self._tracer.start_span(name, context=context, start_time=start, attributes=attrs)
        if "error.type" in attrs:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end(end_time=_ns(event.at))

    def _chat_attributes(self, thread: ev.Thread, event: ev.ModelCall) -> dict[str, Any]:
        finish = "tool_calls" if event.tool_calls else "stop"
        chat = chat_attributes(event.model)
        attrs: dict[str, Any] = {
            **chat,
            "gen_ai.response.model": chat["gen_ai.request.model"],
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "gen_ai.response.finish_reasons": [finish],
        }
        if event.cache_read_tokens:  # part of input_tokens, as the conventions count them
            attrs["gen_ai.usage.cache_read.input_tokens"] = event.cache_read_tokens
        if event.cache_write_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = event.cache_write_tokens
        if event.cache_write_1h_tokens:  # of the writes, 1-hour entries (no convention yet)
            attrs["threadline.usage.cache_creation_1h.input_tokens"] = event.cache_write_1h_tokens
        if event.prompt_name:
            attrs["threadline.prompt"] = event.prompt_name
        if event.cost_usd is not None:
            attrs["threadline.cost_usd"] = event.cost_usd
        if self.content:
            attrs["gen_ai.input.messages"] = self._text(_inputs_before(thread, event.seq))
            parts: list[dict[str, Any]] = [{"type": "text", "content": event.output}]
            parts += [
                {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
                for c in event.tool_calls
            ]
            output = [{"role": "assistant", "parts": parts, "finish_reason": finish}]
            attrs["gen_ai.output.messages"] = self._text(output)
        return attrs

    def _tool_attributes(
        self, thread: ev.Thread, event: ev.ToolResult | ev.ToolError
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": event.tool,
            "gen_ai.tool.call.id": event.call_id,
        }
        if isinstance(event, ev.ToolError):
            attrs["error.type"] = event.error_type
        if self.content:
            call = _call_of(thread, event.call_id, event.seq)
            if call is not None:
                attrs["gen_ai.tool.call.arguments"] = self._text(call.arguments)
            outcome = event.result if isinstance(event, ev.ToolResult) else event.message
            attrs["gen_ai.tool.call.result"] = self._text(outcome)
        return attrs

    def _text(self, value: Any) -> str:
        """JSON text of `value`, secrets masked, cut to the limit."""
        text = self._redact(json.dumps(value, ensure_ascii=False, default=str))
        return text if len(text) <= self._limit else text[: self._limit - 1] + "…"


def _inputs_before(thread: ev.Thread, seq: int) -> list[dict[str, Any]]:
    """The messages that reached the model since its previous call, oldest first: what
    changed in its context (the whole context is re-rendered from the thread each time)."""
    found: list[dict[str, Any]] = []
    for event in reversed(thread.events[:seq]):
        match event:
            case ev.ModelCall():
                break
            case ev.UserMessage() | ev.HumanResponse():
                found.append({"role": "user", "parts": [{"type": "text", "content": event.text}]})
            case ev.ToolResult() | ev.ToolError():
                response = event.result if isinstance(event, ev.ToolResult) else event.message
                part = {"type": "tool_call_response", "id": event.call_id, "response": response}
                found.append({"role": "tool", "parts": [part]})
            case _:
                pass
    return found[::-1]


def _call_of(thread: ev.Thread, call_id: str, before: int) -> ev.ToolCall | None:
    for event in reversed(thread.events[:before]):
        if isinstance(event, ev.ToolCall) and event.call_id == call_id:
            return event
    return None
