"""Pre-fetch: declared tool calls run before the first model call and replay as inputs."""

from __future__ import annotations

import pytest

from threadline import Agent, ContextSettings, MemoryStore, Runtime, Status, tool
from threadline.errors import ConfigError
from threadline.prompts import renderer_for
from threadline.testing import ScriptedModel, intent

CALLS: list[str] = []


@tool
def list_tags() -> list[str]:
    """List release tags."""
    CALLS.append("list_tags")
    return ["v1.0", "v1.1"]


@tool
def get_user(user_id: str) -> dict:
    """A user's profile."""
    CALLS.append(f"get_user:{user_id}")
    return {"id": user_id, "plan": "pro"}


def _agent() -> Agent:
    return Agent(
        "pre",
        tools=[list_tags, get_user],
        instructions="Help.",
        context=ContextSettings(
            prefetch=[
                (list_tags, {}),
                ("get_user", lambda text, meta: {"user_id": meta["user_id"]}),
            ]
        ),
    )


async def test_prefetched_results_are_in_the_first_context_and_replay() -> None:
    CALLS.clear()
    model = ScriptedModel([intent("done_for_now", message="v1.1 for a pro user")])
    rt = Runtime(MemoryStore(), agents=[_agent()], model=model)
    thread = await rt.launch("pre", "which tag?", metadata={"user_id": "u7"})
    assert thread.status is Status.DONE
    assert CALLS == ["list_tags", "get_user:u7"]
    kinds = [e.kind for e in thread.events]
    assert kinds[:6] == [
        "user_message",
        "tool_call",
        "tool_call",
        "tool_result",
        "tool_result",
        "model_call",
    ]
    first = model.contexts[0].messages[0].content
    assert "v1.0" in first and "plan: pro" in first
    rendered = renderer_for(_agent()).render(thread)
    assert rendered.sections["retrieved"] > 0
    CALLS.clear()
    await rt.replay(thread.id)
    assert CALLS == []  # replay never re-runs tools


async def test_a_bad_prefetch_step_is_a_config_error_and_writes_nothing() -> None:
    agent = Agent("bad", tools=[get_user], context=ContextSettings(prefetch=[("get_user", {})]))
    store = MemoryStore()
    rt = Runtime(store, agents=[agent], model=ScriptedModel([]))
    with pytest.raises(ConfigError, match="user_id"):
        await rt.launch(agent, "hi")
    assert (await store.list()).items == []
