"""OpenTelemetry metrics of a runtime: the GenAI client metrics and Threadline's own.

`OtelMetricsObserver` records, for each appended batch of events:

    gen_ai.client.token.usage        histogram {token}   gen_ai.token.type=input|output
    threadline.cache.token.usage     histogram {token}   threadline.token.type=cache_read|
                                                         cache_write|cache_write_1h
    gen_ai.client.operation.duration histogram s         model calls that answered
    threadline.cost                  counter   USD       model calls with a known price
    threadline.step.duration         histogram s         model and tool steps (timing.py)
    threadline.tool.calls            counter   {call}    gen_ai.tool.name
    threadline.tool.errors           counter   {error}   gen_ai.tool.name, error.type

The prompt cache's counts are parts of the input (`cache_write_1h` of `cache_write`: the
writes made 1-hour entries, Anthropic's `cache_ttl="1h"`), recorded only when not 0; they
have an instrument of their own because the GenAI conventions define only `input` and
`output` token types, and a sum over `gen_ai.token.type` would count them twice.
Model metrics carry `gen_ai.operation.name=chat`, `gen_ai.provider.name` and
`gen_ai.request.model`; every metric carries `gen_ai.agent.name`. A failed model call has
no recorded duration, so it is not measured here (`threadline_model_errors_total` counts
it). The Prometheus endpoint (`metrics.py`) is separate and needs none of this; this
observer exists for a stack that collects OTLP. The SDK is imported only when it is built
(extra `otel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import Event, ModelCall, Thread, ToolCall, ToolError
from .metrics import cache_tokens, step_seconds
from .tracing import chat_attributes

__all__ = ["OtelMetricsObserver"]


class OtelMetricsObserver:
    """A runtime observer recording OpenTelemetry metrics (see the module docstring).

    Args:
        meter_provider: where measurements go; the global provider when None.
    """

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter("threadline", meter_provider=meter_provider)
        self.meter_provider = meter_provider
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per call"
        )
        self._cache_tokens = meter.create_histogram(
            "threadline.cache.token.usage",
            unit="{token}",
            description="Tokens of a call's input the provider's prompt cache read or wrote",
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Model call duration"
        )
        self._cost = meter.create_counter(
            "threadline.cost", unit="USD", description="Cost of model calls"
        )
        self._steps = meter.create_histogram(
            "threadline.step.duration", unit="s", description="Model and tool steps"
        )
        self._tool_calls = meter.create_counter(
            "threadline.tool.calls", unit="{call}", description="Tool calls requested"
        )
        self._tool_errors = meter.create_counter(
            "threadline.tool.errors", unit="{error}", description="Tool calls that failed"
        )

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        if not events:
            return
        agent = {"gen_ai.agent.name": thread.agent}
        seconds = step_seconds(thread, events)
        if seconds is not None:
            self._steps.record(seconds, agent)
        for event in events:
            self._record(agent, event)

    def _record(self, agent: dict[str, str], event: Event) -> None:
        match event:
            case ModelCall():
                attrs = {**agent, **chat_attributes(event.model)}
                self._duration.record(event.latency_ms / 1000, attrs)
                self._tokens.record(event.input_tokens, {**attrs, "gen_ai.token.type": "input"})
                self._tokens.record(event.output_tokens, {**attrs, "gen_ai.token.type": "output"})
                for part, tokens in cache_tokens(event).items():
                    self._cache_tokens.record(tokens, {**attrs, "threadline.token.type": part})
                if event.cost_usd:
                    self._cost.add(event.cost_usd, attrs)
            case ToolCall():
                self._tool_calls.add(1, {**agent, "gen_ai.tool.name": event.tool})
            case ToolError():
                attrs = {**agent, "gen_ai.tool.name": event.tool, "error.type": event.error_type}
                self._tool_errors.add(1, attrs)
            case _:
                pass
