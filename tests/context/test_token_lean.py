"""The token-lean default on the 200 recorded airline runs: for a hosted model the context
is smaller than the raw chat-completions body on every run, and drops nothing: every tool
definition, every user and assistant text, every call with its argument values and every
result fact of the raw body is in what the model is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from context_support import TAU, tau_runs

from threadline import Agent, Tool
from threadline.context.messages import thread_from_openai
from threadline.context.tokens import BPECounter
from threadline.models.base import Context, intent_envelope
from threadline.prompts import renderer_for

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from threadline.models.anthropic import AnthropicModel  # noqa: E402
from threadline.models.openai import OpenAIModel  # noqa: E402

COUNTER = BPECounter("o200k_base")
WRITES = {"book_reservation", "cancel_reservation", "send_certificate"}


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tools() -> list[dict[str, Any]]:
    return json.loads((TAU / "tools.json").read_text())  # type: ignore[no-any-return]


def _agent(policy: str, tools: list[dict[str, Any]]) -> Agent:
    """The airline agent as a user declares it: published schemas, validating, writes
    behind approvals, every context setting as shipped."""
    return Agent(
        "airline",
        tools=[
            Tool.from_json_schema(
                t["function"]["name"],
                t["function"]["parameters"],
                description=t["function"]["description"],
                side_effects=t["function"]["name"] in WRITES,
                approval="always" if t["function"]["name"] in WRITES else "never",
            )
            for t in tools
        ],
        instructions=policy,
    )


def _leaves(value: Any) -> Any:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _spelled(leaf: object) -> str:
    if isinstance(leaf, str):
        return leaf.split("\n")[0]
    return json.dumps(leaf)


def _sent_text(ctx: Context) -> str:
    return "\n".join([ctx.system, *(m.content for m in ctx.messages)])


def _check_run(run: dict[str, Any], text: str) -> int:
    """Assert every fact of the raw run is in `text`; return how many were checked."""
    checked = 0
    for message in run["traj"][1:]:
        if message["role"] == "user" or (message["role"] == "assistant" and message.get("content")):
            assert message["content"] in text
            checked += 1
        for call in message.get("tool_calls") or ():
            assert f"<{call['function']['name']}" in text
            for leaf in _leaves(json.loads(call["function"]["arguments"])):
                assert _spelled(leaf) in text, leaf
                checked += 1
        if message["role"] == "tool":
            try:
                result = json.loads(message["content"])
            except ValueError:
                result = message["content"]
            assert f"<{message['name']}_result" in text
            for leaf in _leaves(result):
                assert _spelled(leaf) in text, leaf
                checked += 1
    return checked


def test_the_default_for_a_hosted_model_drops_nothing_and_never_exceeds_the_raw_body() -> None:
    runs = tau_runs()
    tools = _tools()
    model = OpenAIModel("gpt-4o", api_key="test-never-sent")
    renderers: dict[str, Any] = {}
    checked = 0
    total_raw = total_sent = 0
    for n, run in enumerate(runs):
        policy, thread = thread_from_openai(run["traj"], thread_id=f"run{n}", agent="airline")
        if policy not in renderers:
            renderers[policy] = renderer_for(_agent(policy, tools))
            renderers[policy].bind(model)
        ctx = renderers[policy].render(thread).context
        text = _sent_text(ctx)
        # The tools: once, as signatures, with every name, description and argument.
        assert ctx.tools == () and ctx.tools_in_prompt
        assert policy.strip() in ctx.system
        for t in tools:
            fn = t["function"]
            assert f"{fn['name']}: {' '.join(fn['description'].split())}" in ctx.system
            for name, prop in fn["parameters"].get("properties", {}).items():
                assert name in ctx.system
                if "description" in prop:
                    assert " ".join(prop["description"].split()) in ctx.system
                for value in prop.get("enum", ()):
                    assert _spelled(value) in ctx.system  # enums as the notation writes them
        checked += _check_run(run, text)
        body, _ = model.request_body(ctx)
        raw = COUNTER.count(_dump({"model": "gpt-4o", "messages": run["traj"], "tools": tools}))
        sent = COUNTER.count(_dump(body))
        assert sent < raw, f"run {n}: {sent} tokens sent against {raw} in the raw body"
        total_raw += raw
        total_sent += sent
    assert checked > 10_000
    assert total_sent <= 0.70 * total_raw, total_sent / total_raw  # 0.699 measured


def test_hosted_backends_describe_the_tools_once_when_they_are_in_the_prompt() -> None:
    run = tau_runs()[0]
    policy, thread = thread_from_openai(run["traj"], agent="airline")
    agent = _agent(policy, _tools())
    renderer = renderer_for(agent)
    openai_model = OpenAIModel("gpt-4o", api_key="test-never-sent")
    renderer.bind(openai_model)
    ctx = renderer.render(thread).context
    envelope = intent_envelope(agent.output_schema())
    assert envelope["properties"]["intent"]["enum"] == [t.name for t in agent.visible_tools()]
    body, _ = openai_model.request_body(ctx)
    assert "tools" not in body and body["response_format"] == {"type": "json_object"}
    assert "book_reservation: " in body["messages"][0]["content"]  # the system text
    # The full union stays on the context: a grammar (local models) is built from it.
    assert ctx.output_schema == agent.output_schema()
    # Anthropic's default (intent mode): the signatures in the system text, and one forced
    # tool whose input is the envelope; its tools mode keeps native definitions; its json
    # mode gets the signatures and the envelope as text.
    claude = AnthropicModel("claude-sonnet-4-5", api_key="test-never-sent")
    renderer.bind(claude)
    body, _ = claude.request_body(renderer.render(thread).context)
    assert [t["input_schema"] for t in body["tools"]] == [envelope]
    assert body["tool_choice"] == {"type": "tool", "name": "next_step"}
    assert body["system"][0]["text"].count("book_reservation: ") == 1
    claude_tools = AnthropicModel("claude-sonnet-4-5", mode="tools", api_key="test-never-sent")
    renderer.bind(claude_tools)
    body, _ = claude_tools.request_body(renderer.render(thread).context)
    assert len(body["tools"]) == 16 and body["tool_choice"] == {"type": "any"}
    claude_json = AnthropicModel("claude-sonnet-4-5", mode="json", api_key="test-never-sent")
    renderer.bind(claude_json)
    body, _ = claude_json.request_body(renderer.render(thread).context)
    system = body["system"][0]["text"]
    assert "tools" not in body and json.dumps(envelope) in system
    assert system.count("book_reservation: ") == 1  # the signatures, once


def test_native_definitions_stay_for_local_servers_and_on_request() -> None:
    run = tau_runs()[0]
    policy, thread = thread_from_openai(run["traj"], agent="airline")
    agent = _agent(policy, _tools())
    local = OpenAIModel("smollm2", base_url="http://127.0.0.1:9/v1", server="llama-server")
    renderer = renderer_for(agent)
    renderer.bind(local)
    ctx = renderer.render(thread).context
    assert len(ctx.tools) == 16 and not ctx.tools_in_prompt
    # A JSON-mode local server gets the full schema (a grammar costs no prompt tokens).
    json_local = OpenAIModel(
        "smollm2", base_url="http://127.0.0.1:9/v1", server="llama-server", mode="json_schema"
    )
    forced = renderer_for(
        Agent(agent.name, tools=agent.tools, instructions=policy)  # as shipped
    )
    forced.bind(json_local)
    body, _ = json_local.request_body(forced.render(thread).context)
    assert body["response_format"]["json_schema"]["schema"]["anyOf"]
