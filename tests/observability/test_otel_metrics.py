"""observability/otel_metrics.py: a real run's events become the GenAI client metrics and
Threadline's own, read back through the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.models.base import ModelOutput
from threadline.observability.otel_metrics import OtelMetricsObserver
from threadline.testing import ScriptedModel, intent


@tool
def lookup(order: int) -> str:
    """Find an order."""
    if order == 0:
        raise LookupError("no order 0")
    return f"order {order}: shipped"


def _answer(text: dict[str, Any], tokens: tuple[int, int], **cache: int) -> ModelOutput:
    return ModelOutput(
        text=json.dumps(text),
        model="openai:gpt-4.1-mini",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=0.001,
        **cache,
    )


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


async def _run(answers: list[ModelOutput]) -> dict[str, list[Any]]:
    """The metrics' data points after a support thread given `answers` has finished."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    agent = Agent("support", tools=[lookup])
    runtime = Runtime(MemoryStore(), agents=[agent], model=ScriptedModel(answers))
    runtime.observers.append(OtelMetricsObserver(provider))
    thread = await runtime.launch(agent, "where is my order?")
    assert thread.status.value == "done"
    return _points(reader)


async def test_a_run_becomes_genai_and_threadline_metrics() -> None:
    points = await _run(
        [
            _answer(intent("lookup", order=0), (100, 10)),
            _answer(intent("lookup", order=7), (120, 12)),
            _answer(intent("done_for_now", message="shipped"), (150, 8)),
        ]
    )
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 370, "output": 30}
    assert "threadline.cache.token.usage" not in points  # no prompt cache used
    (usage,) = [p for p in points["gen_ai.client.token.usage"] if p.sum == 370]
    assert usage.attributes["gen_ai.provider.name"] == "openai"
    assert usage.attributes["gen_ai.request.model"] == "gpt-4.1-mini"
    assert usage.attributes["gen_ai.agent.name"] == "support"
    assert points["gen_ai.client.operation.duration"][0].count == 3
    assert round(points["threadline.cost"][0].value, 6) == 0.003
    calls = {p.attributes["gen_ai.tool.name"]: p.value for p in points["threadline.tool.calls"]}
    assert calls == {"lookup": 2, "done_for_now": 1}
    (errors,) = points["threadline.tool.errors"]
    assert (errors.value, errors.attributes["error.type"]) == (1, "LookupError")
    # One step per batch an advancer wrote (a read-only tool's outcome lands with its call).
    assert points["threadline.step.duration"][0].count == 3


async def test_prompt_cache_tokens_are_parts_of_the_input_by_what_the_cache_did() -> None:
    points = await _run(
        [
            _answer(
                intent("lookup", order=7),
                (1200, 10),
                cache_write_tokens=1000,
                cache_write_1h_tokens=800,
            ),
            _answer(intent("done_for_now", message="shipped"), (1300, 8), cache_read_tokens=1000),
        ]
    )
    cache = {
        p.attributes["threadline.token.type"]: (p.sum, p.count)
        for p in points["threadline.cache.token.usage"]
    }
    # cache_write_1h: of the writes, those made 1-hour entries (Anthropic's cache_ttl="1h").
    assert cache == {"cache_write": (1000, 1), "cache_write_1h": (800, 1), "cache_read": (1000, 1)}
    (write,) = [
        p
        for p in points["threadline.cache.token.usage"]
        if p.attributes["threadline.token.type"] == "cache_write_1h"
    ]
    assert write.attributes["gen_ai.request.model"] == "gpt-4.1-mini"
    assert write.attributes["gen_ai.agent.name"] == "support"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 2500, "output": 18}  # the cache's counts are not added again
