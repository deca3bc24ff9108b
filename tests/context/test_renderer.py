"""The renderer: built once per agent when it joins a runtime, one rendering per model call,
and the storage path never needs it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from context_support import finished_calculator, render

from threadline import Agent, ContextSettings, MemoryStore, Runtime, Status, tool
from threadline.context.base import tools_json
from threadline.context.messages import thread_from_openai
from threadline.context.renderer import Renderer
from threadline.errors import PromptError
from threadline.events import Thread, UserMessage
from threadline.models.base import Context, Message, ModelProfile, ToolSpec
from threadline.prompts import renderer_for
from threadline.testing import ScriptedModel, intent

AT = datetime(2024, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key} " * 150


def _answers() -> list[object]:
    return [intent("add", a=2, b=3), intent("done_for_now", message="5")]


async def test_each_model_call_renders_once(calculator: ModuleType) -> None:
    model = ScriptedModel(_answers())
    rt = Runtime(MemoryStore(), agents=[calculator.agent], model=model)
    renderer = rt.renderer("calculator")
    thread = await rt.launch("calculator", "what is 2 + 3?")
    assert thread.status is Status.DONE
    assert len(model.contexts) == 2
    assert renderer.renders == 2
    # The renderer's context carries the thread's model calls before it, as sent.
    assert [c.model_calls for c in model.contexts] == [0, 1]
    assert renderer.render(thread).context.model_calls == thread.state.model_calls == 2


async def test_a_custom_renderer_is_called_once_per_model_call() -> None:
    calls: list[int] = []

    def outline(agent: Agent, thread: Thread) -> Context:
        calls.append(len(thread))
        return Context(system=agent.name, messages=(Message("user", f"{len(thread)}"),))

    agent = Agent("outlined", tools=[lookup], renderer=outline)
    model = ScriptedModel([intent("lookup", key="a"), intent("done_for_now", message="ok")])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "go")
    assert thread.status is Status.DONE
    assert len(calls) == len(model.contexts) == 2
    # Its contexts say 0; the runtime sends a copy with the thread's model calls.
    assert [c.model_calls for c in model.contexts] == [0, 1]


async def test_compaction_and_the_context_come_from_one_rendering() -> None:
    agent = Agent(
        "compacting",
        tools=[lookup],
        instructions="Look things up.",
        context=ContextSettings(
            tokenizer="o200k_base", context_window=2_500, max_output_tokens=200
        ),
    )
    answers: list[object] = [intent("lookup", key=f"k{i}") for i in range(6)]
    answers.append(intent("done_for_now", message="done"))
    model = ScriptedModel(answers)
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look up k0 to k5")
    assert thread.status is Status.DONE
    compactions = [e for e in thread.events if e.kind == "compacted"]
    assert compactions
    assert rt.renderer(agent.name).renders == len(model.contexts)
    # The call right after a compaction was sent the summary it stored.
    seqs = [e.seq for e in thread.events if e.kind == "model_call"]
    for c in compactions:
        index = next(n for n, s in enumerate(seqs) if s > c.seq)
        assert (
            model.contexts[index]
            .messages[0]
            .content.startswith(f"<summary events={c.from_seq}-{c.to_seq}>\n{c.summary}")
        )


def test_prepare_returns_the_events_to_store_and_the_context() -> None:
    renderer = Renderer(
        name="tiny",
        instructions="You add numbers. " * 200,
        settings=ContextSettings(tokenizer="o200k_base", context_window=600, max_output_tokens=100),
    )
    thread = Thread("t", "tiny", [UserMessage(seq=0, at=AT, text="1+1")])
    prepared = asyncio.run(renderer.prepare(thread, None, AT))
    assert prepared.context is None
    assert [e.kind for e in prepared.events] == ["token_budget_exceeded", "escalated"]
    assert [e.seq for e in prepared.events] == [1, 2]
    roomy = Renderer(name="roomy", instructions="Add.", settings=ContextSettings())
    prepared = asyncio.run(roomy.prepare(thread, None, AT))
    assert prepared.events == [] and prepared.context is not None
    assert prepared.context.messages[0].content == "<user>1+1"
    assert roomy.renders == 1


def test_a_missing_prompt_fails_when_the_agent_joins(tmp_path: Path) -> None:
    agent = Agent("broken", prompt=str(tmp_path / "nope.md.j2"))
    with pytest.raises(PromptError, match="cannot be read"):
        Runtime(MemoryStore(), agents=[agent])
    rt = Runtime(MemoryStore())
    with pytest.raises(PromptError, match="cannot be read"):
        rt.add_agent(agent)
    assert "broken" not in rt.agents


async def test_a_good_prompt_launches(tmp_path: Path) -> None:
    path = tmp_path / "p.md.j2"
    path.write_text("---\nname: greeter\nversion: 2\n---\nGreet {{ agent }}.")
    agent = Agent("greeter", prompt=str(path))
    model = ScriptedModel([intent("done_for_now", message="hi")])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "hello")
    assert thread.status is Status.DONE
    assert model.contexts[0].system.startswith("Greet greeter.")
    assert model.contexts[0].prompt_name == "greeter" and model.contexts[0].prompt_version == "2"


async def test_appending_never_touches_the_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.md.j2"
    path.write_text("Help {{ who }}.")  # `who` is supplied by nobody: rendering fails
    agent = Agent("helper", prompt=str(path))
    store = MemoryStore()
    rt = Runtime(store, agents=[agent], model=ScriptedModel([]))
    path.unlink()  # loaded at start: the file is not read again

    def no_prompt(*args: object, **kwargs: object) -> None:
        raise AssertionError("the storage path rendered or loaded a prompt")

    monkeypatch.setattr("threadline.prompts.Prompt.render", no_prompt)
    monkeypatch.setattr("threadline.prompts.Prompt.load", no_prompt)
    thread = await rt.launch(agent, "my key is sk-proj-" + "a1" * 12, advance=False)
    stored = await store.load(thread.id)
    assert [e.kind for e in stored.events] == ["user_message"]
    assert "[REDACTED]" in stored.events[0].text  # type: ignore[union-attr]
    monkeypatch.undo()
    thread = await rt.advance(thread.id)
    assert thread.status is Status.ESCALATED
    assert "'who' is undefined" in thread.events[-1].reason  # type: ignore[union-attr]


async def test_by_default_the_backend_sends_the_tools_natively(calculator) -> None:
    _, thread, model = await finished_calculator(calculator)
    second = model.contexts[1]
    assert [t.name for t in second.tools] == [
        "add",
        "subtract",
        "multiply",
        "divide",
        "request_more_information",
        "done_for_now",
    ]
    assert "## Tools" not in second.system and "calling exactly one of the tools" in second.system
    assert second.messages[0].content.startswith("<user>what is 2 + 3?\n<add>")
    rendered = render(calculator.agent, thread)
    assert rendered.sections["tools"] > 100  # the native definitions are budgeted


async def test_model_calls_record_the_prompt_name_version_and_hash(calculator) -> None:
    agent, thread, _ = await finished_calculator(calculator)
    calls = [e for e in thread.events if e.kind == "model_call"]
    prompt_file = ROOT / "examples" / "calculator" / "prompt.md.j2"
    import hashlib

    digest = hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    assert {(c.prompt_name, c.prompt_version, c.prompt_hash) for c in calls} == {
        ("calculator", "1.0.0", digest)
    }


async def test_inline_instructions_are_hashed_too() -> None:
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    agent = Agent("pinger", tools=[ping], instructions="Ping once.")
    model = ScriptedModel([intent("done_for_now", message="ok")])
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "go")
    call = next(e for e in thread.events if e.kind == "model_call")
    assert call.prompt_name == "pinger" and call.prompt_hash and len(call.prompt_hash) == 64


async def test_a_user_renderer_replaces_the_default(calculator) -> None:
    def mine(agent: Agent, thread) -> Context:
        return Context(system="custom", messages=(Message("user", f"{len(thread)} events"),))

    agent = Agent("calc2", tools=[calculator.add], renderer=mine)
    model = ScriptedModel([intent("done_for_now", message="ok")])
    await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "hi")
    assert model.contexts[0].system == "custom"
    assert model.contexts[0].messages[0].content == "1 events"


def test_rendering_is_pure_and_cached(calculator) -> None:
    system, thread = thread_from_openai(
        [
            {"role": "user", "content": "add 1 and 2"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "x1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "x1", "name": "add", "content": "3"},
        ],
        agent="calculator",
    )
    renderer = renderer_for(calculator.agent)
    first = renderer.render(thread)
    second = renderer.render(thread)
    assert first.context == second.context
    assert first.sections == second.sections


async def test_native_tools_are_counted_as_the_bound_model_writes_them(
    calculator: ModuleType,
) -> None:
    """A backend without a native tool API (the local model, OpenAI-compatible JSON modes)
    writes the tools as signatures into its system text: the budget, `render` and
    `profile` count that text, not the JSON definitions it never sends."""

    def signatures(tools: Sequence[ToolSpec]) -> str:
        return "Tools:\n" + "\n".join(
            f"- {t.name}({', '.join(t.parameters['properties'])})" for t in tools
        )

    writes = ScriptedModel([], profile=ModelProfile(context_window=8_000, tools_text=signatures))
    native = ScriptedModel([], profile=ModelProfile(context_window=8_000))
    _, thread, _ = await finished_calculator(calculator)
    renderer = renderer_for(calculator.agent)
    renderer.bind(native)
    as_json = renderer.render(thread)
    renderer.bind(writes)
    as_written = renderer.render(thread)
    tools = as_written.context.tools
    assert tools and tools == as_json.context.tools  # still sent as Context.tools
    assert as_written.sections["tools"] == renderer.count_text(signatures(tools))
    assert as_json.sections["tools"] == renderer.count_text(tools_json(tools))
    saved = as_json.sections["tools"] - as_written.sections["tools"]
    assert saved > 0
    assert as_written.context.input_tokens == as_json.context.input_tokens - saved
    renderer.bind(native)  # rebinding counts the JSON again (nothing cached across)
    assert renderer.render(thread).sections["tools"] == as_json.sections["tools"]
