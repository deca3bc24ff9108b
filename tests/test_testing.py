"""The test models shipped in `threadline.testing`, as users test their agents."""

from __future__ import annotations

import pytest

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.errors import ModelError
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
