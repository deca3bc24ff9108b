"""An agent is plain, typed configuration: tools, limits, approvers and context settings."""

from __future__ import annotations

import pytest

from threadline import Agent, ContextSettings, tool
from threadline.errors import ConfigError


@tool
def ping() -> str:
    """Ping."""
    return "pong"


def test_the_human_tools_are_added_unless_switched_off() -> None:
    assert [t.name for t in Agent("a", tools=[ping]).visible_tools()] == [
        "ping",
        "request_more_information",
        "done_for_now",
    ]
    assert [t.name for t in Agent("b", tools=[ping], human_tools=False).visible_tools()] == ["ping"]


def test_limits_and_settings_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        Agent("a", max_steps=0)
    with pytest.raises(ConfigError, match="max_consecutive_errors"):
        Agent("a", max_consecutive_errors=0)
    with pytest.raises(ConfigError, match="ContextSettings"):
        Agent("a", context={"context_window": 1000})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="approvers"):
        Agent("a", approvers="alice")
    assert isinstance(Agent("a").context, ContextSettings)


def test_approvers_per_tool_with_a_default() -> None:
    everyone = Agent("a", tools=[ping])
    assert everyone.approvers_for("ping") == ()
    listed = Agent("b", tools=[ping], approvers=["alice", "bob"])
    assert listed.approvers_for("ping") == ("alice", "bob")
    table = Agent("c", tools=[ping], approvers={"ping": ["carol"], "*": ["dan"]})
    assert table.approvers_for("ping") == ("carol",)
    assert table.approvers_for("other") == ("dan",)


def test_the_output_schema_is_one_intent_per_visible_tool() -> None:
    agent = Agent("a", tools=[ping])
    schema = agent.output_schema()
    assert [v["properties"]["intent"]["const"] for v in schema["oneOf"]] == [
        "ping",
        "request_more_information",
        "done_for_now",
    ]
    assert agent.output_schema() is schema  # cached
