"""Prometheus metrics from the event stream: a runtime observer and its text exposition.

`RuntimeMetrics` counts what each appended batch of events records, per agent, model and
tool. It keeps its own registry (not prometheus_client's global one), so two runtimes in
one process never mix their numbers; the server serves `render()` at GET /metrics.

    threadline_events_total{agent,kind}                 every appended event
    threadline_steps_total{agent}                       batches written by an advancer
    threadline_step_latency_seconds{agent}              histogram: model and tool steps
    threadline_model_calls_total{agent,model}
    threadline_model_errors_total{agent,model}
    threadline_tokens_total{agent,model,direction}      direction: input | output | cache_read
                                                        | cache_write (parts of input)
                                                        | cache_write_1h (of cache_write)
    threadline_cost_usd_total{agent,model}
    threadline_model_latency_seconds{agent,model}       histogram
    threadline_tool_calls_total{agent,tool}
    threadline_tool_errors_total{agent,tool}
    threadline_tool_retries_total{agent,tool}           failed attempts tried again
    threadline_approval_wait_seconds{agent}             histogram: request to verdict
    threadline_threads{status}                          threads this process last saw, by status
    threadline_threads_awaiting_approval{agent}         in the store (at scrape, `refresh`)
    threadline_approval_oldest_wait_seconds{agent}      in the store (at scrape, `refresh`)
    threadline_lease_expiries_total                     leases this process lost mid-work
    threadline_lease_takeovers_total                    leases taken over from a lapsed holder
    threadline_breaker_state{provider,state}            1 for each breaker's current state
    threadline_rate_limit_waits_total{agent,limit}      calls held back by a rate limit
    threadline_rate_limit_wait_seconds{agent,limit}     histogram: how long each was held back

A step's latency runs from the start of its work (the model call, as timed by its recorded
latency; a tool run, from its `tool_started` checkpoint or else from the event it followed)
to the checkpoint of its outcome. Bookkeeping batches (approval requests, waits) are not
steps of work and are not observed.

prometheus_client is imported when a `RuntimeMetrics` is built (it is in the `server` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..events import (
    Approval,
    ApprovalRequested,
    Event,
    ModelCall,
    ModelError,
    RespondedInstead,
    Status,
    Thread,
    ToolAttemptFailed,
    ToolCall,
    ToolError,
    Waiting,
    utcnow,
)
from .timing import work_started

if TYPE_CHECKING:
    from ..models.resilience import CircuitBreaker
    from ..stores.base import Store

__all__ = ["CONTENT_TYPE", "RuntimeMetrics", "cache_tokens", "step_seconds"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_WAIT_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)
_BREAKER_STATES = ("closed", "half-open", "open")
_HELD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def step_seconds(thread: Thread, events: Sequence[Event]) -> float | None:
    """How long the step that wrote `events` took (see the module docstring), or None
    when the batch holds no model call or tool outcome."""
    first = events[0].seq
    starts = [s for e in events if (s := work_started(thread, e, first)) is not None]
    if not starts:
        return None
    return max(0.0, (events[-1].at - min(starts)).total_seconds())


def cache_tokens(event: ModelCall) -> dict[str, int]:
    """The prompt cache's part of a model call's input, by what the cache did, with the
    counts that are not 0: `cache_read`, `cache_write` and `cache_write_1h` (of the writes,
    those made 1-hour entries, Anthropic's `cache_ttl="1h"`; the rest live 5 minutes)."""
    parts = {
        "cache_read": event.cache_read_tokens,
        "cache_write": event.cache_write_tokens,
        "cache_write_1h": event.cache_write_1h_tokens,
    }
    return {part: tokens for part, tokens in parts.items() if tokens}


def _requested_at(thread: Thread, call_id: str, before: int) -> datetime | None:
    for event in reversed(thread.events[:before]):
        if isinstance(event, ApprovalRequested) and event.call_id == call_id:
            return event.at
    return None


class RuntimeMetrics:
    """An observer that turns appended events into Prometheus counters and histograms."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry

        def counter(name: str, doc: str, labels: Sequence[str]) -> Any:
            return Counter(name, doc, list(labels), registry=reg)

        def histogram(name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> Any:
            return Histogram(name, doc, list(labels), buckets=buckets, registry=reg)

        def gauge(name: str, doc: str, labels: Sequence[str]) -> Any:
            return Gauge(name, doc, list(labels), registry=reg)

        self.events = counter("threadline_events", "Events appended", ["agent", "kind"])
        self.steps = counter("threadline_steps", "Batches written by an advancer", ["agent"])
        self.step_latency = histogram(
            "threadline_step_latency_seconds",
            "Model and tool steps, from the start of the work to its checkpoint",
            ["agent"],
            _LATENCY_BUCKETS,
        )
        self.model_calls = counter("threadline_model_calls", "Model calls", ["agent", "model"])
        self.model_errors = counter(
            "threadline_model_errors", "Failed model calls", ["agent", "model"]
        )
        self.tokens = counter(
            "threadline_tokens", "Tokens used by model calls", ["agent", "model", "direction"]
        )
        self.cost = counter("threadline_cost_usd", "Cost of model calls in USD", ["agent", "model"])
        self.model_latency = histogram(
            "threadline_model_latency_seconds",
            "Latency of model calls",
            ["agent", "model"],
            _LATENCY_BUCKETS,
        )
        self.tool_calls = counter(
            "threadline_tool_calls", "Tool calls requested", ["agent", "tool"]
        )
        self.tool_errors = counter(
            "threadline_tool_errors", "Tool calls that failed", ["agent", "tool"]
        )
        self.tool_retries = counter(
            "threadline_tool_retries",
            "Failed tool attempts that are tried again",
            ["agent", "tool"],
        )
        self.approval_wait = histogram(
            "threadline_approval_wait_seconds",
            "From an approval request to its verdict",
            ["agent"],
            _WAIT_BUCKETS,
        )
        self.threads = gauge(
            "threadline_threads", "Threads this process has seen, by their last status", ["status"]
        )
        self.awaiting_approval = gauge(
            "threadline_threads_awaiting_approval",
            "Threads in the store awaiting an approval",
            ["agent"],
        )
        self.oldest_approval = gauge(
            "threadline_approval_oldest_wait_seconds",
            "Age of the oldest thread in the store awaiting an approval",
            ["agent"],
        )
        self.rate_limit_waits = counter(
            "threadline_rate_limit_waits",
            "Calls held back by a rate limit (a call held back twice counts twice)",
            ["agent", "limit"],
        )
        self.rate_limit_wait = histogram(
            "threadline_rate_limit_wait_seconds",
            "How long a call was held back by a rate limit, each time",
            ["agent", "limit"],
            _HELD_BUCKETS,
        )
        self.lease_expiries = counter(
            "threadline_lease_expiries", "Leases this process lost before it was done", []
        )
        self.lease_takeovers = counter(
            "threadline_lease_takeovers", "Leases taken over after their holder's lapsed", []
        )
        self._breakers: Callable[[], Iterable[CircuitBreaker]] = tuple
        reg.register(_BreakerCollector(lambda: self._breakers()))
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        agent = thread.agent
        if any(e.traits.origin != "outside" for e in events):
            self.steps.labels(agent).inc()
        seconds = step_seconds(thread, events)
        if seconds is not None:
            self.step_latency.labels(agent).observe(seconds)
        for event in events:
            self.events.labels(agent, event.kind).inc()
            self._count(thread, event)
        self._track_status(thread.id, thread.status.value)

    def _count(self, thread: Thread, event: Event) -> None:
        agent = thread.agent
        match event:
            case ModelCall():
                self.model_calls.labels(agent, event.model).inc()
                self.tokens.labels(agent, event.model, "input").inc(event.input_tokens)
                self.tokens.labels(agent, event.model, "output").inc(event.output_tokens)
                for part, tokens in cache_tokens(event).items():  # of the input counted above
                    self.tokens.labels(agent, event.model, part).inc(tokens)
                if event.cost_usd:
                    self.cost.labels(agent, event.model).inc(event.cost_usd)
                self.model_latency.labels(agent, event.model).observe(event.latency_ms / 1000)
            case ModelError():
                self.model_errors.labels(agent, event.model).inc()
            case ToolCall():
                self.tool_calls.labels(agent, event.tool).inc()
            case ToolError():
                self.tool_errors.labels(agent, event.tool).inc()
            case ToolAttemptFailed():
                self.tool_retries.labels(agent, event.tool).inc()
            case Waiting(rate_limit=str(limit)):
                self.rate_limit_waits.labels(agent, limit).inc()
                held = (event.until - event.at).total_seconds() if event.until else 0.0
                self.rate_limit_wait.labels(agent, limit).observe(max(0.0, held))
            case Approval() | RespondedInstead():
                requested = _requested_at(thread, event.call_id, event.seq)
                if requested is not None:
                    waited = max(0.0, (event.at - requested).total_seconds())
                    self.approval_wait.labels(agent).observe(waited)
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

    # -- what the events do not say ------------------------------------------------------

    def watch_breakers(self, breakers: Callable[[], Iterable[CircuitBreaker]]) -> None:
        """Report these circuit breakers' states (read at every scrape)."""
        self._breakers = breakers

    def lease_expired(self) -> None:
        """A lease this process held lapsed (or was taken) before it was done."""
        self.lease_expiries.inc()

    def lease_taken_over(self) -> None:
        """This process leased a thread whose previous holder's lease had lapsed."""
        self.lease_takeovers.inc()

    async def refresh(self, store: Store, *, now: datetime | None = None) -> None:
        """Read the approval gauges from the store (the server calls this per scrape), so
        they count every process's threads, not only this one's."""
        now = now or utcnow()
        count: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        cursor = None
        while True:
            page = await store.list(status=Status.AWAITING_APPROVAL, limit=500, cursor=cursor)
            for item in page.items:
                count[item.agent] = count.get(item.agent, 0) + 1
                if item.agent not in oldest or item.updated_at < oldest[item.agent]:
                    oldest[item.agent] = item.updated_at
            cursor = page.cursor
            if cursor is None:
                break
        self.awaiting_approval.clear()
        self.oldest_approval.clear()
        for agent, n in count.items():
            self.awaiting_approval.labels(agent).set(n)
            age = (now - oldest[agent]).total_seconds()
            self.oldest_approval.labels(agent).set(max(0.0, age))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def value(self, name: str, **labels: Any) -> float | None:
        """One sample's current value (tests and diagnostics)."""
        return self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})


class _BreakerCollector:
    """`threadline_breaker_state{provider,state}`: 1 for the state each breaker is in now."""

    def __init__(self, breakers: Callable[[], Iterable[CircuitBreaker]]) -> None:
        self._breakers = breakers

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "threadline_breaker_state",
            "Circuit breaker state per provider (1 for the current state)",
            labels=["provider", "state"],
        )
        for breaker in self._breakers():
            current = breaker.state
            for state in _BREAKER_STATES:
                family.add_metric([breaker.provider, state], 1.0 if state == current else 0.0)
        yield family

    def describe(self) -> Iterator[Any]:
        return iter(())
