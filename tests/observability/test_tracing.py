"""GenAI spans from a real run, captured with the SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from threadline import Agent, Runtime, tool
from threadline.models.base import Context
from threadline.observability.tracing import TracingObserver, thread_trace_id
from threadline.stores import MemoryStore
from threadline.testing import FunctionModel, intent


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


AGENT = Agent("adder", tools=[add])


def _answer(context: Context) -> Any:
    text = "\n".join(m.content for m in context.messages)
    if "<add" in text and "5" in text.rsplit("<add", 1)[1]:
        return intent("done_for_now", message="5")
    return intent("add", a=2, b=3)


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_a_run_produces_the_genai_span_tree() -> None:
    provider, exporter = _provider()
    store = MemoryStore()
    rt = Runtime(
        store,
        model=FunctionModel(_answer, model_id="script"),
        observers=[TracingObserver(provider)],
    )
    thread = await rt.launch(AGENT, "add 2 and 3")
    spans = exporter.get_finished_spans()
    assert spans
    assert {s.context.trace_id for s in spans} == {thread_trace_id(thread.id)}
    for s in spans:
        assert s.attributes is not None
        assert s.attributes["threadline.thread_id"] == thread.id
        assert isinstance(s.attributes["seq"], int)
    chats = [s for s in spans if s.name == "chat script"]
    model_calls = [e for e in thread.events if e.kind == "model_call"]
    assert len(chats) == len(model_calls) >= 1
    for chat in chats:
        attrs = chat.attributes or {}
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "script"
        assert "gen_ai.usage.input_tokens" in attrs and "gen_ai.usage.output_tokens" in attrs
        assert attrs["gen_ai.response.finish_reasons"]
        assert chat.parent is not None and chat.parent.span_id in {
            s.context.span_id for s in spans if s.name == "advance adder"
        }
    tools = [s for s in spans if s.name == "execute_tool add"]
    results = [
        e for e in thread.events if e.kind == "tool_result" and getattr(e, "tool", "") == "add"
    ]
    assert len(tools) == len(results) == 1
    assert (tools[0].attributes or {})["gen_ai.tool.name"] == "add"
    assert (tools[0].attributes or {})["gen_ai.tool.call.id"] == results[0].call_id  # type: ignore[attr-defined]


async def test_another_runtime_continues_the_same_trace() -> None:
    store = MemoryStore()
    p1, e1 = _provider()
    p2, e2 = _provider()
    first = Runtime(
        store, model=FunctionModel(_answer, model_id="script"), observers=[TracingObserver(p1)]
    )
    thread = await first.launch(AGENT, "add 2 and 3")
    second = Runtime(
        store, model=FunctionModel(_answer, model_id="script"), observers=[TracingObserver(p2)]
    )
    await second.message(thread.id, "again")
    ids1 = {s.context.trace_id for s in e1.get_finished_spans()}
    ids2 = {s.context.trace_id for s in e2.get_finished_spans()}
    assert ids1 == ids2 == {thread_trace_id(thread.id)}
