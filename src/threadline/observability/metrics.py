"""Prometheus metrics from the event stream: a runtime observer and its text exposition.

`RuntimeMetrics` counts what each appended batch of events records, per agent, model and
tool. It keeps its own registry (not prometheus_client's global one), so two runtimes in
one process never mix their numbers; the server serves `render()` at GET /metrics.

    threadline_events_total{agent,kind}                 every appended event
    threadline_steps_total{agent}                       batches written by an advancer
    threadline_model_calls_total{agent,model}
    threadline_model_errors_total{agent,model}
    threadline_tokens_total{agent,model,direction}      direction: input | output
    threadline_cost_usd_total{agent,model}
    threadline_model_latency_seconds{agent,model}       histogram
    threadline_tool_calls_total{agent,tool}
    threadline_tool_errors_total{agent,tool}
    threadline_threads{status}                          threads this process last saw, by status

prometheus_client is imported when a `RuntimeMetrics` is built (it is in the `server` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..events import Event, ModelCall, ModelError, Thread, ToolCall, ToolError

__all__ = ["CONTENT_TYPE", "RuntimeMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RuntimeMetrics:
    """An observer that turns appended events into Prometheus counters and histograms."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.events = Counter(
            "threadline_events", "Events appended", ["agent", "kind"], registry=reg
        )
        self.steps = Counter(
            "threadline_steps", "Batches of events written by an advancer", ["agent"], registry=reg
        )
        self.model_calls = Counter(
            "threadline_model_calls", "Model calls", ["agent", "model"], registry=reg
        )
        self.model_errors = Counter(
            "threadline_model_errors", "Failed model calls", ["agent", "model"], registry=reg
        )
        self.tokens = Counter(
            "threadline_tokens",
            "Tokens used by model calls",
            ["agent", "model", "direction"],
            registry=reg,
        )
        self.cost = Counter(
            "threadline_cost_usd", "Cost of model calls in USD", ["agent", "model"], registry=reg
        )
        self.model_latency = Histogram(
            "threadline_model_latency_seconds",
            "Latency of model calls",
            ["agent", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.tool_calls = Counter(
            "threadline_tool_calls", "Tool calls requested", ["agent", "tool"], registry=reg
        )
        self.tool_errors = Counter(
            "threadline_tool_errors", "Tool calls that failed", ["agent", "tool"], registry=reg
        )
        self.threads = Gauge(
            "threadline_threads",
            "Threads this process has seen, by their last status",
            ["status"],
            registry=reg,
        )
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        agent = thread.agent
        if any(e.traits.origin != "outside" for e in events):
            self.steps.labels(agent).inc()
        for event in events:
            self.events.labels(agent, event.kind).inc()
            self._count(agent, event)
        self._track_status(thread.id, thread.status.value)

    def _count(self, agent: str, event: Event) -> None:
        match event:
            case ModelCall():
                self.model_calls.labels(agent, event.model).inc()
                self.tokens.labels(agent, event.model, "input").inc(event.input_tokens)
                self.tokens.labels(agent, event.model, "output").inc(event.output_tokens)
                if event.cost_usd:
                    self.cost.labels(agent, event.model).inc(event.cost_usd)
                self.model_latency.labels(agent, event.model).observe(event.latency_ms / 1000)
            case ModelError():
                self.model_errors.labels(agent, event.model).inc()
            case ToolCall():
                self.tool_calls.labels(agent, event.tool).inc()
            case ToolError():
                self.tool_errors.labels(agent, event.tool).inc()
            case _:
                pass

    def _track_status(self, thread_id: str, status: str) -> None:
        with self._lock:
            before = self._status.get(thread_id)
            if before == status:
                return
            if before is not None:
                self.threads.labels(before).dec()
            self.threads.labels(status).inc()
            self._status[thread_id] = status

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def value(self, name: str, **labels: Any) -> float | None:
        """One sample's current value (tests and diagnostics)."""
        return self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
