"""The test models shipped in `threadline.testing`, as users test their agents."""

from __future__ import annotations

import pytest

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.errors import ModelError
from threadline.events import ModelCall, Thread
from threadline.models.base import Context, Message, ModelOutput, ModelProfile
from threadline.testing import FunctionModel, ReplayModel, ScriptedModel, intent

CONTEXT = Context(system="s", messages=(Message("user", "hi"),))


@tool
def ping() -> str:
    """Ping."""
    return "pong"


async def test_scripted_answers_in_order_then_fails_loudly() -> None:
    model = ScriptedModel([intent("ping"), "not json", ModelError("provider down")])
    assert (await model.request(CONTEXT)).text == '{"intent": "ping", "arguments": {}}'
    assert (await model.request(CONTEXT)).text == "not json"
    with pytest.raises(ModelError, match="provider down"):
        await model.request(CONTEXT)
    with pytest.raises(ModelError, match="ran out of answers"):
        await model.request(CONTEXT)
    assert len(model.contexts) == 4 and model.remaining == -1


async def test_function_models_may_be_async_and_declare_a_profile() -> None:
    async def answer(context: Context) -> object:
        return ModelOutput(text=context.messages[0].content, model="echo")

    profile = ModelProfile(context_window=4_096)
    model = FunctionModel(answer, model_id="echo", profile=profile)
    assert (await model.request(CONTEXT)).text == "hi"
    assert model.profile is profile
    assert ScriptedModel([], model_id="openai:gpt-4o").profile.context_window == 128_000


async def test_replay_model_answers_with_the_recorded_outputs() -> None:
    agent = Agent("p", tools=[ping])
    model = ScriptedModel([intent("ping"), intent("done_for_now", message="pong")])
    recorded = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "ping")
    replay = ReplayModel(recorded)
    again = await Runtime(MemoryStore(), agents=[agent], model=replay).launch(agent, "ping")
    assert [e.kind for e in again.events] == [e.kind for e in recorded.events]
    with pytest.raises(ModelError, match="no recorded answer #3"):
        await replay.request(CONTEXT)


async def test_replayed_calls_record_what_the_recorded_calls_did() -> None:
    """Every field a `model_call` records of its answer comes back from the replay: text,
    tool calls, model, tokens (cache counts too), cost and latency."""
    agent = Agent("p", tools=[ping])
    answers = [
        ModelOutput(
            text='{"intent": "ping", "arguments": {}}',
            model="openai:gpt-4.1-mini",
            input_tokens=120,
            output_tokens=9,
            cost_usd=0.00006,
            latency_ms=412.5,
            cache_write_tokens=64,
            cache_read_tokens=32,
        ),
        ModelOutput(text='{"intent": "done_for_now", "arguments": {"message": "pong"}}'),
    ]
    model = ScriptedModel(answers)
    recorded = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "ping")
    replay = ReplayModel(recorded)
    again = await Runtime(MemoryStore(), agents=[agent], model=replay).launch(agent, "ping")

    def calls(thread: Thread) -> list[dict[str, object]]:
        return [
            e.model_dump(exclude={"seq", "at"}) for e in thread.events if isinstance(e, ModelCall)
        ]

    assert calls(again) == calls(recorded) and calls(recorded)[0]["latency_ms"] == 412.5
    assert calls(recorded)[0]["cache_read_tokens"] == 32 and len(replay.contexts) == 2


async def test_scripted_model_following_the_thread_continues_where_it_is() -> None:
    """`scripted:answers.json` in a second process: the thread's model calls so far pick
    the answer, so a thread continued elsewhere is not asked the first question again."""
    agent = Agent("q", tools=[ping])
    answers = [
        intent("request_more_information", message="which host?"),
        intent("done_for_now", message="pinged"),
    ]
    store = MemoryStore()
    first = ScriptedModel(answers, follow_thread=True)
    thread = await Runtime(store, agents=[agent], model=first).launch(agent, "ping it")
    assert thread.status.value == "awaiting_human"
    # Another process: a fresh model object reading the same answers.
    second = ScriptedModel(answers, follow_thread=True)
    runtime = Runtime(store, agents=[agent], model=second)
    await runtime.respond(thread.id, thread.state.human_request or "", "host-1")
    thread = await runtime.advance(thread.id)
    assert thread.status.value == "done" and second.contexts[0].model_calls == 1
    assert [e.kind for e in thread.events].count("human_request") == 1
    # Threads one after another in one process still share the list in order.
    shared = ScriptedModel([intent("done_for_now", message="a"), "x"], follow_thread=True)
    one = await Runtime(MemoryStore(), agents=[agent], model=shared).launch(agent, "1")
    two = await Runtime(MemoryStore(), agents=[agent], model=shared).launch(agent, "2")
    assert one.status.value == "done" and two.events[2].kind == "invalid_output"
