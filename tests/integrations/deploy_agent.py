"""A small agent for the `threadline mcp` tests: it deploys what it is asked (a tool that
needs approval), then says it is done. Its model is a deterministic `FunctionModel`."""

from __future__ import annotations

import re

from threadline import Agent, tool
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent


@tool(side_effects=True, approval="always")
def deploy(tag: str) -> str:
    """Deploy a tag to production."""
    return f"deployed {tag}"


def decide(context: Context) -> dict[str, object]:
    seen = "\n".join(m.content for m in context.messages)
    if "deployed v" in seen:
        return intent("done_for_now", message="the deploy is out")
    if "rejected" in seen.lower():
        return intent("done_for_now", message="not deployed")
    tag = re.search(r"\bv[0-9]+(?:\.[0-9]+)*", seen)
    if tag is None:
        return intent("request_more_information", message="Which tag should I deploy?")
    return intent("deploy", tag=tag.group(0))


agent = Agent(
    "deployer",
    tools=[deploy],
    instructions="Deploy the tag the user asks for.",
    model=FunctionModel(decide),
)
