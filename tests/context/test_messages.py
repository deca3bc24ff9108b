"""The messages format: the standard chat array with native tool calls, always a request
a chat-completions API accepts."""

from __future__ import annotations

import json

import pytest
from context_support import finished_calculator, render, tau_runs

from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool
from threadline.context.base import message_tokens
from threadline.context.messages import MESSAGES, Assembly, thread_from_openai, to_openai
from threadline.context.tokens import BPECounter
from threadline.testing import ScriptedModel, intent


async def test_messages_format_uses_native_tool_calls(calculator) -> None:
    agent, thread, _ = await finished_calculator(calculator, format="messages")
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
    run = tau_runs()[index]
    _, thread = thread_from_openai(run["traj"], agent="calculator")
    agent = Agent("calculator", context=ContextSettings(format="messages"))
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
        context=ContextSettings(
            format="messages", tokenizer="o200k_base", context_window=2_500, max_output_tokens=200
        ),
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


def test_the_assembly_resumes_from_a_checkpoint_and_weighs_what_it_emits() -> None:
    """`Assembly` (what the incremental renderer resumes) gives `assemble`'s messages at
    every prefix, leaves the fold unchanged when asked for a result, and a checkpoint
    taken two payloads back resumes to the same messages and weight."""
    counter = BPECounter("o200k_base")
    checked = 0
    for run in tau_runs()[:20]:
        events = list(thread_from_openai(run["traj"])[1].events)
        payloads = [MESSAGES.block(events, i, False, 800, counter) for i in range(len(events))]
        assembly = Assembly(lambda m: message_tokens((m,), counter))
        marks = []
        for k, payload in enumerate(payloads):
            marks.append(assembly.checkpoint())
            assembly.add(payload)
            messages, weight = assembly.weighed()
            assert messages == MESSAGES.assemble(payloads[: k + 1])
            assert weight == message_tokens(messages, counter)
            if k >= 2:  # back two payloads, then forward again: the same fold
                assembly.restore(marks[k - 1])
                assembly.add(payloads[k - 1])
                assembly.add(payload)
                assert assembly.weighed() == (messages, weight)
            checked += 1
    assert checked > 500
