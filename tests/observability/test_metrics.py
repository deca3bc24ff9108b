"""GET /metrics on a real server: Prometheus text whose counters match the run exactly."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server_support import DEFAULT_KEYS, deploy_model, start_server
from threadline import Agent
from threadline.server import ServerConfig


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    return samples.get((name, frozenset(labels.items())))


def test_metrics_after_a_run_count_exactly(tmp_path: Path, deploybot: Agent) -> None:
    server = start_server(
        tmp_path, [deploybot], deploy_model(environment="staging"), keys=DEFAULT_KEYS
    )
    try:
        thread = server.launch(message="deploy the backend to staging")
        assert thread["status"] == "done", thread
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            r = anonymous.get("/metrics")  # scraped without a key by default
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _samples(r.text)
        stored = [json.loads(body) for _, body in server.stored_events(thread["id"])]
    finally:
        server.stop()

    kinds = [e["kind"] for e in stored]
    model_calls = [e for e in stored if e["kind"] == "model_call"]
    # The run: the tags are fetched up front, then the model deploys and finishes.
    assert len(model_calls) == 2
    assert (
        _get(samples, "threadline_model_calls_total", agent="deploybot", model="deploy-script") == 2
    )
    tools = [e["tool"] for e in stored if e["kind"] == "tool_call"]
    assert tools == ["list_git_tags", "deploy_backend", "done_for_now"]
    for tool in tools:
        assert _get(samples, "threadline_tool_calls_total", agent="deploybot", tool=tool) == 1
    assert (
        _get(samples, "threadline_tool_errors_total", agent="deploybot", tool="deploy_backend")
        is None
    )
    for kind in set(kinds):
        assert _get(
            samples, "threadline_events_total", agent="deploybot", kind=kind
        ) == kinds.count(kind)
    for direction in ("input", "output"):
        expected = sum(e[f"{direction}_tokens"] for e in model_calls)
        got = _get(
            samples,
            "threadline_tokens_total",
            agent="deploybot",
            model="deploy-script",
            direction=direction,
        )
        assert got == expected
    assert (
        _get(
            samples,
            "threadline_model_latency_seconds_count",
            agent="deploybot",
            model="deploy-script",
        )
        == 2
    )
    assert _get(samples, "threadline_threads", status="done") == 1
    assert _get(samples, "threadline_threads", status="running") == 0


def test_metrics_key_is_a_setting(tmp_path: Path, deploybot: Agent) -> None:
    config = ServerConfig(metrics_auth=True, poll_interval=0.2)
    server = start_server(tmp_path, [deploybot], deploy_model(), config=config, keys=DEFAULT_KEYS)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        with server.client("reader") as reader:
            r = reader.get("/metrics")
        assert r.status_code == 200
        assert "threadline_model_calls_total" in r.text or "threadline_model_calls" in r.text
    finally:
        server.stop()


def test_metrics_can_be_turned_off(tmp_path: Path, deploybot: Agent) -> None:
    config = ServerConfig(metrics=False, poll_interval=0.2)
    server = start_server(tmp_path, [deploybot], deploy_model(), config=config, keys=DEFAULT_KEYS)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            assert anonymous.get("/metrics").status_code == 404
        assert server.services.metrics is None
    finally:
        server.stop()
