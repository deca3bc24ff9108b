"""The loop guard (issue 13): repeats and rejected calls are refused, then escalate."""

from __future__ import annotations

from types import ModuleType

import pytest

from threadline import Agent, MemoryStore, Runtime, Status, replay_thread
from threadline.testing import ScriptedModel, intent

STAGING = intent("deploy_backend", tag="v1.5.0", environment="staging")


async def test_the_same_deploy_three_times_in_a_row_is_refused_then_escalates(
    deploybot: ModuleType,
) -> None:
    model = ScriptedModel([STAGING] * 8)
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy the latest tag to staging")
    assert thread.status == Status.ESCALATED
    assert len(deploybot.DEPLOYMENTS) == 2  # the first two ran; the third never did
    invalid = [e for e in thread.events if e.kind == "invalid_output"]
    assert len(invalid) == 3 and len(model.contexts) == 5
    assert all(
        "deploy_backend with the same arguments 3 times in a row" in e.reason for e in invalid
    )
    assert "repeated call" in thread.events[-1].details["last_error"]
    assert "3 times in a row" in model.contexts[3].as_text()  # the model was told
    replay_thread(deploybot.agent, thread)


async def test_a_call_a_person_rejected_is_refused_until_the_model_changes_it(
    deploybot: ModuleType,
) -> None:
    prod = intent("deploy_backend", tag="v1.5.0", environment="production")
    model = ScriptedModel(
        [prod, prod, STAGING, intent("done_for_now", message="deployed to staging instead")]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy the latest")
    (call_id,) = thread.state.pending
    await rt.approve(thread.id, call_id, approved=False, comment="not production today")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    (refused,) = [e for e in thread.events if e.kind == "invalid_output"]
    assert "a person rejected exactly this call" in refused.reason
    assert "not production today" in refused.reason
    assert [d["environment"] for d in deploybot.DEPLOYMENTS] == ["staging"]
    assert [e.kind for e in thread.events].count("approval_requested") == 1
    replay_thread(deploybot.agent, thread)


async def test_a_new_message_from_a_person_starts_a_new_row(deploybot: ModuleType) -> None:
    done = intent("done_for_now", message="ok")
    model = ScriptedModel([STAGING, STAGING, done, STAGING, done])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy to staging, twice")
    assert thread.status == Status.DONE
    await rt.message(thread.id, "and once more please")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert "invalid_output" not in [e.kind for e in thread.events]
    assert len(deploybot.DEPLOYMENTS) == 3


@pytest.mark.parametrize(("limit", "refused"), [(0, 0), (2, 2), (4, 0)])
async def test_the_limit_is_the_agent_s(deploybot: ModuleType, limit: int, refused: int) -> None:
    base = deploybot.agent
    agent = Agent(
        "deploybot",
        tools=[base.registry.get(n) for n in ("list_git_tags", "deploy_backend")],
        max_repeated_calls=limit,
    )
    model = ScriptedModel([STAGING] * 3 + [intent("done_for_now", message="ok")] * 3)
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "deploy")
    invalid = [e for e in thread.events if e.kind == "invalid_output"]
    assert len(invalid) == refused


def test_one_repeat_allowed_makes_no_sense() -> None:
    from threadline import ConfigError

    with pytest.raises(ConfigError, match="max_repeated_calls"):
        Agent("a", max_repeated_calls=1)


@pytest.mark.local_model
async def test_the_tiny_local_model_repeating_its_deploy_is_stopped(deploybot: ModuleType) -> None:
    """The real failure: SmolLM2-135M (out of process) deploys to staging again and again."""
    pytest.importorskip("llama_cpp", reason="needs threadline[local] (llama-cpp-python)")
    from threadline.models.registry import resolve_model

    model = resolve_model("local:smollm2")
    try:
        rt = Runtime(MemoryStore(), model=model)
        thread = await rt.launch(deploybot.agent, "deploy the latest tag of the backend to staging")
    finally:
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()
    calls = [e for e in thread.events if e.kind == "tool_call" and e.tool == "deploy_backend"]
    report = [(e.kind, getattr(e, "reason", getattr(e, "arguments", ""))) for e in thread.events]
    assert calls, report
    assert len(deploybot.DEPLOYMENTS) <= 2, report  # never a third identical deploy
    refused = [e for e in thread.events if e.kind == "invalid_output" and "in a row" in e.reason]
    if thread.status == Status.ESCALATED:
        assert refused, report  # it escalated because it kept repeating, not by step limit
        assert thread.state.run_steps < deploybot.agent.max_steps
    else:
        assert thread.status == Status.DONE, report
    replay_thread(deploybot.agent, thread)


async def test_trying_a_failed_call_again_is_a_retry_not_a_loop() -> None:
    """A tool behind a dropped connection fails twice, then answers: the model's third
    identical call runs (the consecutive-error limit bounds retries, not the loop guard)."""
    from threadline import tool

    attempts: list[str] = []

    @tool
    def lookup(order: str) -> str:
        """Look an order up."""
        attempts.append(order)
        if len(attempts) < 3:
            raise ConnectionError("server closed the connection unexpectedly")
        return f"{order}: paid"

    call = intent("lookup", order="o-1")
    model = ScriptedModel([call, call, call, intent("done_for_now", message="paid")])
    agent = Agent("shop", tools=[lookup], max_consecutive_errors=3)
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "is o-1 paid?")
    assert thread.status == Status.DONE, [e.kind for e in thread.events]
    assert attempts == ["o-1"] * 3
    assert "invalid_output" not in [e.kind for e in thread.events]
    replay_thread(agent, thread)


async def test_a_call_that_succeeded_twice_then_failed_still_counts_its_successes() -> None:
    """Only failed calls leave the row: two successes and a repeat are still refused."""
    from threadline import tool

    @tool
    def lookup(order: str) -> str:
        """Look an order up."""
        return f"{order}: paid"

    call = intent("lookup", order="o-1")
    model = ScriptedModel([call] * 3 + [intent("done_for_now", message="paid")])
    thread = await Runtime(MemoryStore(), model=model).launch(Agent("shop", tools=[lookup]), "?")
    assert [e.kind for e in thread.events].count("invalid_output") == 1
    assert thread.status == Status.DONE


def test_a_repeat_is_the_same_json_not_merely_equal_values() -> None:
    """The history keeps calls, not their signatures (a signature is spelled only for a
    candidate): `1` and `1.0` compare equal in Python but are different JSON, so neither a
    repeat nor a rejected call; key order does not matter."""
    from datetime import UTC, datetime

    from threadline.events import ToolCall
    from threadline.loop_guard import CallHistory, repeat_reason

    def call(**arguments: object) -> ToolCall:
        at = datetime.now(UTC)
        return ToolCall(seq=9, at=at, call_id="c9", tool="pay", version="1", arguments=arguments)

    history = CallHistory(
        answers=((("pay", {"amount": 1, "to": "a"}),), (("pay", {"amount": 1, "to": "a"}),)),
        rejected=((("pay", {"amount": 2}), "too much"), (("pay", {"amount": 2}), "first")),
    )
    assert repeat_reason(history, [call(amount=1.0, to="a")], 3, frozenset()) is None
    assert repeat_reason(history, [call(amount=True, to="a")], 3, frozenset()) is None
    repeated = repeat_reason(history, [call(to="a", amount=1)], 3, frozenset())
    assert repeated is not None and "3 times in a row" in repeated
    assert repeat_reason(history, [call(amount=2.0)], 3, frozenset()) is None
    rejected = repeat_reason(history, [call(amount=2)], 3, frozenset())
    assert rejected is not None and 'they said: "first"' in rejected  # the earliest comment
    assert repeat_reason(history, [call(amount=1, to="a")], 3, frozenset({"pay"})) is None
