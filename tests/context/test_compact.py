"""The compact format: one user message of tagged blocks, ids only where needed, and no
argument or result lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from context_support import TAU, finished_calculator, tau_runs

from threadline import MemoryStore, Runtime
from threadline.context.compact import COMPACT, call_settled, compact_block, outcome_follows
from threadline.context.messages import thread_from_openai
from threadline.context.tokens import BPECounter
from threadline.events import (
    Done,
    GuardVerdict,
    ModelCall,
    ToolCall,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from threadline.models.base import ToolSpec
from threadline.testing import ScriptedModel, intent


async def test_compact_form_is_one_user_message_of_tagged_blocks(calculator) -> None:
    agent, thread, model = await finished_calculator(calculator, native_tools=False)
    second = model.contexts[1]
    assert [m.role for m in second.messages] == ["user"]
    assert second.messages[0].content == (
        "<user>what is 2 + 3?\n<add>\na: 2\nb: 3\n<add_result>5.0"
    )
    assert "add: Add two numbers." in second.system
    assert '{"intent": <tool name>, "arguments": {...}}' in second.system
    assert second.input_tokens and second.input_tokens > 50
    # The tools are in the system text; none is sent twice as a native definition.
    assert second.tools == () and second.output_schema["oneOf"]


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
    assert text.endswith(f"<divide_result id={call.call_id}>3.0")


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
    run = tau_runs()[index]
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


def test_a_call_is_settled_once_what_follows_it_decides_its_block() -> None:
    """`call_settled`: a call's block (with or without its id) can change only while its
    outcome may still arrive right after it; the incremental renderer walks it again
    until then."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    call = ToolCall(seq=1, at=at, call_id="c1", tool="add", version="1", arguments={"a": 1})
    started = ToolStarted(seq=2, at=at, call_id="c1", idempotency_key="k")
    result = ToolResult(seq=3, at=at, call_id="c1", tool="add", result=1)
    events = [UserMessage(seq=0, at=at, text="add"), call]
    assert not call_settled(events, 1) and not outcome_follows(events, 1, "c1")
    events.append(started)
    assert not call_settled(events, 1)  # a start is between a call and its outcome
    events.append(result)
    assert call_settled(events, 1) and outcome_follows(events, 1, "c1")
    other = [UserMessage(seq=0, at=at, text="add"), call, ModelCall(seq=2, at=at, model="m")]
    assert call_settled(other, 1) and not outcome_follows(other, 1, "c1")  # never will


def test_the_format_block_is_compact_block_with_none_for_nothing() -> None:
    """`COMPACT.block` (the renderer's call) and `compact_block` (the public function) give
    the same blocks; where the model needs nothing, the format says None and the function
    ''."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    long = " ".join(f"word{n}" for n in range(400))
    events = [
        UserMessage(seq=0, at=at, text="add"),
        ModelCall(seq=1, at=at, model="m", output='{"intent": "add"}'),  # its call shows it
        ToolCall(seq=2, at=at, call_id="c1", tool="add", version="1", arguments={"a": 1}),
        GuardVerdict(seq=3, at=at, call_id="c1", tool="add", guard="g", verdict="allow"),
        ToolStarted(seq=4, at=at, call_id="c1", idempotency_key="k"),
        ToolResult(seq=5, at=at, call_id="c1", tool="add", result=long),
        Done(seq=6, at=at, message="1"),
    ]
    counter = BPECounter("o200k_base")
    nothing = [i for i in range(len(events)) if compact_block(events, i) == ""]
    assert nothing == [1, 3, 4, 6]
    for i in range(len(events)):
        for reduced in (False, True):
            block = compact_block(events, i, reduced=reduced, max_tokens=20, counter=counter)
            assert COMPACT.block(events, i, reduced, 20, counter) == (block or None)
    cut = COMPACT.block(events, 5, True, 20, counter)
    assert cut is not None and cut.startswith("<add_result>") and "word399" not in cut
