"""Retries, Retry-After, circuit breaker and fallback, on scripted failures."""

from __future__ import annotations

import random

import pytest

from threadline import MemoryStore, Runtime
from threadline.errors import CircuitOpen, ConfigError, ModelError
from threadline.models.base import Context, ModelOutput
from threadline.models.resilience import (
    CircuitBreaker,
    FallbackModel,
    ResilientModel,
    RetryPolicy,
    parse_retry_after,
    sdk_api_key,
    sdk_client,
    sdk_request,
)
from threadline.testing import ScriptedModel, intent

CTX = Context(system="s", messages=())


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
        == 10.0
    )
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it does spread up to the ceiling
    assert policy.delay(1, 90.0, rng) is None  # longer than max_retry_after: give up now


def test_bad_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


async def test_non_retryable_errors_are_not_retried() -> None:
    sleeps = Sleeps()
    inner = ScriptedModel([ModelError("bad request", status=400)])
    with pytest.raises(ModelError) as info:
        await ResilientModel(inner, sleep=sleeps).request(CTX)
    assert info.value.attempts == 1 and sleeps.delays == []


async def test_retryable_errors_are_retried_then_succeed() -> None:
    sleeps = Sleeps()
    inner = ScriptedModel(
        [
            ModelError("busy", retryable=True, retry_after=1.0),
            ModelError("busy", retryable=True),
            intent("done_for_now", message="x"),
        ]
    )
    out = await ResilientModel(inner, sleep=sleeps, rng=random.Random(1)).request(CTX)
    assert "done_for_now" in out.text and len(sleeps.delays) == 2
    assert sleeps.delays[0] >= 1.0


async def test_a_breaker_opening_between_retries_ends_the_call_at_once() -> None:
    """Two retryable failures open the breaker: the third try is refused by it, raised as
    `CircuitOpen` counting the two requests made (the runtime turns it into a durable
    wait); a call while it is open sends nothing and waits for nothing."""
    sleeps = Sleeps()
    breaker = CircuitBreaker("p", failure_threshold=2, reset_after=30, clock=lambda: 0.0)
    inner = ScriptedModel([ModelError("busy", retryable=True)] * 3)
    model = ResilientModel(inner, breaker=breaker, sleep=sleeps, rng=random.Random(1))
    with pytest.raises(CircuitOpen) as info:
        await model.request(CTX)
    assert info.value.attempts == 2 and len(sleeps.delays) == 2
    assert len(inner.contexts) == 2  # the open breaker sent nothing
    with pytest.raises(CircuitOpen) as info:
        await model.request(CTX)
    assert info.value.attempts == 0 and len(sleeps.delays) == 2 and len(inner.contexts) == 2


async def test_a_backend_bug_becomes_a_model_error() -> None:
    class Broken:
        model_id = "broken"

        async def request(self, context: Context) -> ModelOutput:
            raise KeyError("choices")

    with pytest.raises(ModelError, match="KeyError"):
        await ResilientModel(Broken(), sleep=Sleeps()).request(CTX)


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker("p", failure_threshold=2, reset_after=10, clock=lambda: now[0])
    breaker.record_failure()
    breaker.check()
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        breaker.check()
    assert info.value.retryable and info.value.retry_after == pytest.approx(10)
    now[0] = 10.5
    breaker.check()  # the single trial call
    with pytest.raises(CircuitOpen):
        breaker.check()  # a second concurrent trial is refused
    breaker.record_failure()
    assert breaker.state == "open"  # the trial failed: open again
    now[0] = 21.0
    breaker.check()
    breaker.record_success()
    assert breaker.state == "closed"


async def test_fallback_uses_the_next_model_and_records_which_answered() -> None:
    first = ResilientModel(
        ScriptedModel([ModelError("down", retryable=True)] * 2, model_id="openai:a"),
        RetryPolicy(max_attempts=2),
        sleep=Sleeps(),
    )
    second = ScriptedModel([intent("done_for_now", message="hi")], model_id="anthropic:b")
    chain = FallbackModel([first, second])
    assert chain.model_id == "openai:a,anthropic:b"
    out = await chain.request(CTX)
    assert out.model == "anthropic:b"


async def test_fallback_exhausted_is_one_model_error_event(calculator) -> None:
    chain = FallbackModel(
        [
            ScriptedModel([ModelError("a down", retryable=True)], model_id="a"),
            ScriptedModel([ModelError("b refused", status=400)], model_id="b"),
        ]
    )
    rt = Runtime(MemoryStore(), model=chain)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    event = thread.events[-1]
    assert event.kind == "model_error" and event.attempts == 2
    assert "a down" in event.message and "b refused" in event.message


async def test_a_cancelled_trial_call_frees_the_half_open_slot() -> None:
    import asyncio

    now = [0.0]
    breaker = CircuitBreaker("p", failure_threshold=1, reset_after=5, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 6.0

    class Hang:
        model_id = "hang"

        async def request(self, context: Context) -> ModelOutput:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    task = asyncio.create_task(ResilientModel(Hang(), breaker=breaker).request(CTX))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    breaker.check()  # the trial slot is free again


def test_sdk_api_key_given_then_environment_then_hint_or_placeholder(monkeypatch) -> None:
    monkeypatch.setenv("SOME_API_KEY", "from-env")
    assert sdk_api_key("given", "SOME_API_KEY", "export it") == "given"
    assert sdk_api_key(None, "SOME_API_KEY", "export it") == "from-env"
    monkeypatch.delenv("SOME_API_KEY")
    with pytest.raises(ConfigError, match="SOME_API_KEY is not set; export it"):
        sdk_api_key(None, "SOME_API_KEY", "export it")
    assert sdk_api_key("", "SOME_API_KEY", None) == "not-needed"


def test_sdk_client_has_the_sdk_retries_off() -> None:
    openai = pytest.importorskip("openai")
    client = sdk_client(
        openai.AsyncOpenAI, "k", "http://127.0.0.1:9/v1", timeout=3.0, http_client=None
    )
    assert client.max_retries == 0
    assert client.api_key == "k" and str(client.base_url) == "http://127.0.0.1:9/v1/"


async def test_sdk_request_maps_every_failure_to_a_model_error() -> None:
    openai = pytest.importorskip("openai")
    import httpx

    async def answer() -> str:
        return "ok"

    response, latency = await sdk_request(openai, "m", answer)
    assert response == "ok" and latency >= 0

    async def unreachable() -> str:
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9"))

    with pytest.raises(ModelError, match="m: connection failed") as failed:
        await sdk_request(openai, "m", unreachable)
    assert failed.value.retryable

    async def garbled() -> str:
        raise ValueError("not JSON")

    with pytest.raises(ModelError, match=r"m: unreadable response \(ValueError: not JSON\)"):
        await sdk_request(openai, "m", garbled)
