"""Turning OpenTelemetry on from settings: a `TracingObserver` exporting over OTLP/HTTP.

    THREADLINE_OTEL=1                          on (exports to http://localhost:4318)
    OTEL_EXPORTER_OTLP_ENDPOINT=http://...     on, when THREADLINE_OTEL is unset
    OTEL_TRACES_EXPORTER=otlp | console        on, when THREADLINE_OTEL is unset ("none": off)
    THREADLINE_OTEL=0 or OTEL_SDK_DISABLED=1   off, whatever else is set

The exporter is the standard OTLP one (`opentelemetry-exporter-otlp-proto-http`), so it
reads the standard variables itself: `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `_HEADERS`,
`_TIMEOUT`, `_COMPRESSION`; spans are batched (`OTEL_BSP_*`); the resource comes from
`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (service name `threadline` when neither
names one). Spans still queued when the process exits are flushed by the provider's exit
hook. Nothing of OpenTelemetry is imported unless telemetry is enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, MissingExtraError
from ..settings import Settings
from .tracing import TracingObserver

__all__ = ["telemetry_enabled", "tracing_from_settings"]

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


def tracing_from_settings(
    settings: Settings, *, redact: Callable[[str], str] | None = None
) -> TracingObserver | None:
    """The observer exporting this process's spans, or None when telemetry is off.

    `redact` masks secrets in recorded text (only recorded with `THREADLINE_OTEL_CONTENT`).

    Raises:
        MissingExtraError: telemetry is on but the `otel` extra is not installed.
        ConfigError: an exporter or protocol this build cannot serve.
    """
    if not telemetry_enabled(settings):
        return None
    exporter_name = _first(settings.otel_traces_exporter) or "otlp"
    if exporter_name not in _EXPORTERS:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r}: threadline exports with "
            f"{', '.join(_EXPORTERS)}"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise MissingExtraError("otel", exc.name or "opentelemetry-sdk") from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource.create({"service.name": "threadline"}))
    provider = TracerProvider(resource=resource)
    if exporter_name != "none":
        provider.add_span_processor(BatchSpanProcessor(_exporter(exporter_name, settings)))
    return TracingObserver(provider, content=settings.otel_content, redact=redact)


def _first(value: str | None) -> str:
    """The first of a comma-separated list (the variable allows several exporters)."""
    return (value or "").split(",")[0].strip().lower()


def _exporter(name: str, settings: Settings) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = _first(settings.otel_protocol) or "http/protobuf"
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not an OTLP protocol")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                "pip install opentelemetry-exporter-otlp-proto-grpc, or use http/protobuf"
            ) from None
        return GrpcExporter()
    if protocol == "http/json":
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported by the Python exporter; "
            "use http/protobuf (the default) or grpc"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise MissingExtraError(
            "otel", exc.name or "opentelemetry-exporter-otlp-proto-http"
        ) from None
    return OTLPSpanExporter()
