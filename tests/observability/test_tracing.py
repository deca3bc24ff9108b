"""GenAI spans from a real run, captured with the SDK's in-memory exporter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from threadline import Agent, Runtime, tool
from threadline.events import Status
from threadline.models.base import Context, ModelOutput
from threadline.observability.propagation import parse_traceparent, trace_parent_of
from threadline.observability.tracing import TracingObserver, thread_trace_id
from threadline.stores import MemoryStore, SQLiteStore
from threadline.testing import FunctionModel, ScriptedModel, intent
from threadline.worker import Worker


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
        assert "gen_ai.usage.cache_read.input_tokens" not in attrs  # no prompt cache used
        assert "threadline.usage.cache_creation_1h.input_tokens" not in attrs
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


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@tool(side_effects=True, approval="always")
def transfer(amount: int, note: str) -> str:
    """Move money (a person approves every transfer)."""
    return f"moved {amount}"


BANK = Agent("bank", tools=[transfer])


async def test_a_launch_traceparent_is_continued_by_another_worker(tmp_path: Path) -> None:
    """Launched under a caller's span in one runtime, approved and finished by a `Worker`
    of another runtime (another provider): every span is in the caller's trace."""
    model = ScriptedModel(
        [intent("transfer", amount=5, note="rent"), intent("done_for_now", message="sent")]
    )
    db = f"sqlite:///{tmp_path / 'threads.db'}"
    p1, e1 = _provider()
    first = Runtime(
        SQLiteStore.from_url(db), agents=[BANK], model=model, observers=[TracingObserver(p1)]
    )
    thread = await first.launch(BANK, "pay the rent", metadata={"traceparent": TRACEPARENT})
    assert thread.status == Status.AWAITING_APPROVAL
    call_id = next(e.call_id for e in thread.events if e.kind == "approval_requested")
    await first.approve(thread.id, call_id, by="ops")
    await first.store.close()

    p2, e2 = _provider()
    second = Runtime(
        SQLiteStore.from_url(db), agents=[BANK], model=model, observers=[TracingObserver(p2)]
    )
    stats = await Worker(second, poll_interval=0.05).run(until_idle=True)
    assert stats.advanced == 1
    done = await second.store.load(thread.id)
    assert done.status == Status.DONE
    await second.store.close()

    parent = parse_traceparent(TRACEPARENT)
    assert parent is not None
    before, after = e1.get_finished_spans(), e2.get_finished_spans()
    assert before and any(s.name == "execute_tool transfer" for s in after)
    assert {s.context.trace_id for s in (*before, *after)} == {parent.trace_id}
    for span in (*before, *after):
        if span.name == "advance bank":
            assert span.parent is not None and span.parent.span_id == parent.span_id
    # without a traceparent the trace id is the thread's own
    other = await Runtime(MemoryStore(), model=model, observers=[TracingObserver(p1)]).launch(
        BANK, "pay", advance=False
    )
    assert trace_parent_of(other.id, other.metadata).trace_id == thread_trace_id(other.id)


async def test_content_is_off_by_default_and_redacted_when_on() -> None:
    key = "sk-proj-" + "Q7" * 14

    def answer(context: Context) -> Any:
        text = "\n".join(m.content for m in context.messages)
        if "<add" in text:
            return intent("done_for_now", message=f"done, key {key}")
        return intent("add", a=2, b=3)

    spans = {}
    for content in (False, True):
        provider, exporter = _provider()
        rt = Runtime(
            MemoryStore(),
            model=FunctionModel(answer, model_id="openai:gpt-test"),
            observers=[TracingObserver(provider, content=content)],
        )
        await rt.launch(AGENT, f"add 2 and 3, my key is {key}")
        spans[content] = exporter.get_finished_spans()

    for span in spans[False]:
        attrs = dict(span.attributes or {})
        assert not [k for k in attrs if k.endswith(("messages", ".arguments", ".result"))]
    chats = [s for s in spans[True] if s.name == "chat gpt-test"]
    assert chats and all((s.attributes or {})["gen_ai.provider.name"] == "openai" for s in chats)
    first_in = json.loads(str((chats[0].attributes or {})["gen_ai.input.messages"]))
    assert first_in[0]["role"] == "user"
    assert "add 2 and 3" in first_in[0]["parts"][0]["content"]
    recorded = " ".join(str(v) for s in spans[True] for v in (s.attributes or {}).values())
    assert key not in recorded and "[REDACTED" in recorded
    last_out = json.loads(str((chats[-1].attributes or {})["gen_ai.output.messages"]))
    assert (
        last_out[0]["role"] == "assistant" and "done_for_now" in last_out[0]["parts"][0]["content"]
    )
    tool = next(s for s in spans[True] if s.name == "execute_tool add")
    assert json.loads(str((tool.attributes or {})["gen_ai.tool.call.arguments"])) == {
        "a": 2,
        "b": 3,
    }
    assert (tool.attributes or {})["gen_ai.tool.call.result"] == "5"


async def test_prompt_cache_usage_is_on_the_chat_span() -> None:
    provider, exporter = _provider()
    cached = ModelOutput(
        text=json.dumps(intent("done_for_now", message="5")),
        input_tokens=1200,
        output_tokens=5,
        cache_read_tokens=1000,
        cache_write_tokens=150,
        cache_write_1h_tokens=100,
    )
    rt = Runtime(
        MemoryStore(),
        model=FunctionModel(lambda _: cached, model_id="script"),
        observers=[TracingObserver(provider)],
    )
    await rt.launch(AGENT, "add 2 and 3")
    (chat,) = [s for s in exporter.get_finished_spans() if s.name == "chat script"]
    attrs = chat.attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 150
    # Of those writes, the 1-hour entries (Anthropic's cache_ttl="1h"), priced apart.
    assert attrs["threadline.usage.cache_creation_1h.input_tokens"] == 100
