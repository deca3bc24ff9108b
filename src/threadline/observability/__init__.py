"""Observability: the JSON event log, Prometheus metrics and (optionally) OpenTelemetry.

Each piece is a runtime observer (`Runtime(observers=[...])`): it sees every appended
batch of events and never changes what the runtime does.

    log.py       JsonEventLog: one JSON line per event (12-factor logs)
    metrics.py   RuntimeMetrics: counters and histograms served at GET /metrics
    tracing.py   TracingObserver: OpenTelemetry GenAI spans (extra `otel`)
"""

from __future__ import annotations

from .log import JsonEventLog, event_log_record, open_sink
from .metrics import RuntimeMetrics
from .tracing import TracingObserver

__all__ = ["JsonEventLog", "RuntimeMetrics", "TracingObserver", "event_log_record", "open_sink"]
