"""The Anthropic backend, through the real `anthropic` SDK and a real `Runtime`.

The Anthropic API is unreachable from this machine: every exchange is a recorded response
replayed at the HTTP transport (see recorded.py). Each case must end in the right event.
"""

from __future__ import annotations

import itertools
import json
import random
from types import ModuleType
from typing import Any

import httpx2
import pytest
from recorded import Recorded, Sleeps, anthropic_error, anthropic_message

from threadline import Agent, ContextSettings, MemoryStore, Runtime, Status, tool
from threadline.errors import ConfigError
from threadline.events import ModelCall, event_from_json
from threadline.models.anthropic import AnthropicModel
from threadline.models.base import Context, Message, intent_envelope
from threadline.models.resilience import ResilientModel, RetryPolicy


def make_model(replies: list, *, mode: str = "tools", attempts: int = 4, **options: Any):
    recorded = Recorded(replies)
    sleeps = Sleeps()
    backend = AnthropicModel(
        "claude-sonnet-4-6",
        mode=mode,
        api_key="sk-ant-test",
        http_client=recorded.client(),
        **options,
    )
    model = ResilientModel(
        backend, RetryPolicy(max_attempts=attempts), None, sleep=sleeps, rng=random.Random(3)
    )
    return model, recorded, sleeps


async def one_step(agent, model, text: str = "2 plus 3"):
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(agent, text, advance=False)
    return await rt.advance(thread, max_steps=1)


ADD_THEN_DONE = [
    "user_message",
    "model_call",
    "tool_call",
    "tool_result",
    "model_call",
    "tool_call",
    "done",
]
"""The events of a thread that adds, then finishes."""


def kinds(thread) -> list[str]:
    return [e.kind for e in thread.events]


async def test_tool_use_success(calculator: ModuleType) -> None:
    model, recorded, _ = make_model(
        [
            anthropic_message(text="I'll add them.", tool_uses=[("add", {"a": 2, "b": 3})]),
            anthropic_message(tool_uses=[("done_for_now", {"message": "5"})]),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3")
    assert thread.status == Status.DONE
    assert kinds(thread) == ADD_THEN_DONE
    call = thread.events[1]
    assert call.model == "anthropic:claude-sonnet-4-6"
    assert (call.input_tokens, call.output_tokens) == (310, 42)
    assert call.cost_usd == pytest.approx((310 * 3 + 42 * 15) / 1e6)
    assert thread.events[2].call_id == "toolu_010Recorded"
    body = recorded.bodies[0]
    assert body["tool_choice"] == {"type": "any"}
    assert "input_schema" in body["tools"][0]
    assert body["system"][0]["text"].startswith("You are a calc")
    headers = recorded.requests[0].headers
    assert "sk-ant-test" in headers.get("x-api-key", "") + headers.get("authorization", "")
    assert headers["x-stainless-retry-count"] == "0"  # the SDK itself never retries


async def cached_calls(
    calculator: ModuleType, first: dict[str, int], second: dict[str, int], **options: Any
) -> tuple[ModelCall, ModelCall, list[dict[str, Any]]]:
    """A thread that adds (its call's usage `first`), then finishes (`second`): its two
    `model_call` events, checked to survive the store's JSON, and the requests sent."""
    model, recorded, _ = make_model(
        [
            anthropic_message(tool_uses=[("add", {"a": 2, "b": 3})], output_tokens=40, **first),
            anthropic_message(
                tool_uses=[("done_for_now", {"message": "5"})], output_tokens=10, **second
            ),
        ],
        **options,
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3")
    assert thread.status == Status.DONE
    assert [event_from_json(e.model_dump_json()) for e in thread.events] == thread.events
    one, two = (e for e in thread.events if isinstance(e, ModelCall))
    assert thread.state.input_tokens == one.input_tokens + two.input_tokens
    return one, two, recorded.bodies


async def test_prompt_cache_tokens_are_recorded_and_priced(calculator: ModuleType) -> None:
    """Anthropic counts the cached part of the prompt apart from `input_tokens`: the event's
    input is the whole prompt, the cache's writes and reads part of it, each priced at its
    rate (claude-sonnet-4: input 3, cache write 3.75, cache read 0.30, output 15 USD per
    million), and the counts survive the store's JSON."""
    first, second, _ = await cached_calls(
        calculator,
        {"input_tokens": 12, "cache_creation_input_tokens": 1500},
        {"input_tokens": 30, "cache_read_input_tokens": 1500},
    )
    assert (first.input_tokens, first.cache_write_tokens, first.cache_read_tokens) == (
        1512,
        1500,
        0,
    )
    assert first.cost_usd == pytest.approx((12 * 3 + 1500 * 3.75 + 40 * 15) / 1e6)
    assert (second.input_tokens, second.cache_write_tokens, second.cache_read_tokens) == (
        1530,
        0,
        1500,
    )
    assert second.cost_usd == pytest.approx((30 * 3 + 1500 * 0.30 + 10 * 15) / 1e6)


async def test_one_hour_cache_writes_are_recorded_and_priced_at_their_rate(
    calculator: ModuleType,
) -> None:
    """Anthropic prices a cache write by the entry's lifetime: 1.25x input for 5 minutes,
    2x for an hour (claude-sonnet-4: 3.75 and 6.00 USD per million); the usage's
    `cache_creation` says how many written tokens went to each. A model asked for 1-hour
    entries marks every cache boundary `ttl: 1h`; the 1-hour writes are recorded apart
    and priced at 2x, a mixed call's 5-minute part at 1.25x. Before, every write was priced
    at the 5-minute rate: a 1-hour write of 1,500 tokens cost 0.0056 USD, not 0.009."""
    first, second, bodies = await cached_calls(
        calculator,
        {
            "input_tokens": 12,
            "cache_creation_input_tokens": 1500,
            "cache_creation_1h_input_tokens": 1500,
        },
        {
            "input_tokens": 30,
            "cache_creation_input_tokens": 200,
            "cache_creation_1h_input_tokens": 150,
            "cache_read_input_tokens": 1500,
        },
        cache_ttl="1h",
    )
    for body in bodies:
        marks = [
            b["cache_control"]
            for b in body["system"] + body["messages"][-1]["content"]
            if "cache_control" in b
        ]
        assert marks and all(m == {"type": "ephemeral", "ttl": "1h"} for m in marks), marks
    assert (first.cache_write_tokens, first.cache_write_1h_tokens) == (1500, 1500)
    assert first.cost_usd == pytest.approx((12 * 3 + 1500 * 6.00 + 40 * 15) / 1e6)
    assert (second.cache_write_tokens, second.cache_write_1h_tokens) == (200, 150)
    assert second.cache_read_tokens == 1500
    expected = 30 * 3 + 50 * 3.75 + 150 * 6.00 + 1500 * 0.30 + 10 * 15
    assert second.cost_usd == pytest.approx(expected / 1e6)


async def test_the_writes_are_priced_by_what_the_usage_says_not_by_what_was_asked(
    calculator: ModuleType,
) -> None:
    """A model marking 5-minute entries (the default: no `ttl` sent) is still priced by the
    usage's split: 1-hour writes it reports (a gateway's or an organisation's default) cost
    2x input; a 5-minute write's event stays as it was (no 1-hour count in its JSON)."""
    first, second, bodies = await cached_calls(
        calculator,
        {
            "input_tokens": 12,
            "cache_creation_input_tokens": 1500,
            "cache_creation_1h_input_tokens": 1000,
        },
        {"input_tokens": 30, "cache_creation_input_tokens": 100},
    )
    assert bodies[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert first.cache_write_1h_tokens == 1000
    expected = 12 * 3 + 500 * 3.75 + 1000 * 6.00 + 40 * 15
    assert first.cost_usd == pytest.approx(expected / 1e6)
    assert second.cost_usd == pytest.approx((30 * 3 + 100 * 3.75 + 10 * 15) / 1e6)
    assert "cache_write_1h_tokens" not in json.loads(second.model_dump_json())


def test_an_unknown_cache_ttl_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cache_ttl must be one of 5m, 1h"):
        AnthropicModel("claude-sonnet-4-6", api_key="sk-ant-test", cache_ttl="1d")  # type: ignore[arg-type]


async def test_json_answer_in_json_mode(calculator: ModuleType) -> None:
    model, recorded, _ = make_model(
        [anthropic_message(text='{"intent": "subtract", "arguments": {"a": 9, "b": 4}}')],
        mode="json",
    )
    thread = await one_step(calculator.agent, model, "9 minus 4")
    assert kinds(thread) == ["user_message", "model_call", "tool_call"]
    assert thread.events[2].tool == "subtract"
    body = recorded.bodies[0]
    # json mode: the tools are signatures in the system text, followed by the schema of
    # the answer's envelope (the arguments are described once, and validated).
    system = body["system"][0]["text"]
    assert "tools" not in body and "subtract: Subtract" in system
    assert json.dumps(intent_envelope(calculator.agent.output_schema())) in system


async def test_malformed_json_becomes_invalid_output(calculator: ModuleType) -> None:
    model, _, _ = make_model(
        [anthropic_message(text='{"intent": "add", "arguments": {"a": ')], mode="json"
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert "not valid JSON" in thread.events[2].reason


async def test_hallucinated_tool_becomes_invalid_output(calculator: ModuleType) -> None:
    model, _, _ = make_model([anthropic_message(tool_uses=[("power", {"a": 2, "b": 8})])])
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert "unknown tool 'power'" in thread.events[2].reason


async def test_wrong_argument_types_become_invalid_output(calculator: ModuleType) -> None:
    model, _, _ = make_model([anthropic_message(tool_uses=[("add", {"a": "two", "b": 3})])])
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert "invalid arguments for add" in thread.events[2].reason


async def test_429_retry_after_then_success(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model(
        [
            (
                429,
                anthropic_error("rate_limit_error", "Number of requests exceeded"),
                {"retry-after": "3"},
            ),
            anthropic_message(tool_uses=[("add", {"a": 2, "b": 3})]),
        ]
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_call", "tool_call"]
    assert len(recorded.requests) == 2 and 3.0 <= sleeps.delays[0] <= 3.5


async def test_overloaded_until_retries_run_out(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model(
        [(529, anthropic_error("overloaded_error", "Overloaded"))], attempts=3
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"]
    event = thread.events[1]
    assert event.retryable and event.attempts == 3 and "Overloaded" in event.message
    assert len(recorded.requests) == 3 and len(sleeps.delays) == 2


async def test_500_until_retries_run_out(calculator: ModuleType) -> None:
    model, recorded, _ = make_model(
        [(500, anthropic_error("api_error", "Internal error"))], attempts=2
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"]
    assert "HTTP 500" in thread.events[1].message and len(recorded.requests) == 2


async def test_an_invalid_request_is_not_retried_and_escalates(calculator: ModuleType) -> None:
    """A 400 invalid_request_error (recorded shape of the Anthropic API): the same request
    would fail the same way, so it is sent once and the thread escalates with the reason."""
    model, recorded, sleeps = make_model(
        [
            (
                400,
                anthropic_error(
                    "invalid_request_error", "messages: text content blocks must be non-empty"
                ),
            )
        ],
        attempts=4,
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"]
    event = thread.events[1]
    assert event.error_type == "InvalidRequest" and not event.retryable
    assert "non-empty" in event.message
    assert len(recorded.requests) == 1 and sleeps.delays == []
    from threadline.reducer import Escalate, decide

    step = decide(calculator.agent, thread)
    assert isinstance(step, Escalate) and "rejected the request" in step.reason


async def test_timeout(calculator: ModuleType) -> None:
    model, recorded, _ = make_model([httpx2.ConnectTimeout("connect timed out")], attempts=2)
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"]
    assert "timed out" in thread.events[1].message and len(recorded.requests) == 2


async def test_malformed_body(calculator: ModuleType) -> None:
    model, _, _ = make_model([(200, "not json at all")], attempts=1)
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"]


async def test_tool_turns_alternate_roles() -> None:
    from threadline.events import RawToolCall

    recorded = Recorded([anthropic_message(text="ok")])
    model = AnthropicModel("claude-haiku-4-5", api_key="k", http_client=recorded.client())
    await model.request(
        Context(
            system="s",
            messages=(
                Message("user", "hi"),
                Message(
                    "assistant",
                    "",
                    tool_calls=(RawToolCall(id="t1", name="add", arguments='{"a": 1, "b": 2}'),),
                ),
                Message("tool", "3", tool_call_id="t1"),
                Message("user", "and now?"),
            ),
        )
    )
    messages = recorded.bodies[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0] == {
        "type": "tool_use",
        "id": "t1",
        "name": "add",
        "input": {"a": 1, "b": 2},
    }
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]


async def test_the_prompt_cache_boundary_is_where_the_previous_call_ended(calculator) -> None:
    model, recorded, _ = make_model(
        [
            anthropic_message(text="I'll add them.", tool_uses=[("add", {"a": 2, "b": 3})]),
            anthropic_message(tool_uses=[("done_for_now", {"message": "5"})]),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3")
    assert thread.status == Status.DONE
    first, second = recorded.bodies
    for body in (first, second):  # the system text (instructions) is cached on every call
        assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    (sent,) = first["messages"][0]["content"]
    assert sent["cache_control"] == {"type": "ephemeral"}  # written whole for the next call
    # The next call repeats the first call's text as its own block (where the previous
    # write ends, so it is read from the cache) and marks its own end for the one after.
    stable, new = second["messages"][0]["content"]
    assert stable == {"type": "text", "text": sent["text"]}
    assert new["text"].startswith("\n<assistant>I'll add them.\n<add>")
    assert new["cache_control"] == {"type": "ephemeral"}


def test_missing_key_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-sonnet-4-6")


# -- intent mode (the default): signatures in the system text, one forced next_step tool --


async def test_intent_mode_is_the_default_and_forces_one_next_step_tool(calculator) -> None:
    recorded = Recorded(
        [
            anthropic_message(
                tool_uses=[("next_step", {"intent": "add", "arguments": {"a": 2, "b": 3}})]
            ),
            anthropic_message(
                tool_uses=[("next_step", {"intent": "done_for_now", "arguments": {"message": "5"}})]
            ),
        ]
    )
    backend = AnthropicModel(
        "claude-sonnet-4-6", api_key="sk-ant-test", http_client=recorded.client()
    )
    assert backend.mode == "intent" and backend.profile.tools_in_prompt
    thread = await Runtime(MemoryStore(), model=backend).launch(calculator.agent, "2 plus 3")
    assert thread.status == Status.DONE
    assert kinds(thread) == ADD_THEN_DONE
    call = thread.events[2]
    assert (call.tool, call.arguments) == ("add", {"a": 2, "b": 3})
    assert json.loads(thread.events[1].output) == {"intent": "add", "arguments": {"a": 2, "b": 3}}
    body = recorded.bodies[0]
    (tool,) = body["tools"]
    envelope = intent_envelope(calculator.agent.output_schema())
    assert tool["name"] == "next_step" and tool["input_schema"] == envelope
    assert body["tool_choice"] == {"type": "tool", "name": "next_step"}
    system = body["system"][0]["text"]
    assert system.count("subtract: Subtract") == 1  # every tool described once, as a signature
    assert json.dumps(envelope) not in system  # the envelope is the tool's schema, not text
    second = recorded.bodies[1]["messages"][0]["content"]
    assert "<add>" in "".join(b["text"] for b in second)  # the history in the compact form


async def test_intent_mode_parallel_steps_become_parallel_calls(calculator) -> None:
    recorded = Recorded(
        [
            anthropic_message(
                tool_uses=[
                    ("next_step", {"intent": "add", "arguments": {"a": 1, "b": 2}}),
                    ("next_step", {"intent": "multiply", "arguments": {"a": 3, "b": 4}}),
                ]
            )
        ]
    )
    backend = AnthropicModel("claude-sonnet-4-6", api_key="k", http_client=recorded.client())
    thread = await one_step(calculator.agent, backend)
    calls = [e for e in thread.events if e.kind == "tool_call"]
    assert [(c.tool, c.arguments) for c in calls] == [
        ("add", {"a": 1, "b": 2}),
        ("multiply", {"a": 3, "b": 4}),
    ]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"intent": "power", "arguments": {"a": 2, "b": 8}}, "unknown tool 'power'"),
        ({"intent": "add", "arguments": {"a": "two", "b": 3}}, "invalid arguments for add"),
        ({"arguments": {"a": 1}}, "intent"),
    ],
)
async def test_intent_mode_bad_steps_become_invalid_output(calculator, step, reason) -> None:
    recorded = Recorded([anthropic_message(tool_uses=[("next_step", step)])])
    backend = AnthropicModel("claude-sonnet-4-6", api_key="k", http_client=recorded.client())
    thread = await one_step(calculator.agent, backend)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert reason in thread.events[2].reason
    assert thread.status == Status.RUNNING  # shown to the model next turn, nothing lost


async def test_intent_mode_sends_native_definitions_when_the_context_has_them(calculator) -> None:
    from threadline import Agent, ContextSettings

    agent = Agent(
        calculator.agent.name,
        tools=calculator.agent.tools,
        instructions="You are a calculator.",
        context=ContextSettings(native_tools=True),
    )
    recorded = Recorded([anthropic_message(tool_uses=[("add", {"a": 2, "b": 3})])])
    backend = AnthropicModel("claude-sonnet-4-6", api_key="k", http_client=recorded.client())
    thread = await one_step(agent, backend)
    assert kinds(thread) == ["user_message", "model_call", "tool_call"]
    body = recorded.bodies[0]
    assert "next_step" not in [t["name"] for t in body["tools"]]
    assert body["tool_choice"] == {"type": "any"}


def test_an_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="intent, tools, json"):
        AnthropicModel("claude-sonnet-4-6", mode="xml", api_key="k")  # type: ignore[arg-type]


@tool
def fetch_rows(key: str) -> dict[str, Any]:
    """Fetch a record's rows."""
    return {"key": key, "rows": [{"i": j, "v": f"value {j} of {key}"} for j in range(40)]}


def _written(body: dict[str, Any]) -> tuple[str, set[int], list[int]]:
    """(the last message's text, where its cache marks end, where its blocks end)."""
    text, written, ends = "", set(), []
    for block in body["messages"][-1]["content"]:
        text += block["text"]
        ends.append(len(text))
        if "cache_control" in block:
            written.add(len(text))
    return text, written, ends


async def test_every_call_of_a_long_cut_thread_reads_where_the_previous_call_wrote() -> None:
    """A thread long enough that older results are cut (detail level 1): each request
    splits its history where the previous request wrote a cache entry (its end, or its
    settled prefix when a result was cut since), so Anthropic can read it; the SDK's real
    requests are checked, the responses are recorded ones."""
    calls = 45
    replies = []
    for k in range(calls):
        reply = anthropic_message(tool_uses=[("fetch_rows", {"key": f"k{k}"})])
        reply["content"][0]["id"] = f"toolu_{k:03d}"
        replies.append(reply)
    replies.append(anthropic_message(tool_uses=[("done_for_now", {"message": "all fetched"})]))
    model, recorded, _ = make_model(replies)
    settings = ContextSettings(
        keep_recent=4, context_window=8_000, max_output_tokens=500, max_result_tokens=40
    )
    agent = Agent(
        "fetcher", tools=[fetch_rows], instructions="Fetch all.", context=settings, max_steps=60
    )
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "Fetch k0 to k44.")
    assert thread.status == Status.DONE
    bodies = recorded.bodies
    assert len(bodies) == calls + 1
    read_back = 0
    for before, after in itertools.pairwise(bodies):
        marks = [
            b for b in after["system"] + after["messages"][-1]["content"] if "cache_control" in b
        ]
        assert len(marks) <= 4  # the API's limit
        sent, written, _ = _written(before)
        text, _, ends = _written(after)
        reads = [end for end in ends if end in written and text[:end] == sent[:end]]
        truncated = "[truncated: full result in event" in text
        if not truncated or "[truncated: full result in event" in sent:
            assert reads, "no block boundary where the previous request wrote"
            read_back += max(reads) < len(sent)
    assert read_back > 10  # results were cut, and the read moved back to the settled prefix


async def test_usage_corrects_the_renderers_counts() -> None:
    # Claude's tokenizer is not public: the renderer counts with a stand-in. Each answer's
    # usage says how many tokens Anthropic counted for the whole prompt (input, and the
    # cache's reads and writes, which it counts apart): the bound model keeps the ratio,
    # and the renderer plans in `window / scale` from then on.
    recorded = Recorded(
        [
            anthropic_message(
                text="ok",
                input_tokens=900,
                cache_read_input_tokens=250,
                cache_creation_input_tokens=50,
            )
        ]
    )
    model = AnthropicModel("claude-sonnet-4-6", api_key="k", http_client=recorded.client())
    calibration = model.profile.calibration
    assert calibration is model.calibration and calibration.answers == 0
    out = await model.request(
        Context(system="s", messages=(Message("user", "hi"),), input_tokens=1000)
    )
    assert out.input_tokens == 1200
    assert calibration.answers == 1 and calibration.factor == pytest.approx(1.2)
    window = model.profile.context_window
    assert window is not None and calibration.fit(window, 1024) < window
    # An answer counted with no renderer count (a custom rendering) teaches nothing.
    await model.request(Context(system="s", messages=(Message("user", "hi"),)))
    assert calibration.answers == 1


async def test_a_prompt_too_long_teaches_its_count_and_the_call_is_made_again(
    calculator: ModuleType,
) -> None:
    # The recorded shape of the API's refusal of a prompt over the window: it says its
    # count and the window. The count against the renderer's moves the correction, so the
    # runtime renders again under it and makes the call once more instead of failing.
    too_long = anthropic_error(
        "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
    )
    model, recorded, _ = make_model(
        [(400, too_long), anthropic_message(tool_uses=[("add", {"a": 2, "b": 3})])], attempts=1
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread)[:3] == ["user_message", "model_call", "tool_call"], kinds(thread)
    assert len(recorded.requests) == 2
    calibration = model.profile.calibration
    # Two counts kept: the refusal's (215,000 against a few hundred: the largest step,
    # 1.5) and the answer's (310 reported); their mean moved the correction.
    assert calibration is not None and calibration.answers == 2
    assert 1.25 <= calibration.factor <= 1.5
    assert calibration.window is None  # 200,000 is the window assumed: nothing to narrow
    # A refusal for another reason is not an overflow: sent once, the step fails.
    model, recorded, _ = make_model(
        [(400, anthropic_error("invalid_request_error", "prompt is too long"))], attempts=1
    )
    thread = await one_step(calculator.agent, model)
    assert kinds(thread) == ["user_message", "model_error"] and len(recorded.requests) == 1
