"""An agent for the `threadline mcp` budget test: its model always asks for another lookup
(never the same one twice), so its budget of two model calls stops it."""

from __future__ import annotations

from threadline import Agent, Budget, tool
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent


@tool
def lookup(n: int) -> str:
    """Look up record n."""
    return f"record {n}"


def decide(context: Context) -> dict[str, object]:
    return intent("lookup", n=context.model_calls)


agent = Agent(
    "spender",
    tools=[lookup],
    instructions="Look everything up.",
    model=FunctionModel(decide),
    budget=Budget(max_model_calls=2),
    max_steps=1000,
)
