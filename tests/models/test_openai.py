"""The OpenAI-compatible backend, through the real `openai` SDK and a real `Runtime`.

The OpenAI API is unreachable from this machine: every exchange is a recorded response
replayed at the HTTP transport (see recorded.py). Each case must end in the right event
(tool_call / invalid_output / model_error), never an unhandled exception.
"""

from __future__ import annotations

import json
import random
from types import ModuleType

import httpx2
import pytest
from recorded import Recorded, Sleeps, openai_completion, openai_error

from threadline import MemoryStore, Runtime, Status
from threadline.errors import ConfigError
from threadline.events import ModelCall
from threadline.models.openai import OpenAIModel, json_schema_response_format
from threadline.models.resilience import CircuitBreaker, ResilientModel, RetryPolicy


def make_model(
    replies: list,
    *,
    mode: str = "tools",
    attempts: int = 4,
    breaker: CircuitBreaker | None = None,
    timeout: float | None = 60.0,
) -> tuple[ResilientModel, Recorded, Sleeps]:
    recorded = Recorded(replies)
    sleeps = Sleeps()
    backend = OpenAIModel(
        "gpt-4.1-mini",
        mode=mode,
        api_key="sk-test",
        base_url="https://api.openai.com/v1",
        http_client=recorded.client(),
    )
    model = ResilientModel(
        backend,
        RetryPolicy(max_attempts=attempts, timeout=timeout),
        breaker,
        sleep=sleeps,
        rng=random.Random(7),
    )
    return model, recorded, sleeps


def kinds(thread) -> list[str]:
    return [e.kind for e in thread.events]


async def test_tool_call_success_runs_the_tool_and_records_usage(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model(
        [
            openai_completion(tool_calls=[("add", '{"a": 2, "b": 3}')]),
            openai_completion(tool_calls=[("done_for_now", '{"message": "2 + 3 = 5"}')]),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    assert thread.status == Status.DONE
    assert kinds(thread) == [
        "user_message",
        "model_call",
        "tool_call",
        "tool_result",
        "model_call",
        "tool_call",
        "done",
    ]
    call = thread.events[1]
    assert call.model == "openai:gpt-4.1-mini-2025-04-14"  # the pinned snapshot that answered
    assert (call.input_tokens, call.output_tokens) == (120, 18)
    assert call.cost_usd == pytest.approx((120 * 0.40 + 18 * 1.60) / 1e6)
    assert thread.events[2].tool == "add" and thread.events[2].arguments == {"a": 2.0, "b": 3.0}
    assert thread.events[3].result == 5.0
    body = recorded.bodies[0]
    assert body["tool_choice"] == "required"
    assert {t["function"]["name"] for t in body["tools"]} >= {"add", "divide", "done_for_now"}
    assert body["max_completion_tokens"] > 0
    assert len(recorded.requests) == 2 and sleeps.delays == []  # no SDK retries, no waits


async def test_cached_prompt_tokens_are_recorded_and_priced(calculator: ModuleType) -> None:
    """OpenAI's `prompt_tokens` include the cached ones (`prompt_tokens_details.
    cached_tokens`), priced at the model's cached-input rate (gpt-4.1-mini: 0.10 USD per
    million against 0.40)."""
    model, _, _ = make_model(
        [
            openai_completion(
                tool_calls=[("add", '{"a": 2, "b": 3}')], prompt_tokens=1200, cached_tokens=1024
            ),
            openai_completion(tool_calls=[("done_for_now", '{"message": "5"}')]),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    first, second = (e for e in thread.events if isinstance(e, ModelCall))
    assert (first.input_tokens, first.cache_read_tokens, first.cache_write_tokens) == (
        1200,
        1024,
        0,
    )
    assert first.cost_usd == pytest.approx((176 * 0.40 + 1024 * 0.10 + 18 * 1.60) / 1e6)
    assert (second.cache_read_tokens, second.cache_write_tokens) == (0, 0)
    assert "cache_read_tokens" not in json.loads(second.model_dump_json())


async def test_json_schema_answer(calculator: ModuleType) -> None:
    model, recorded, _ = make_model(
        [
            openai_completion(content='{"intent": "multiply", "arguments": {"a": 6, "b": 7}}'),
            openai_completion(content='{"intent": "done_for_now", "arguments": {"message": "42"}}'),
        ],
        mode="json_schema",
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "6 times 7")
    assert thread.status == Status.DONE
    assert thread.events[2].kind == "tool_call" and thread.events[2].tool == "multiply"
    # OpenAI bills a schema as prompt tokens: the tools are signatures in the system text,
    # described once, the answer is JSON mode, and the runtime validates the arguments.
    assert recorded.bodies[0]["response_format"] == {"type": "json_object"}
    system = recorded.bodies[0]["messages"][0]["content"]
    assert "multiply: Multiply" in system and "\n a: number" in system
    assert '{"intent": <tool name>, "arguments": {...}}' in system
    assert "tools" not in recorded.bodies[0]


@pytest.mark.parametrize(
    "reply",
    [
        openai_completion(content='{"intent": "add", "arguments": {"a": 2,'),
        openai_completion(tool_calls=[("add", '{"a": 2, "b": ')]),
    ],
)
async def test_malformed_json_becomes_invalid_output(calculator: ModuleType, reply) -> None:
    model, _, _ = make_model([reply], mode="json_schema")
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "2 plus 3", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert "JSON" in thread.events[2].reason
    assert thread.state.consecutive_errors == 1


async def test_hallucinated_tool_name_becomes_invalid_output(calculator: ModuleType) -> None:
    model, _, _ = make_model([openai_completion(tool_calls=[("square_root", '{"x": 9}')])])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "root of 9", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_call", "invalid_output"]
    assert "unknown tool 'square_root'" in thread.events[2].reason


async def test_429_with_retry_after_then_success(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model(
        [
            (
                429,
                openai_error(429, "Rate limit reached for gpt-4.1-mini", "requests"),
                {"retry-after": "2"},
            ),
            openai_completion(tool_calls=[("add", '{"a": 1, "b": 1}')]),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_call", "tool_call"]
    assert len(recorded.requests) == 2
    assert len(sleeps.delays) == 1 and 2.0 <= sleeps.delays[0] <= 2.5  # honoured Retry-After


async def test_500_until_retries_run_out_is_a_model_error_event(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model(
        [(500, openai_error(500, "The server had an error"))], attempts=3
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_error"]
    event = thread.events[1]
    assert event.retryable and event.attempts == 3 and "HTTP 500" in event.message
    assert len(recorded.requests) == 3 and len(sleeps.delays) == 2
    assert sleeps.delays[1] <= 1.0  # full jitter under base_delay * 2


async def test_persistent_failure_opens_the_breaker_and_the_thread_waits(
    calculator: ModuleType,
) -> None:
    now = [0.0]
    breaker = CircuitBreaker("openai", failure_threshold=5, reset_after=30, clock=lambda: now[0])
    model, recorded, _ = make_model(
        [(503, openai_error(503, "overloaded"))], attempts=4, breaker=breaker
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "1+1")
    # One real failure (4 attempts), then the open breaker parks the thread: a durable wait
    # until the breaker's trial time, not a second error and not an escalation.
    assert kinds(thread) == ["user_message", "model_error", "waiting"]
    assert thread.status == Status.WAITING and thread.state.consecutive_errors == 1
    assert len(recorded.requests) == 5  # 4 + 1, then the open breaker stops the pile-up
    wait = thread.events[2]
    assert "circuit breaker open" in (wait.reason or "")
    assert 29 <= (wait.until - wait.at).total_seconds() <= 31
    assert breaker.state == "open"
    now[0] = 31.0
    assert breaker.state == "half-open"


async def test_timeout_is_a_model_error_event(calculator: ModuleType) -> None:
    model, recorded, _ = make_model([httpx2.ReadTimeout("timed out")], attempts=2)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_error"]
    assert "timed out" in thread.events[1].message and thread.events[1].attempts == 2
    assert len(recorded.requests) == 2


async def test_a_hanging_provider_hits_the_per_attempt_timeout(calculator: ModuleType) -> None:
    import asyncio

    async def hang(request):
        await asyncio.Event().wait()

    model, _, _ = make_model([hang], attempts=1, timeout=0.05)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_error"]
    assert "no answer within" in thread.events[1].message


async def test_malformed_body_is_a_model_error_event(calculator: ModuleType) -> None:
    model, _, _ = make_model([(200, "<html>502 Bad Gateway</html>")], attempts=1)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert kinds(thread) == ["user_message", "model_error"]


async def test_400_is_not_retried(calculator: ModuleType) -> None:
    model, recorded, _ = make_model(
        [(400, openai_error(400, "Invalid schema for response_format", "invalid_request_error"))]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    event = thread.events[1]
    assert event.kind == "model_error" and not event.retryable
    assert "Invalid schema" in event.message and len(recorded.requests) == 1


async def test_dotted_tool_names_are_sanitised_and_mapped_back() -> None:
    from threadline.models.base import Context, Message, ToolSpec

    recorded = Recorded([openai_completion(tool_calls=[("math_factorial", '{"number": 5}')])])
    model = OpenAIModel("gpt-4.1-mini", mode="tools", api_key="k", http_client=recorded.client())
    out = await model.request(
        Context(
            system="s",
            messages=(Message("user", "5!"),),
            tools=(ToolSpec("math.factorial", "n!", {"type": "object", "properties": {}}),),
        )
    )
    assert recorded.bodies[0]["tools"][0]["function"]["name"] == "math_factorial"
    assert out.tool_calls[0].name == "math.factorial"
    assert json.loads(out.tool_calls[0].arguments) == {"number": 5}


def test_missing_key_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4.1-mini")


def test_compatible_server_needs_no_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    model = OpenAIModel("llama3.2")
    assert str(model.client.base_url).startswith("http://127.0.0.1:11434")
    assert model.request_body.__self__ is model


def test_response_format_wraps_the_union_in_an_object() -> None:
    fmt = json_schema_response_format({"oneOf": [{"type": "object"}]})
    assert fmt["json_schema"]["schema"] == {"anyOf": [{"type": "object"}], "type": "object"}
    assert json_schema_response_format({}) == {"type": "json_object"}


async def test_connection_error_is_retried_then_recorded(calculator: ModuleType) -> None:
    model, recorded, sleeps = make_model([httpx2.ConnectError("connection refused")], attempts=3)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    event = thread.events[-1]
    assert event.kind == "model_error" and event.retryable and event.attempts == 3
    assert "connection failed" in event.message
    assert len(recorded.requests) == 3 and len(sleeps.delays) == 2
