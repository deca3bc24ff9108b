"""Hostile model outputs and tool results at a real Runtime on SQLite: each is one
`invalid_output` (or a tool error) written before anything else, and every accepted event
loads and renders (issue 10, items 1-5, 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadline import Agent, Runtime, Status, tool
from threadline.bounds import MAX_DEPTH, BoundsError, check_value, parse_json, stored_result
from threadline.events import RawToolCall
from threadline.models.base import ModelOutput
from threadline.prompts import renderer_for
from threadline.stores.sqlite import SQLiteStore
from threadline.testing import ScriptedModel, intent
from threadline.tools import ToolContext

received: list[Any] = []


@tool
def pay(amount: float, note: str = "") -> str:
    """Pay an amount."""
    received.append(amount)
    return "paid"


def _native(*calls: tuple[str | None, str, str]) -> ModelOutput:
    raw = tuple(RawToolCall(id=i, name=n, arguments=a) for i, n, a in calls)
    return ModelOutput(text="", tool_calls=raw, model="m", input_tokens=0, output_tokens=0)


async def _run(tmp_path: Path, answers: list[Any], tools: list[Any] | None = None) -> Any:
    received.clear()
    agent = Agent("hostile", tools=tools or [pay], max_consecutive_errors=2)
    store = SQLiteStore(tmp_path / "t.db")
    rt = Runtime(store, agents=[agent], model=ScriptedModel(answers))
    thread = await rt.launch(agent, "go")
    loaded = await store.load(thread.id)  # every accepted event loads...
    assert [e.kind for e in loaded.events] == [e.kind for e in thread.events]
    renderer_for(agent).render(loaded)  # ...and renders
    await store.close()
    return loaded


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "answer",
    [
        DEEP,
        json.dumps(intent("pay", amount=1, note="x")).replace('"x"', "[" * 230 + "]" * 230),
        _native(("c1", "pay", '{"amount": 1, "note": ' + "[" * 300 + "]" * 300 + "}")),
        _native(("c1", "pay", DEEP)),
        '{"intent": "pay", "arguments": {"amount": NaN}}',
        '{"intent": "pay", "arguments": {"amount": Infinity}}',
        '{"intent": "pay", "arguments": {"amount": 1e400}}',
        '{"intent": "pay", "arguments": {"amount": "NaN"}}',
        '{"intent": "pay", "arguments": {"amount": "-inf"}}',
    ],
    ids=[
        "deep-text",
        "deep-230",
        "deep-native-300",
        "deep-native",
        "nan",
        "inf",
        "1e400",
        "nan-string",
        "inf-string",
    ],
)
async def test_hostile_output_is_one_invalid_output_and_nothing_runs(
    tmp_path: Path, answer: Any
) -> None:
    thread = await _run(tmp_path, [answer, intent("done_for_now", message="ok")])
    kinds = [e.kind for e in thread.events]
    assert kinds[:3] == ["user_message", "model_call", "invalid_output"]
    assert thread.status is Status.DONE
    assert received == []


async def test_lone_surrogates_are_refused_or_stored_as_replacement_characters(
    tmp_path: Path,
) -> None:
    """An escaped lone surrogate in the JSON is invalid output; a raw one in the provider's
    text (which cannot be stored as UTF-8) is kept as U+FFFD, in the log and in the call."""
    escaped = _native(("c1", "pay", '{"amount": 1, "note": "a\\ud800b"}'))
    raw = _native(("c\ud800", "pay", '{"amount": 2, "note": "a\ud800b"}'))
    thread = await _run(tmp_path, [escaped, raw, intent("done_for_now", message="ok")])
    kinds = [e.kind for e in thread.events]
    assert kinds[1:3] == ["model_call", "invalid_output"]
    assert "surrogate" in thread.events[2].reason
    call = next(e for e in thread.events if e.kind == "tool_call")
    assert call.arguments == {"amount": 2, "note": "a\ufffdb"}
    assert "\ud800" not in call.call_id
    assert received == [2]


async def test_arguments_are_stored_as_the_model_wrote_them(tmp_path: Path) -> None:
    thread = await _run(tmp_path, [intent("pay", amount=100), intent("done_for_now", message="")])
    call = next(e for e in thread.events if e.kind == "tool_call")
    assert call.arguments == {"amount": 100}
    assert isinstance(call.arguments["amount"], int)


async def test_call_ids_and_idempotency_keys_are_unique_per_thread(tmp_path: Path) -> None:
    keys: list[str] = []

    @tool(side_effects=True, name="transfer")
    def transfer2(amount: int, ctx: ToolContext) -> str:
        """Move money."""
        keys.append(ctx.idempotency_key)
        return "ok"

    answers = [
        _native(("dup", "transfer", '{"amount": 1}'), ("dup", "transfer", '{"amount": 2}')),
        _native(("dup", "transfer", '{"amount": 3}')),
        _native(("x" * 60_000, "transfer", '{"amount": 4}')),
        intent("done_for_now", message="ok"),
    ]
    thread = await _run(tmp_path, answers, tools=[transfer2])
    calls = [e for e in thread.events if e.kind == "tool_call" and e.tool == "transfer"]
    assert [c.arguments["amount"] for c in calls] == [1, 2, 3, 4]
    ids = [c.call_id for c in calls]
    assert len(set(ids)) == 4 and all(len(i) <= 64 for i in ids)
    assert len(keys) == 4 and len(set(keys)) == 4


async def test_unknown_tool_names_are_echoed_bounded(tmp_path: Path) -> None:
    name = "n" * 60_000
    thread = await _run(tmp_path, [intent(name), intent("done_for_now", message="ok")])
    bad = next(e for e in thread.events if e.kind == "invalid_output")
    assert len(bad.reason) < 1_000 and len(bad.output) <= 2_000


async def test_results_outside_the_limits_are_a_tool_error_and_deep_strings_render(
    tmp_path: Path,
) -> None:
    @tool
    def nested() -> Any:
        """A deep structure."""
        value: Any = 1
        for _ in range(MAX_DEPTH + 5):
            value = [value]
        return value

    @tool
    def deep_text() -> str:
        """A deep JSON string."""
        return "[" * 50_000 + "]" * 50_000

    @tool
    def not_finite() -> float:
        """NaN."""
        return float("nan")

    answers = [intent("nested"), intent("deep_text"), intent("not_finite")]
    answers.append(intent("done_for_now", message="ok"))
    agent_tools = [nested, deep_text, not_finite]
    thread = await _run(tmp_path, answers, tools=agent_tools)
    outcomes = [(e.kind, e.tool) for e in thread.events if e.kind in ("tool_result", "tool_error")]
    assert outcomes == [
        ("tool_error", "nested"),
        ("tool_result", "deep_text"),
        ("tool_error", "not_finite"),
    ]
    assert thread.status is Status.DONE


def test_parse_json_refuses_before_recursing() -> None:
    with pytest.raises(BoundsError, match="nested 100000 levels"):
        parse_json(DEEP)
    with pytest.raises(BoundsError):
        parse_json('{"a": NaN}')
    assert parse_json('{"a": "[[[[", "b": [1]}') == {"a": "[[[[", "b": [1]}
    with pytest.raises(BoundsError, match="surrogate"):
        check_value({"k": "a\ud800"})


def test_a_bad_value_is_named_by_its_whole_path() -> None:
    with pytest.raises(BoundsError, match=r"^args\.a\[1\]\.b is nan, not a finite number$"):
        check_value({"a": [1, {"b": float("nan")}]}, where="args")
    long_key = r"k{40}\.\.\. \[20 more characters\]"
    with pytest.raises(BoundsError, match=rf"^args\.{long_key}\.x holds a lone surrogate at"):
        check_value({"k" * 60: {"x": "\ud800"}}, where="args")
    with pytest.raises(BoundsError, match=r"^args holds a lone surrogate at character 0"):
        check_value({"\udc00": 1}, where="args")  # a bad key names the object holding it
    check_value({"é": ["ü", 1.5, {"ok": "ascii"}]})  # valid non-ASCII text passes


def test_a_scalar_result_is_stored_as_is_and_checked_like_any_other() -> None:
    text = "ABC " * 10
    assert stored_result(text) is text and stored_result(None) is None
    assert stored_result(True) is True and stored_result(-(2**63)) == -(2**63)
    assert stored_result(1.5) == 1.5 and stored_result((1, "a")) == [1, "a"]
    with pytest.raises(BoundsError, match="^result is inf, not a finite number$"):
        stored_result(float("inf"))
    with pytest.raises(BoundsError, match="^result holds a lone surrogate"):
        stored_result("a\ud800")
    with pytest.raises(ValueError, match="digits"):  # a huge int: JSON text cannot hold it
        stored_result(10**5000)


def test_parse_json_skips_the_walk_only_where_nothing_can_be_refused() -> None:
    for text in ("[1e400]", "[-2E999]", "[" + "9" * 400 + ".0]", '["\\ud800"]', '{"\\udc00": 1}'):
        with pytest.raises(BoundsError):
            parse_json(text)
    assert parse_json('{"a": "\\u00e9", "b": 1e3, "c": "' + "9" * 400 + '"}')["a"] == "é"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(st.characters(max_codepoint=0xDFFF, exclude_categories=())),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    st.booleans(),
)
def test_parse_json_refuses_exactly_what_the_walk_refuses(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).replace("NaN", "1e999")
    text = text.replace("Infinity", "1e999")
    parsed = json.loads(text)
    try:
        check_value(parsed)
    except BoundsError:
        with pytest.raises(BoundsError):
            parse_json(text)
    else:
        assert parse_json(text) == parsed
