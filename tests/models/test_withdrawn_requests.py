"""The request a backend sends for a resumed thread whose calls a cancel withdrew: every
tool call is paired with a result saying it was not run (the Anthropic API rejects a
`tool_use` without a `tool_result`; chat completions a `tool_calls` message without its
`tool` messages). Before, the pairing held too, but each result read "(no result)".
Built by the real SDKs, recorded at the HTTP transport (recorded.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from recorded import Recorded, anthropic_message, openai_completion

from threadline.models.anthropic import AnthropicModel
from threadline.models.openai import OpenAIModel
from withdrawn_support import cancelled_then_resumed, wire_agent

NOT_RUN = "not run: the thread was cancelled"


def _anthropic_pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(call id, result) of every tool_use, each checked to be answered by a tool_result
    at the start of the next message, as the Messages API requires."""
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        blocks = m["content"] if m["role"] == "assistant" else []
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if not uses:
            continue
        answer = messages[i + 1]
        results = answer["content"][: len(uses)]
        assert answer["role"] == "user"
        assert [b["type"] for b in results] == ["tool_result"] * len(uses)
        assert sorted(b["tool_use_id"] for b in results) == sorted(uses)
        pairs += [(b["tool_use_id"], b["content"]) for b in results]
    return pairs


def _openai_pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(call id, result) of every tool call, each checked to be answered by `tool` messages
    right after its assistant message, as chat completions require."""
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        calls = [c["id"] for c in m.get("tool_calls") or ()]
        answers = messages[i + 1 : i + 1 + len(calls)]
        assert [a["role"] for a in answers] == ["tool"] * len(calls)
        assert sorted(a["tool_call_id"] for a in answers) == sorted(calls)
        pairs += [(a["tool_call_id"], a["content"]) for a in answers]
    return pairs


WIRES = [("wire", {"amount": 5}), ("wire", {"amount": 7})]
STOP = [("done_for_now", {"message": "stopped"})]
"""The model's answers: two wires (both wait for approval), then, after the resume, the end."""


def _anthropic() -> tuple[AnthropicModel, Recorded]:
    recorded = Recorded([anthropic_message(tool_uses=WIRES), anthropic_message(tool_uses=STOP)])
    model = AnthropicModel(
        "claude-sonnet-4-6", api_key="sk-ant-test", http_client=recorded.client()
    )
    return model, recorded


def _openai() -> tuple[OpenAIModel, Recorded]:
    def calls(answer: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
        return [(name, json.dumps(arguments)) for name, arguments in answer]

    replies = [
        openai_completion(tool_calls=calls(WIRES)),
        openai_completion(tool_calls=calls(STOP)),
    ]
    recorded = Recorded(list(replies))
    model = OpenAIModel(
        "gpt-4.1-mini",
        api_key="sk-test",
        base_url="https://api.openai.com/v1",
        http_client=recorded.client(),
    )
    return model, recorded


async def test_anthropic_pairs_each_withdrawn_tool_use_with_a_not_run_result() -> None:
    model, recorded = _anthropic()
    _, withdrawn = await cancelled_then_resumed(wire_agent("messages"), model)
    resumed = recorded.bodies[-1]["messages"]  # the request after the resume
    assert _anthropic_pairs(resumed) == [(call, NOT_RUN) for call in withdrawn]


async def test_openai_pairs_each_withdrawn_tool_call_with_a_not_run_result() -> None:
    model, recorded = _openai()
    _, withdrawn = await cancelled_then_resumed(wire_agent("messages"), model)
    resumed = recorded.bodies[-1]["messages"]  # the request after the resume
    assert _openai_pairs(resumed) == [(call, NOT_RUN) for call in withdrawn]


@pytest.mark.parametrize("backend", [_anthropic, _openai])
async def test_the_compact_format_sends_a_not_run_line_for_each_withdrawn_call(
    backend: Callable[[], tuple[AnthropicModel | OpenAIModel, Recorded]],
) -> None:
    """Compact history is one user text, with no native call in it left unanswered."""
    model, recorded = backend()
    _, withdrawn = await cancelled_then_resumed(wire_agent("compact"), model)
    resumed = recorded.bodies[-1]["messages"]  # the request after the resume
    history = [m for m in resumed if m["role"] != "system"]
    assert len(history) == 1 and history[0]["role"] == "user"
    text = json.dumps(history[0]["content"], ensure_ascii=False)
    for call in withdrawn:
        assert f"<not_run id={call}>the thread was cancelled" in text
