"""The budget: long threads fit, errors and results shrink first, compaction replays, and an
impossible budget escalates instead of sending an oversize request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from threadline import Agent, ContextSettings, MemoryStore, Runtime, Status, tool
from threadline.context.budget import ContextBudget
from threadline.context.compact import compact_block
from threadline.context.tokens import BPECounter
from threadline.errors import ConfigError, TokenBudgetError
from threadline.events import (
    InvalidOutput,
    ModelCall,
    Thread,
    ToolCall,
    ToolResult,
    UserMessage,
)
from threadline.models.base import ModelProfile
from threadline.prompts import renderer_for
from threadline.testing import ScriptedModel, intent

AT = datetime(2024, 1, 1, tzinfo=UTC)


@tool
def lookup(key: str) -> dict:
    """Look a record up."""
    return {"key": key, "rows": [{"id": i, "text": f"row {i} of {key} " * 8} for i in range(40)]}


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def _agent(name: str = "budgeted", **settings: object) -> Agent:
    return Agent(
        name,
        tools=[lookup, add],
        instructions="Work it out step by step.",
        context=ContextSettings(tokenizer="o200k_base", **settings),  # type: ignore[arg-type]
    )


def render(agent: Agent, thread: Thread):
    return renderer_for(agent).render(thread)


def long_thread(n_events: int, agent: str = "budgeted") -> Thread:
    thread = Thread("long", agent)
    thread.append(UserMessage(seq=0, at=AT, text="Add up the numbers as they come."))
    i = 0
    while thread.next_seq + 3 <= n_events:
        seq = thread.next_seq
        thread.append(ModelCall(seq=seq, at=AT, model="m", output="{}"))
        thread.append(
            ToolCall(
                seq=seq + 1,
                at=AT,
                call_id=f"c{seq}",
                tool="add",
                version="1",
                arguments={"a": i, "b": i + 1},
            )
        )
        thread.append(
            ToolResult(seq=seq + 2, at=AT, call_id=f"c{seq}", tool="add", result=2 * i + 1)
        )
        i += 1
    return thread


def test_a_10000_event_thread_fits_32k_and_keeps_the_newest_events_verbatim() -> None:
    agent = _agent(context_window=32_000)
    thread = long_thread(10_000)
    rendered = render(agent, thread)
    ctx = rendered.context
    counter = BPECounter("o200k_base")
    exact = counter.count(ctx.system) + sum(counter.count(m.content) for m in ctx.messages)
    assert exact <= 32_000 - ctx.max_output_tokens
    assert ctx.input_tokens is not None and exact <= ctx.input_tokens + 16
    body = ctx.messages[0].content
    newest = [compact_block(thread.events, i) for i in range(len(thread) - 12, len(thread))]
    assert body.endswith("\n".join(b for b in newest if b))
    assert rendered.compaction is not None
    lo, hi, summary = rendered.compaction
    assert lo == 0 and 1000 < hi < len(thread) - 12
    assert body.startswith(f"<summary events=0-{hi}>")
    assert "Add up the numbers as they come." in summary  # the first request survives


def test_resolved_errors_are_dropped_and_big_results_cut_before_compacting() -> None:
    agent = _agent(context_window=2_000, keep_recent=2, max_result_tokens=100)
    thread = Thread("t", agent.name)
    thread.append(UserMessage(seq=0, at=AT, text="look up k1"))
    thread.append(ModelCall(seq=1, at=AT, model="m", output="oops"))
    thread.append(InvalidOutput(seq=2, at=AT, reason="output is not valid JSON", output="oops"))
    thread.append(ModelCall(seq=3, at=AT, model="m", output="{}"))
    thread.append(
        ToolCall(seq=4, at=AT, call_id="c4", tool="lookup", version="1", arguments={"key": "k1"})
    )
    thread.append(ToolResult(seq=5, at=AT, call_id="c4", tool="lookup", result=lookup.fn("k1")))  # type: ignore[misc]
    thread.append(ModelCall(seq=6, at=AT, model="m", output="{}"))
    thread.append(
        ToolCall(seq=7, at=AT, call_id="c7", tool="add", version="1", arguments={"a": 1, "b": 2})
    )
    thread.append(ToolResult(seq=8, at=AT, call_id="c7", tool="add", result=3))
    full = render(_agent("unbounded", context_window=200_000), thread).context.messages[0]
    assert "output is not valid JSON" in full.content
    rendered = render(agent, thread)
    body = rendered.context.messages[0].content
    assert rendered.layout.level == 1 and rendered.compaction is None
    assert "output is not valid JSON" not in body  # resolved by the later tool result
    assert "[truncated: full result in event 5]" in body
    assert "row 0 of k1" in body and "row 39 of k1" not in body
    assert body.endswith("<add>\na: 1\nb: 2\n<add_result>3")


async def test_compaction_is_stored_and_the_thread_replays() -> None:
    agent = _agent(context_window=3_000, max_output_tokens=256, summary_tokens=300)
    answers = [intent("lookup", key=f"k{i}") for i in range(8)]
    answers.append(intent("done_for_now", message="looked everything up"))
    model = ScriptedModel(answers)
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look up k0 to k7")
    assert thread.status is Status.DONE
    compactions = [e for e in thread.events if e.kind == "compacted"]
    assert compactions, "the history outgrew the window, so it must have been compacted"
    assert all(c.from_seq == 0 and c.to_seq < c.seq for c in compactions)
    counter = BPECounter("o200k_base")
    for ctx in model.contexts:
        used = counter.count(ctx.system) + sum(counter.count(m.content) for m in ctx.messages)
        assert used <= 3_000 - 256
    last = model.contexts[-1].messages[0].content
    assert last.startswith(f"<summary events=0-{compactions[-1].to_seq}>")
    # Every event is still in the log, and the run replays exactly.
    assert [e.seq for e in thread.events] == list(range(len(thread)))
    replayed = await rt.replay(thread.id)
    assert len(replayed) == len(thread)
    # A render after the run needs no new compaction for the stored span.
    again = render(agent, (await rt.store.load(thread.id)))
    assert again.context.messages[0].content.startswith("<summary events=0-")


async def test_a_context_that_cannot_fit_escalates_and_never_calls_the_model() -> None:
    agent = Agent(
        "tiny",
        tools=[add],
        instructions="You add numbers. " * 200,
        context=ContextSettings(tokenizer="o200k_base", context_window=600, max_output_tokens=100),
    )
    model = ScriptedModel([intent("done_for_now", message="never")])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "1+1")
    assert model.contexts == []
    kinds = [e.kind for e in thread.events]
    assert kinds == ["user_message", "token_budget_exceeded", "escalated"]
    exceeded = thread.events[1]
    assert exceeded.needed > exceeded.available == 600  # type: ignore[union-attr]
    assert thread.status is Status.ESCALATED
    assert "token budget exceeded" in thread.events[2].reason  # type: ignore[union-attr]
    await rt.replay(thread.id)


async def test_a_newest_event_too_big_for_the_window_escalates() -> None:
    agent = _agent("small", context_window=1_500, max_output_tokens=100)
    model = ScriptedModel([intent("done_for_now", message="never")])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "word " * 3000)
    assert model.contexts == [] and thread.status is Status.ESCALATED
    assert thread.events[1].kind == "token_budget_exceeded"
    with pytest.raises(TokenBudgetError, match="newest event does not fit"):
        render(agent, Thread("t", agent.name, thread.events[:1]))
    await rt.replay(thread.id)


def test_budget_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        ContextBudget(window=0)
    with pytest.raises(ConfigError):
        ContextBudget(retrieved_share=1.5)
    budget = ContextSettings(context_window=8000, keep_recent=3).budget_for(None)
    assert (budget.window, budget.keep_recent) == (8000, 3)


async def test_a_pluggable_summariser_writes_the_stored_summary() -> None:
    from threadline.context.compaction import LLMSummariser
    from threadline.testing import FunctionModel

    seen: list[str] = []

    def summarise(context):
        seen.append(context.messages[0].content)
        return "The user wants k0..k7 looked up; several are done."

    agent = _agent(
        "summarised",
        context_window=3_000,
        max_output_tokens=256,
        summary_tokens=300,
        summariser=LLMSummariser(FunctionModel(summarise)),
    )
    answers = [intent("lookup", key=f"k{i}") for i in range(8)]
    answers.append(intent("done_for_now", message="done"))
    model = ScriptedModel(answers)
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look up k0 to k7")
    compactions = [e for e in thread.events if e.kind == "compacted"]
    assert compactions and all(
        c.summary == "The user wants k0..k7 looked up; several are done." for c in compactions
    )
    assert "<lookup>" in seen[0]  # the summariser saw the span in the compact form
    assert any("The user wants k0..k7" in c.messages[0].content for c in model.contexts)
    await rt.replay(thread.id)


class _SmallLocalModel:
    """Declares what models/local.py declares: its own tokenizer, a small window and an
    output cap."""

    model_id = "local:tiny.gguf"

    def __init__(self, answers: list[object]) -> None:
        self.inner = ScriptedModel(answers, model_id=self.model_id)
        self.contexts = self.inner.contexts
        self.profile = ModelProfile(
            context_window=1_200, max_output_tokens=100, tokenizer=self.count_tokens
        )

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + text.count("\n")

    async def request(self, context):
        return await self.inner.request(context)


async def test_the_budget_is_sized_for_the_model_that_answers() -> None:
    agent = Agent("unpinned", tools=[lookup], instructions="Look things up.")
    answers = [intent("lookup", key=f"k{i}") for i in range(5)]
    answers.append(intent("done_for_now", message="done"))
    model = _SmallLocalModel(answers)
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look up k0 to k4")
    assert thread.status is Status.DONE
    assert {c.max_output_tokens for c in model.contexts} == {100}
    for ctx in model.contexts:  # counted with the model's own tokenizer, within its window
        used = model.count_tokens(ctx.system) + sum(
            model.count_tokens(m.content) for m in ctx.messages
        )
        assert used <= 1_200 - 100
    last = model.contexts[-1].messages[0].content
    assert "[truncated: full result in event" in last  # 1,900-word results had to shrink
    await rt.replay(thread.id)
