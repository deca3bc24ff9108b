"""An agent for the `threadline worker` CLI test: one slow idempotent tool, then done."""

from __future__ import annotations

import asyncio

from threadline import Agent, tool
from threadline.events import Thread
from threadline.models.base import Context, Message
from threadline.testing import FunctionModel, intent


@tool(side_effects=True, idempotent=True)
async def slow(seconds: float) -> str:
    """Take a while."""
    await asyncio.sleep(seconds)
    return "slept"


def outline(agent: Agent, thread: Thread) -> Context:
    return Context(system="", messages=(Message("user", " ".join(e.kind for e in thread.events)),))


def script(context: Context) -> object:
    if "tool_result" in context.as_text():
        return intent("done_for_now", message="ok")
    return intent("slow", seconds=1.5)


agent = Agent("sleepy", tools=[slow], model=FunctionModel(script), renderer=outline)
