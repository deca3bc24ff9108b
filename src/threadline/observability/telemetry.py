"""Turning OpenTelemetry on from settings: traces and metrics exported over OTLP/HTTP.

    THREADLINE_OTEL=1                          on (exports to http://localhost:4318)
    OTEL_EXPORTER_OTLP_ENDPOINT=http://...     on, when THREADLINE_OTEL is unset
    OTEL_TRACES_EXPORTER=otlp | console        on, when THREADLINE_OTEL is unset ("none": off)
    THREADLINE_OTEL=0 or OTEL_SDK_DISABLED=1   off, whatever else is set
    OTEL_METRICS_EXPORTER=none                 traces only

When on, a process gets a `TracingObserver` and an `OtelMetricsObserver`. The exporters
are the standard OTLP ones (`opentelemetry-exporter-otlp-proto-http`), so they read the
standard variables themselves: `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT`,
`_HEADERS`, `_TIMEOUT`, `_COMPRESSION`; spans are batched (`OTEL_BSP_*`), metrics exported
every `OTEL_METRIC_EXPORT_INTERVAL` ms; the resource comes from `OTEL_SERVICE_NAME` /
`OTEL_RESOURCE_ATTRIBUTES` (service name `threadline` when neither names one). What is
still queued when the process exits is flushed by the providers' exit hooks. Nothing of
OpenTelemetry is imported unless telemetry is enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, MissingExtraError
from ..settings import Settings
from .otel_metrics import OtelMetricsObserver
from .tracing import TracingObserver

__all__ = ["telemetry_enabled", "telemetry_observers"]

_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc", "http/json")


def telemetry_enabled(settings: Settings) -> bool:
    """Whether traces are to be exported (see the module docstring for the rules)."""
    if settings.otel_sdk_disabled:
        return False
    if settings.otel is not None:
        return settings.otel
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(settings.otel_endpoint)


def telemetry_observers(
    settings: Settings, *, redact: Callable[[str], str] | None = None
) -> list[TracingObserver | OtelMetricsObserver]:
    """The observers exporting this process's spans and metrics; none when telemetry is off.

    `redact` masks secrets in recorded text (only recorded with `THREADLINE_OTEL_CONTENT`).

    Raises:
        MissingExtraError: telemetry is on but the `otel` extra is not installed.
        ConfigError: an exporter or protocol this build cannot serve.
    """
    if not telemetry_enabled(settings):
        return []
    traces = _exporter_name("OTEL_TRACES_EXPORTER", settings.otel_traces_exporter)
    metrics = _exporter_name("OTEL_METRICS_EXPORTER", settings.otel_metrics_exporter)
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise MissingExtraError("otel", exc.name or "opentelemetry-sdk") from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource.create({"service.name": "threadline"}))
    tracer_provider = TracerProvider(resource=resource)
    if traces != "none":
        exporter = _exporter(traces, "trace", settings)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    out: list[TracingObserver | OtelMetricsObserver] = [
        TracingObserver(tracer_provider, content=settings.otel_content, redact=redact)
    ]
    if metrics != "none":
        reader = PeriodicExportingMetricReader(_exporter(metrics, "metric", settings))
        out.append(OtelMetricsObserver(MeterProvider(resource=resource, metric_readers=[reader])))
    return out


def _exporter_name(variable: str, value: str | None) -> str:
    """The first of the comma-separated list (the variable allows several)."""
    name = (value or "").split(",")[0].strip().lower() or "otlp"
    if name not in _EXPORTERS:
        raise ConfigError(f"{variable}={name!r}: threadline exports with {', '.join(_EXPORTERS)}")
    return name


def _exporter(name: str, signal: str, settings: Settings) -> Any:
    """The span (`signal="trace"`) or metric exporter called `name`."""
    if name == "console":
        if signal == "trace":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    protocol = (settings.otel_protocol or "").strip().lower() or "http/protobuf"
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not an OTLP protocol")
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: threadline exports OTLP over "
            "http/protobuf (the default); point it at the collector's HTTP port (4318)"
        )
    try:
        if signal == "trace":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    except ImportError as exc:
        raise MissingExtraError(
            "otel", exc.name or "opentelemetry-exporter-otlp-proto-http"
        ) from None
