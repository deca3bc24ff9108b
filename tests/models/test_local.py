"""The embedded local model (SmolLM2-135M-Instruct via llama.cpp), run for real.

These tests assert validity, not cleverness: with the grammar on, every answer of a 135M
model must be a schema-valid intent. They are marked `local_model`; the output budget and
context window are kept small so they fit the CI budget on two cores. The model runs in its
child process (tests/models/test_local_process.py covers that process itself).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from threadline import MemoryStore, Runtime, Status
from threadline.models.base import Context, Message, ToolSpec

# Only looked up, never imported: llama.cpp runs in the model's child process, so a native
# crash fails the call (a model_error naming the signal), not this test process.
if importlib.util.find_spec("llama_cpp") is None:
    if os.environ.get("CI", "").lower() == "true":  # in CI the local model must run
        raise RuntimeError("llama-cpp-python is not installed; pip install 'threadline[local]'")
    pytest.skip("needs threadline[local] (llama-cpp-python)", allow_module_level=True)

from profile_support import count_next_call  # noqa: E402

from threadline.models.local import LocalModel, grammar_text, tools_prompt  # noqa: E402
from threadline.models.registry import resolve_model  # noqa: E402

pytestmark = pytest.mark.local_model

PROMPTS = [
    "what is 3 plus 4?",
    "add 10 and 32",
    "multiply 6 by 7",
    "What's 12 times 12?",
    "subtract 5 from 20",
    "100 minus 58",
    "divide 81 by 9",
    "what is 2.5 + 2.5",
    "compute 7 * 8",
    "I have 15 apples and eat 4. How many are left?",
    "sum of 1000 and 24",
    "what is -3 plus 8",
    "halve 50",
    "double 21",
    "what's 9 squared?",
    "how much is 0.1 + 0.2",
    "3 plus 4 times 2",
    "hello",
    "tell me a joke",
    "what is the capital of France?",
    "1e3 divided by 4",
    "add 1, 2 and 3",
]


def local(**kwargs) -> LocalModel:
    kwargs.setdefault("max_output_tokens", 96)
    kwargs.setdefault("n_ctx", 2048)
    return LocalModel(**kwargs)


async def test_calculator_produces_only_schema_valid_intents(calculator: ModuleType) -> None:
    rt = Runtime(MemoryStore(), model=local())
    model_calls = 0
    for prompt in PROMPTS:
        thread = await rt.launch(calculator.agent, prompt, advance=False)
        thread = await rt.advance(thread, max_steps=3)  # at most two model calls each
        kinds = [e.kind for e in thread.events]
        assert "invalid_output" not in kinds, (prompt, thread.events)
        assert "model_error" not in kinds, (prompt, thread.events)
        for i, event in enumerate(thread.events):
            if event.kind == "model_call":
                model_calls += 1
                assert event.model == "local:SmolLM2-135M-Instruct.Q4_1.gguf"
                assert event.input_tokens > 0 and event.output_tokens > 0
                assert event.cost_usd == 0.0
                assert thread.events[i + 1].kind == "tool_call", (prompt, event.output)
    assert model_calls >= len(PROMPTS) >= 20


async def test_deploybot_pauses_asks_or_finishes_and_never_deploys_unapproved(
    deploybot: ModuleType,
) -> None:
    rt = Runtime(MemoryStore(), model=resolve_model("local:smollm2"))
    thread = await rt.launch(deploybot.agent, "deploy the latest tag to production")
    assert thread.status in (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.DONE), [
        (e.kind, getattr(e, "output", "")) for e in thread.events
    ]
    approved = {e.call_id for e in thread.events if e.kind == "approval" and e.approved}
    assert not approved  # nobody approved anything...
    assert [d for d in deploybot.DEPLOYMENTS if d["environment"] == "production"] == []
    for event in thread.events:  # ...so no production deploy ever started
        if event.kind == "tool_started":
            call = next(
                e for e in thread.events if e.kind == "tool_call" and e.call_id == event.call_id
            )
            assert call.arguments.get("environment") != "production"


async def test_without_grammar_bad_output_is_an_event_not_a_crash(calculator: ModuleType) -> None:
    model = local(grammar=False)
    assert model.model_id.endswith("?grammar=off")
    rt = Runtime(MemoryStore(), model=model)
    for prompt in ["what is 3 plus 4?", "tell me a joke", "divide 9 by 3"]:
        thread = await rt.launch(calculator.agent, prompt, advance=False)
        thread = await rt.advance(thread, max_steps=1)
        assert [e.kind for e in thread.events][1] == "model_call"
        assert thread.events[2].kind in ("tool_call", "invalid_output")


async def test_an_overflow_teaches_the_window_and_the_thread_escalates_cleanly(
    calculator: ModuleType,
) -> None:
    from threadline import Agent, ContextSettings

    # An agent that claims a bigger window than the model has gets past the token budget,
    # so the overflow reaches llama.cpp. Its refusal says the window (256): the model keeps
    # it, the runtime renders again under it, finds that even the newest message does not
    # fit, and escalates with token_budget_exceeded: one call made, no model_error.
    agent = Agent(
        "calc", tools=calculator.agent.tools, context=ContextSettings(context_window=100_000)
    )
    model = local(n_ctx=256)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(agent, "add these: " + "1 + " * 400 + "1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    kinds = [e.kind for e in thread.events]
    assert kinds[1:] == ["token_budget_exceeded", "escalated"], kinds
    assert model.calibration.window == 256
    assert thread.events[1].available <= 256
    # The prompt count it said (llama.cpp's, chat template included) corrected the count.
    assert model.calibration.answers == 1 and model.calibration.factor >= 1.0


async def test_an_answer_corrects_the_count_by_the_chat_templates_tokens(
    tmp_path: Path,
) -> None:
    # The renderer counts the rendered text with the model's own tokenizer and estimates the
    # chat template's framing; llama.cpp's count of the prompt is exact. The answer keeps
    # the ratio of the two (never below 1), so the budget plans for what is really sent.
    model = local(max_output_tokens=384)
    counted = await count_next_call(tmp_path, "local:smollm2", model)
    assert model.calibration.answers == 1
    expected = min(1.5, max(1.0, counted.reported / counted.render))
    assert model.calibration.factor == pytest.approx(expected), counted


async def test_context_overflow_escalates_before_the_call(calculator: ModuleType) -> None:
    # Without such a claim the budget is sized for the model (n_ctx, its own tokenizer):
    # the thread escalates with token_budget_exceeded and llama.cpp is never asked.
    rt = Runtime(MemoryStore(), model=local(n_ctx=256))
    thread = await rt.launch(calculator.agent, "add these: " + "1 + " * 400 + "1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert [e.kind for e in thread.events][1:] == ["token_budget_exceeded", "escalated"]
    assert thread.events[1].available == 256


async def test_nested_models_and_strings_stay_valid() -> None:
    schema = {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "intent": {"const": "book"},
                    "arguments": {
                        "$defs": {
                            "Seat": {
                                "type": "object",
                                "properties": {
                                    "row": {"type": "integer"},
                                    "note": {"type": "string"},
                                },
                                "required": ["row", "note"],
                            }
                        },
                        "type": "object",
                        "properties": {
                            "seat": {"$ref": "#/$defs/Seat"},
                            "tags": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["seat", "tags"],
                    },
                },
                "required": ["intent", "arguments"],
            }
        ]
    }
    text = grammar_text(schema)
    assert "x00-\\x1F" in text  # raw control characters (invalid in JSON strings) excluded
    model = local()
    out = await model.request(
        Context(
            system="Book a seat. Answer with JSON.",
            messages=(Message("user", "Book row 12 with a note saying window please, tag vip"),),
            output_schema=schema,
        )
    )
    value = json.loads(out.text)
    assert value["intent"] == "book"
    assert isinstance(value["arguments"]["seat"]["row"], int)
    assert len(value["arguments"]["seat"]["note"]) <= 120
    assert len(value["arguments"]["tags"]) <= 6


def test_tools_are_described_for_a_model_without_a_tool_api() -> None:
    text = tools_prompt(
        (
            ToolSpec(
                "add",
                "Add two numbers.",
                {
                    "type": "object",
                    "properties": {
                        "a": {"type": "number"},
                        "b": {"type": "number"},
                        "unit": {"enum": ["m", "s"]},
                    },
                    "required": ["a", "b"],
                },
            ),
        )
    )
    assert text == 'Tools:\n- add(a: number, b: number, unit?: "m"|"s"): Add two numbers.'


def test_missing_gguf_is_a_config_error() -> None:
    from threadline.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        LocalModel("/no/such/file.gguf")


def test_tokens_are_counted_by_the_models_own_tokenizer() -> None:
    model = local()
    assert model.count_tokens("") == 0
    assert 0 < model.count_tokens("deploy the latest tag") < len("deploy the latest tag")
    assert model.count_tokens("<|im_start|>") == 1  # a special token of SmolLM2's template


async def test_profile_and_render_count_what_the_local_model_is_sent(tmp_path: Path) -> None:
    """`threadline profile` / `render` count the tools as the signatures the model is shown
    in its system text (not JSON definitions it is never sent; the grammar costs nothing),
    in the window it runs with: within a few percent of the model's own prompt count for
    that call (the chat template's framing is estimated)."""
    counted = await count_next_call(tmp_path, "local:smollm2", local(max_output_tokens=384))
    assert counted.window == 2048
    assert counted.profile == counted.render
    assert abs(counted.render - counted.reported) <= 0.03 * counted.reported, counted
