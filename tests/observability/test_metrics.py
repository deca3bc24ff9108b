"""GET /metrics on a real server: Prometheus text whose counters match the run exactly."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server_support import DEFAULT_KEYS, deploy_model, start_server
from threadline import Agent, RetryableToolError, Runtime, ToolContext, ToolRetry, tool
from threadline.errors import ModelError
from threadline.events import (
    ModelCall,
    Thread,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from threadline.models.base import Context, ModelOutput
from threadline.models.resilience import CircuitBreaker, ResilientModel, RetryPolicy
from threadline.observability.metrics import RuntimeMetrics, step_seconds
from threadline.server import ServerConfig
from threadline.stores import MemoryStore, SQLiteStore
from threadline.testing import FunctionModel, ScriptedModel, intent
from threadline.worker import Worker


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


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
    for name in tools:
        assert _get(samples, "threadline_tool_calls_total", agent="deploybot", tool=name) == 1
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


def test_approvals_waiting_their_age_and_wait_time(tmp_path: Path, deploybot: Agent) -> None:
    server = start_server(tmp_path, [deploybot], deploy_model(), keys=DEFAULT_KEYS)
    try:
        thread = server.launch(message="deploy the backend to production")
        assert thread["status"] == "awaiting_approval", thread
        with server.client("reader") as reader:
            waiting = _samples(reader.get("/metrics").text)
        call_id = thread["pending_approvals"][0]["call_id"]
        with server.client("alice") as alice:
            r = alice.post(
                f"/v1/threads/{thread['id']}/approvals/{call_id}", json={"approved": True}
            )
            assert r.status_code == 200, r.text
        assert server.wait_status(thread["id"], {"done"})["status"] == "done"
        with server.client("reader") as reader:
            after = _samples(reader.get("/metrics").text)
        stored = [json.loads(body) for _, body in server.stored_events(thread["id"])]
    finally:
        server.stop()

    assert _get(waiting, "threadline_threads_awaiting_approval", agent="deploybot") == 1
    oldest = _get(waiting, "threadline_approval_oldest_wait_seconds", agent="deploybot")
    assert oldest is not None and 0 <= oldest < 600
    assert _get(waiting, "threadline_approval_wait_seconds_count", agent="deploybot") is None
    # once approved nothing waits, and the wait was observed once, as long as it lasted
    assert _get(after, "threadline_threads_awaiting_approval", agent="deploybot") is None
    assert _get(after, "threadline_approval_wait_seconds_count", agent="deploybot") == 1
    requested = next(e for e in stored if e["kind"] == "approval_requested")
    verdict = next(e for e in stored if e["kind"] == "approval")
    waited = datetime.fromisoformat(verdict["at"]) - datetime.fromisoformat(requested["at"])
    got = _get(after, "threadline_approval_wait_seconds_sum", agent="deploybot")
    assert got == pytest.approx(waited.total_seconds(), abs=1e-3)
    # model and tool steps were timed: one observation per model call or tool outcome batch
    steps = _get(after, "threadline_step_latency_seconds_count", agent="deploybot")
    outcomes = [e for e in stored if e["kind"] in ("model_call", "tool_result", "tool_error")]
    assert steps is not None and len([e for e in stored if e["kind"] == "model_call"]) <= steps
    assert steps <= len(outcomes)


def test_breaker_state_per_provider(tmp_path: Path, deploybot: Agent) -> None:
    def down(context: Context) -> Any:
        raise ModelError("provider down (503)", retryable=True, status=503)

    breaker = CircuitBreaker("flaky", failure_threshold=1, reset_after=3600)
    model = ResilientModel(
        FunctionModel(down, model_id="flaky:m1"), RetryPolicy(max_attempts=1), breaker
    )
    server = start_server(tmp_path, [deploybot], model, keys=DEFAULT_KEYS)
    try:
        with server.client("reader") as reader:
            before = _samples(reader.get("/metrics").text)
        thread = server.launch(message="deploy the backend to staging")
        with server.client("reader") as reader:
            after = _samples(reader.get("/metrics").text)
    finally:
        server.stop()
    assert thread["status"] in ("running", "waiting"), thread
    assert _get(before, "threadline_breaker_state", provider="flaky", state="closed") == 1
    assert _get(before, "threadline_breaker_state", provider="flaky", state="open") == 0
    assert _get(after, "threadline_breaker_state", provider="flaky", state="open") == 1
    assert _get(after, "threadline_breaker_state", provider="flaky", state="closed") == 0
    assert _get(after, "threadline_model_errors_total", agent="deploybot", model="flaky:m1") == 1


async def test_tokens_and_cost_by_agent_and_model() -> None:
    answers = iter(
        [
            ModelOutput(
                text=json.dumps(intent("add", a=1, b=2)),
                model="m",
                input_tokens=100,
                output_tokens=7,
                cost_usd=0.0025,
                cache_write_tokens=90,
                cache_write_1h_tokens=60,
            ),
            ModelOutput(
                text=json.dumps(intent("done_for_now", message="3")),
                model="m",
                input_tokens=120,
                output_tokens=5,
                cost_usd=0.0031,
                cache_read_tokens=90,
            ),
        ]
    )
    metrics = RuntimeMetrics()
    rt = Runtime(
        MemoryStore(),
        model=FunctionModel(lambda _: next(answers), model_id="acme:m"),
        observers=[metrics],
    )
    thread = await rt.launch(Agent("adder", tools=[add]), "1+2")
    assert thread.status.value == "done"
    calls = [e for e in thread.events if isinstance(e, ModelCall)]
    model = calls[0].model
    assert (
        metrics.value("threadline_tokens_total", agent="adder", model=model, direction="input")
        == 220
    )
    assert (
        metrics.value("threadline_tokens_total", agent="adder", model=model, direction="output")
        == 12
    )
    for direction in ("cache_read", "cache_write"):  # parts of the input above
        assert (
            metrics.value(
                "threadline_tokens_total", agent="adder", model=model, direction=direction
            )
            == 90
        )
    assert (  # of the writes, those made 1-hour entries (Anthropic's cache_ttl="1h")
        metrics.value(
            "threadline_tokens_total", agent="adder", model=model, direction="cache_write_1h"
        )
        == 60
    )
    assert metrics.value("threadline_cost_usd_total", agent="adder", model=model) == pytest.approx(
        0.0056
    )


def test_step_seconds_run_from_the_start_of_the_work_to_its_checkpoint() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    thread = Thread("t", "a", [UserMessage(seq=0, at=t0, text="go")])
    model_batch = [
        ModelCall(seq=1, at=t0 + timedelta(seconds=3), model="m", latency_ms=2000.0),
        ToolCall(
            seq=2, at=t0 + timedelta(seconds=3), call_id="c1", tool="pay", version="1", arguments={}
        ),
    ]
    thread.extend(model_batch)
    assert step_seconds(thread, model_batch) == 2.0  # the model call's own latency
    started = [ToolStarted(seq=3, at=t0 + timedelta(seconds=4), call_id="c1", idempotency_key="k")]
    thread.extend(started)
    assert step_seconds(thread, started) is None  # a checkpoint, not a step of work
    result = [ToolResult(seq=4, at=t0 + timedelta(seconds=9), call_id="c1", tool="pay", result=1)]
    thread.extend(result)
    assert step_seconds(thread, result) == 5.0  # from its tool_started checkpoint
    read_only = [
        ToolCall(
            seq=5,
            at=t0 + timedelta(seconds=10),
            call_id="c2",
            tool="get",
            version="1",
            arguments={},
        ),
    ]
    thread.extend(read_only)
    outcome = [ToolResult(seq=6, at=t0 + timedelta(seconds=10.5), call_id="c2", tool="get")]
    thread.extend(outcome)
    assert step_seconds(thread, outcome) == 0.5  # from the event it followed


async def test_lease_takeovers_and_expiries_are_counted(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'threads.db'}")
    model = ScriptedModel([intent("done_for_now", message="ok")])
    agent = Agent("quick", tools=[add])
    metrics = RuntimeMetrics()
    rt = Runtime(store, agents=[agent], model=model, observers=[metrics])
    thread = await rt.launch(agent, "hi", advance=False)
    [ghost] = await store.lease("ghost:1:x", ttl=0.05, thread_ids=[thread.id])
    assert ghost.taken_over_from is None  # the first lease replaces nobody
    await asyncio.sleep(0.2)  # the ghost never renews: its lease lapses

    stats = await Worker(rt, poll_interval=0.05, metrics=metrics).run(until_idle=True)
    assert stats.taken_over == 1 and stats.advanced == 1
    assert (await store.load(thread.id)).status.value == "done"
    assert metrics.value("threadline_lease_takeovers_total") == 1
    assert metrics.value("threadline_lease_expiries_total") == 0

    # a released lease is not a takeover
    second = await rt.launch(agent, "again", advance=False)
    model2 = ScriptedModel([intent("done_for_now", message="ok")])
    rt.model = model2
    [held] = await store.lease("w:1:y", ttl=30, thread_ids=[second.id])
    await store.release(held)
    await Worker(rt, poll_interval=0.05, metrics=metrics).run(until_idle=True)
    assert metrics.value("threadline_lease_takeovers_total") == 1
    await store.close()


async def test_tool_retries_are_counted_by_tool() -> None:
    @tool(retry=ToolRetry(max_attempts=3, base_delay=0.01))
    def fetch(key: str, ctx: ToolContext) -> str:
        """Fetch a key (busy twice)."""
        if ctx.attempt < 3:
            raise RetryableToolError("busy")
        return key

    metrics = RuntimeMetrics()
    model = ScriptedModel([intent("fetch", key="k"), intent("done_for_now", message="k")])
    rt = Runtime(MemoryStore(), model=model, observers=[metrics])
    thread = await rt.launch(Agent("fetcher", tools=[fetch]), "fetch k")
    assert thread.status.value == "done"
    assert metrics.value("threadline_tool_retries_total", agent="fetcher", tool="fetch") == 2
    assert metrics.value("threadline_tool_errors_total", agent="fetcher", tool="fetch") in (None, 0)
