"""Renderers: the compact form, the chat message array, prompts recorded, user renderers."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.context.messages import thread_from_openai, to_openai
from threadline.context.render import COMPACT, compact_block, render
from threadline.context.tokens import BPECounter
from threadline.models.base import Context, Message, ToolSpec
from threadline.testing import ScriptedModel, intent

ROOT = Path(__file__).resolve().parents[2]
TAU = ROOT.parent / "shared" / "data" / "tau-bench-airline"


async def _finished_calculator(calculator: ModuleType, **options: object) -> tuple:
    agent = calculator.agent
    if options:
        agent = Agent(
            "calculator",
            tools=[calculator.add, calculator.divide],
            prompt=agent.prompt,
            options=dict(options),
        )
    model = ScriptedModel([intent("add", a=2, b=3), intent("done_for_now", message="5")])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent.name, "what is 2 + 3?")
    return agent, thread, model


async def test_compact_form_is_one_user_message_of_tagged_blocks(calculator) -> None:
    agent, thread, model = await _finished_calculator(calculator, native_tools=False)
    second = model.contexts[1]
    assert [m.role for m in second.messages] == ["user"]
    assert second.messages[0].content == (
        "<user>what is 2 + 3?</user>\n<add>\na: 2.0\nb: 3.0\n</add>\n<add_result>5.0</add_result>"
    )
    assert "add: Add two numbers." in second.system
    assert '{"intent": <tool name>, "arguments": {...}}' in second.system
    assert second.input_tokens and second.input_tokens > 50
    # The tools are in the system text; none is sent twice as a native definition.
    assert second.tools == () and second.output_schema["oneOf"]


async def test_by_default_the_backend_sends_the_tools_natively(calculator) -> None:
    _, thread, model = await _finished_calculator(calculator)
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
    assert second.messages[0].content.startswith("<user>what is 2 + 3?</user>\n<add>")
    rendered = render(calculator.agent, thread)
    assert rendered.sections["tools"] > 100  # the native definitions are budgeted


async def test_model_calls_record_the_prompt_name_version_and_hash(calculator) -> None:
    agent, thread, _ = await _finished_calculator(calculator)
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


async def test_call_ids_appear_only_when_a_result_is_not_next_to_its_call(calculator) -> None:
    model = ScriptedModel([intent("divide", a=9, b=3), intent("done_for_now", message="3")])
    rt = Runtime(MemoryStore(), agents=[calculator.agent], model=model)
    thread = await rt.launch("calculator", "9/3")
    call = next(e for e in thread.events if e.kind == "tool_call")
    thread = await rt.approve(thread.id, call.call_id, by="alice")
    await rt.advance(thread.id)
    text = model.contexts[1].messages[0].content
    assert f"<divide id={call.call_id}>" in text
    assert f"<approved id={call.call_id} by=alice/>" in text
    assert f"<divide_result id={call.call_id}>3.0</divide_result>" in text


async def test_messages_format_uses_native_tool_calls(calculator) -> None:
    agent, thread, _ = await _finished_calculator(calculator, context_format="messages")
    # Re-render the finished thread's prefix as the second call saw it.
    ctx = render(agent, thread, "messages").context
    roles = [m.role for m in ctx.messages]
    assert roles[:3] == ["user", "assistant", "tool"]
    assistant = ctx.messages[1]
    assert assistant.tool_calls[0].name == "add"
    assert json.loads(assistant.tool_calls[0].arguments) == {"a": 2.0, "b": 3.0}
    assert ctx.messages[2].tool_call_id == assistant.tool_calls[0].id
    assert "## Tools" not in ctx.system  # tools travel natively in this format
    assert [t.name for t in ctx.tools] == [
        "add",
        "divide",
        "request_more_information",
        "done_for_now",
    ]
    body = to_openai(ctx.system, ctx.messages)
    assert body[2]["tool_calls"][0]["function"]["name"] == "add"


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
    first = render(calculator.agent, thread)
    second = render(calculator.agent, thread)
    assert first.context == second.context
    assert first.sections == second.sections


def _tau_runs() -> list[dict]:
    path = TAU / "trajectories-gpt-4o.json"
    if not path.is_file():
        pytest.skip(f"shared data absent: {path} (see ../shared/data/README.md)")
    return json.loads(path.read_text())


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


@pytest.mark.parametrize("index", [0, 7, 42, 133])
def test_compact_tau_run_keeps_every_call_argument_and_result(index: int) -> None:
    run = _tau_runs()[index]
    tools = json.loads((TAU / "tools.json").read_text())
    specs = [
        ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in tools
    ]
    system, thread = thread_from_openai(run["traj"])
    body = "\n".join(
        b for b in (compact_block(thread.events, i) for i in range(len(thread.events))) if b
    )
    sys_text = COMPACT.system(system, specs)
    assert system in sys_text
    for t in tools:
        fn = t["function"]
        assert f"{fn['name']}: {' '.join(fn['description'].split())}" in sys_text
        for name, prop in fn["parameters"].get("properties", {}).items():
            assert name in sys_text
            if "description" in prop:
                assert " ".join(prop["description"].split()) in sys_text
    checked = 0
    for message in run["traj"][1:]:
        if message["role"] in ("user",) or (
            message["role"] == "assistant" and message.get("content")
        ):
            assert message["content"] in body
        for call in message.get("tool_calls") or ():
            assert f"<{call['function']['name']}" in body
            for leaf in _leaves(json.loads(call["function"]["arguments"])):
                assert _spelled(leaf) in body, leaf
                checked += 1
        if message["role"] == "tool":
            try:
                result = json.loads(message["content"])
            except ValueError:
                result = message["content"]
            for leaf in _leaves(result):
                assert _spelled(leaf) in body, leaf
                checked += 1
    assert checked > 5
    counter = BPECounter("o200k_base")
    compact = counter.count(sys_text) + counter.count(body)
    baseline = counter.count(
        json.dumps(
            {"model": "gpt-4o", "messages": run["traj"], "tools": tools},
            separators=(",", ":"),
            ensure_ascii=False,
        )
    )
    assert compact < baseline


def _spelled(leaf: object) -> str:
    if isinstance(leaf, str):
        return leaf.split("\n")[0]
    return json.dumps(leaf)


def _chat_api_accepts(messages) -> None:
    """The ordering rules chat-completions APIs enforce (else: HTTP 400)."""
    open_ids: list[str] = []
    previous = None
    for m in messages:
        if m.role == "tool":
            assert m.tool_call_id in open_ids, f"orphan tool message {m.tool_call_id}"
            open_ids.remove(m.tool_call_id)
        else:
            assert not open_ids, f"{m.role} message before the results of {open_ids}"
            if m.role == "assistant" and m.tool_calls:
                open_ids = [c.id for c in m.tool_calls]
        if previous is not None:
            assert not (previous.role == m.role == "user"), "two user messages in a row"
        previous = m
    assert not open_ids


@pytest.mark.parametrize("index", [0, 7, 42, 133])
def test_messages_format_of_recorded_runs_is_a_valid_chat_request(index: int) -> None:
    run = _tau_runs()[index]
    _, thread = thread_from_openai(run["traj"], agent="calculator")
    agent = Agent("calculator", options={"context_format": "messages"})
    ctx = render(agent, thread).context
    _chat_api_accepts(ctx.messages)
    texts = [m.content for m in ctx.messages]
    for message in run["traj"][1:]:
        if message["role"] == "user":
            assert message["content"] in texts


async def test_messages_format_stays_valid_after_compaction_and_questions() -> None:
    @tool
    def lookup(key: str) -> str:
        """Look up."""
        return f"value of {key} " * 150

    agent = Agent(
        "m",
        tools=[lookup],
        instructions="Look things up.",
        options={
            "context_format": "messages",
            "tokenizer": "o200k_base",
            "context_window": 2_500,
            "max_output_tokens": 200,
        },
    )
    answers = [
        intent("lookup", key="a"),
        intent("request_more_information", message="which key next?"),
    ]
    answers += [intent("lookup", key=f"k{i}") for i in range(6)]
    answers.append(intent("done_for_now", message="done"))
    model = ScriptedModel(answers)
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look up a")
    thread = await rt.respond(thread.id, thread.state.human_request, "all the k keys")
    thread = await rt.advance(thread.id)
    assert thread.status.value == "done"
    assert any(e.kind == "compacted" for e in thread.events)
    for ctx in model.contexts:
        _chat_api_accepts(ctx.messages)
    asked = model.contexts[2].messages
    assert any(m.role == "tool" and m.content == "all the k keys" for m in asked)
