"""An agent for the CLI guard test: a policy guard blocks every drop."""

from __future__ import annotations

from threadline import Agent, GuardCall, GuardDecision, tool
from threadline.guards import allow, block


@tool(side_effects=True)
def drop_table(table: str) -> str:
    """Delete a table for good."""
    return f"dropped {table}"


def no_drops(call: GuardCall) -> GuardDecision:
    if call.tool == "drop_table":
        return block("[red]never[/red] drop tables here; archive them")
    return allow()


agent = Agent("guarded", tools=[drop_table], guards=[no_drops])
