"""Pre-fetch (appendix factor 13): fetch what the model will surely need, before it asks.

An agent declares deterministic steps in `Agent.options["prefetch"]`: a list of
`(tool, arguments)` pairs, where `tool` is a `Tool` or a tool name of the agent and
`arguments` is a dict or a function `(message_text, metadata) -> dict` of the launch input::

    Agent(..., options={"prefetch": [
        ("list_git_tags", {}),
        ("get_user_details", lambda text, meta: {"user_id": meta["user_id"]}),
    ]})

At launch the runtime appends one ordinary, validated `tool_call` per step (call id
`prefetch-<n>`) right after the first user message. `decide` then runs them like any other
pending call (approval policies and side-effect rules included) before the first model call,
and their results are budgeted as *retrieved* material. Replay feeds these calls in as
inputs: they came from the agent's configuration, not from a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import ConfigError
from ..events import Event, ToolCall
from ..tools import Tool, compact_validation_error
from .render import PREFETCH_PREFIX

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["PREFETCH_PREFIX", "is_prefetch", "prefetch_events"]


def is_prefetch(event: Event) -> bool:
    """Whether `event` is a pre-fetched tool call (an input for replay)."""
    call_id = getattr(event, "call_id", None)
    return (
        event.kind == "tool_call"
        and isinstance(call_id, str)
        and call_id.startswith(PREFETCH_PREFIX)
    )


def prefetch_events(
    agent: Agent, text: str, metadata: Mapping[str, Any], *, seq: int, at: datetime
) -> list[Event]:
    """The `tool_call` events of the agent's pre-fetch steps for one launch.

    Raises:
        ConfigError: a step names an unknown tool or its arguments fail the tool's schema
            (a configuration bug: nothing is written).
    """
    steps = agent.options.get("prefetch") or ()
    events: list[Event] = []
    for n, step in enumerate(steps, 1):
        try:
            ref, args = step
        except (TypeError, ValueError):
            raise ConfigError(
                f"agent {agent.name}: prefetch step {n} must be (tool, arguments)"
            ) from None
        name = ref.name if isinstance(ref, Tool) else str(ref)
        tool = agent.registry.get(name)
        if tool is None:
            raise ConfigError(f"agent {agent.name}: prefetch step {n} names unknown tool {name!r}")
        try:
            values = args(text, dict(metadata)) if callable(args) else args
        except Exception as exc:
            raise ConfigError(
                f"agent {agent.name}: prefetch step {n}: computing the "
                f"arguments failed: {type(exc).__name__}: {exc}"
            ) from None
        try:
            validated = tool.validate(values or {})
        except ValidationError as exc:
            raise ConfigError(
                f"agent {agent.name}: prefetch step {n}: {compact_validation_error(name, exc)}"
            ) from None
        events.append(
            ToolCall(
                seq=seq + len(events),
                at=at,
                call_id=f"{PREFETCH_PREFIX}{n}",
                tool=tool.name,
                version=tool.version,
                arguments=validated.model_dump(mode="json"),
            )
        )
    return events
