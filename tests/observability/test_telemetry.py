"""Telemetry from settings: OTLP/HTTP spans from a real `threadline serve` process reach a
receiver on loopback (a tiny HTTP server here, decoding the protobuf with opentelemetry-proto),
and nothing of OpenTelemetry is imported while telemetry is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from server_support import CALC, CALC_ANSWERS, serve_calculator
from threadline.errors import ConfigError
from threadline.observability.propagation import parse_traceparent
from threadline.observability.telemetry import telemetry_enabled, telemetry_observers
from threadline.settings import Settings

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
DURATION = "gen_ai.client.operation.duration"


class _Receiver:
    """An OTLP/HTTP receiver: keeps every decoded trace and metrics export POSTed to it."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.paths.append(self.path)
                received.content_types.append(self.headers["content-type"])
                if self.path == "/v1/metrics":
                    metrics = ExportMetricsServiceRequest()
                    metrics.ParseFromString(body)
                    received.metric_requests.append(metrics)
                else:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    received.requests.append(request)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    out += [(resource, span) for span in scope.spans]
        return out

    def metric(self, name: str) -> list[Any]:
        """The data points of `name` in the latest export that has it (cumulative)."""
        for request in reversed(self.metric_requests):
            for resource_metrics in request.resource_metrics:
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == name:
                            kind = metric.WhichOneof("data")
                            return list(getattr(metric, kind).data_points)
        return []


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind)
    return out


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.server.shutdown()


def _base_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "answers.json").write_text(json.dumps(CALC_ANSWERS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "THREADLINE_"))}
    return {
        **env,
        "THREADLINE_STORE": f"sqlite:///{tmp_path}/server.db",
        "THREADLINE_MODEL": f"scripted:{tmp_path}/answers.json",
        "THREADLINE_LOG": "off",
    }


def _wait_for(predicate: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_threadline_serve_exports_the_span_tree_over_otlp_http(
    tmp_path: Path, receiver: _Receiver
) -> None:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,  # turns telemetry on by itself
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_SERVICE_NAME": "threadline-test",
    }
    with (
        serve_calculator(tmp_path, otel) as (url, _),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        r = http.post(
            "/v1/threads",
            json={"agent": "calculator", "message": "what is 9/3?", "wait": True},
            headers={"traceparent": TRACEPARENT},
        )
        assert r.status_code == 201, r.text
        thread = r.json()
        assert thread["status"] == "awaiting_approval"
        call_id = thread["pending_approvals"][0]["call_id"]
        # The approval carries no traceparent: its steps still join the launch's trace.
        r = http.post(f"/v1/threads/{thread['id']}/approvals/{call_id}", json={"approved": True})
        assert r.status_code == 200, r.text
        _wait_for(
            lambda: http.get(f"/v1/threads/{thread['id']}").json()["status"] == "done",
            "the thread to finish",
        )
        events = http.get(f"/v1/threads/{thread['id']}/events").json()["events"]
        _wait_for(
            lambda: any(s.name == "execute_tool divide" for _, s in receiver.spans()),
            "the tool span to be exported",
        )
        _wait_for(
            lambda: sum(p.count for p in receiver.metric(DURATION)) == 2,
            "the model call metrics to be exported",
        )

    assert set(receiver.paths) == {"/v1/traces", "/v1/metrics"}
    assert set(receiver.content_types) == {"application/x-protobuf"}
    spans = receiver.spans()
    parent = parse_traceparent(TRACEPARENT)
    assert parent is not None
    assert {resource["service.name"] for resource, _ in spans} == {"threadline-test"}
    assert {int.from_bytes(s.trace_id, "big") for _, s in spans} == {parent.trace_id}

    by_id = {s.span_id: s for _, s in spans}
    advances = [s for _, s in spans if s.name == "advance calculator"]
    chats = [s for _, s in spans if s.name.startswith("chat ")]
    tools = [s for _, s in spans if s.name == "execute_tool divide"]
    model_calls = [e for e in events if e["kind"] == "model_call"]
    results = [e for e in events if e["kind"] == "tool_result"]
    assert len(chats) == len(model_calls) == 2 and len(tools) == len(results) == 1
    # advance spans hang under the caller's span; chat and tool spans under an advance
    for span in advances:
        assert int.from_bytes(span.parent_span_id, "big") == parent.span_id
    for span in chats + tools:
        assert by_id[span.parent_span_id].name == "advance calculator"
    for _, span in spans:
        attrs = _attributes(span.attributes)
        assert attrs["threadline.thread_id"] == attrs["gen_ai.conversation.id"] == thread["id"]
        assert isinstance(attrs["seq"], int)
        assert not any(k in attrs for k in ("gen_ai.input.messages", "gen_ai.output.messages"))
    chat = _attributes(chats[0].attributes)
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "scripted"
    assert chat["gen_ai.request.model"] == "answers.json"
    assert chat["gen_ai.usage.input_tokens"] == model_calls[0]["input_tokens"]
    assert chat["gen_ai.response.finish_reasons"] == ["stop"]
    tool = _attributes(tools[0].attributes)
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "divide"
    assert tool["gen_ai.tool.call.id"] == results[0]["call_id"] == call_id

    # metrics: the GenAI client metrics, with the convention's attributes
    tokens = {
        _attributes(p.attributes)["gen_ai.token.type"]: p
        for p in receiver.metric("gen_ai.client.token.usage")
    }
    for kind in ("input", "output"):
        assert tokens[kind].count == 2
        assert tokens[kind].sum == sum(e[f"{kind}_tokens"] for e in model_calls)
        assert _attributes(tokens[kind].attributes)["gen_ai.provider.name"] == "scripted"
    calls = {
        _attributes(p.attributes)["gen_ai.tool.name"]: p.as_int
        for p in receiver.metric("threadline.tool.calls")
    }
    assert calls == {"divide": 1, "done_for_now": 1}


_IMPORTS = """
import json, sys
from threadline.bootstrap import load_agents, open_runtime
from threadline.settings import Settings
from threadline.worker import Worker

cfg = Settings()
agents = [a for a, _ in load_agents([{agent!r}]).values()]
worker = Worker(open_runtime(cfg, agents))
loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
report = {{"worker": loaded(), "observers": [type(o).__name__ for o in worker.runtime.observers]}}
from threadline.server import ServerConfig, Services, create_app

services = Services.build(ServerConfig(), lambda obs: open_runtime(cfg, agents, observers=obs))
create_app(services)
report["server"] = loaded()
print(json.dumps(report))
"""


def test_nothing_from_opentelemetry_is_imported_while_telemetry_is_off(tmp_path: Path) -> None:
    """A worker (and the CLI) imports nothing of OpenTelemetry; the server imports only
    what FastAPI itself imports (it depends on opentelemetry-api), never the SDK or an
    exporter. Turned on, the exporter is there and the runtime has a TracingObserver."""
    script = _IMPORTS.format(agent=CALC + ":agent")
    env = _base_env(tmp_path)
    runs = {}
    for name, extra in (("off", {}), ("on", {"THREADLINE_OTEL": "1"})):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        runs[name] = json.loads(done.stdout)
    off, on = runs["off"], runs["on"]
    assert off["worker"] == [] and "TracingObserver" not in off["observers"]
    assert not [
        m for m in off["server"] if m.startswith(("opentelemetry.sdk", "opentelemetry.exp"))
    ]
    assert "TracingObserver" in on["observers"]
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in on["worker"]


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"THREADLINE_OTEL": "1"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"THREADLINE_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"THREADLINE_OTEL": "1", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_when_telemetry_is_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool
) -> None:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "THREADLINE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert telemetry_enabled(settings) is enabled
    assert len(telemetry_observers(settings)) == (2 if enabled else 0)


def test_unsupported_exporters_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_OTEL", "1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="zipkin"):
        telemetry_observers(Settings())
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/protobuf"):
        telemetry_observers(Settings())
