"""Pre-fetch (appendix factor 13): fetch what the model will surely need, before it asks.

An agent declares deterministic steps in `ContextSettings.prefetch`: a list of
`(tool, arguments)` pairs, where `tool` is a `Tool` or a tool name of the agent and
`arguments` is a dict or a function `(message_text, metadata) -> dict` of the launch input::

    Agent(..., context=ContextSettings(prefetch=[
        ("list_git_tags", {}),
        ("get_user_details", lambda text, meta: {"user_id": meta["user_id"]}),
    ]))

At launch the runtime appends one ordinary, validated `tool_call` per step (call id
`prefetch-<n>`) right after the first user message. `decide` then runs them like any other
pending call (approval policies and side-effect rules included) before the first model call,
and their results are budgeted as *retrieved* material. Replay feeds these calls in as
inputs: they came from the agent's configuration, not from a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from ..events import PREFETCH_PREFIX, Event, ToolCall, is_prefetch
from ..tools import Tool, ToolRegistry, compact_validation_error

__all__ = ["PREFETCH_PREFIX", "PrefetchStep", "is_prefetch", "prefetch_events"]

PrefetchStep = tuple[
    Tool | str, Mapping[str, Any] | Callable[[str, dict[str, Any]], Mapping[str, Any]]
]
"""`(tool or tool name, arguments or a function (text, metadata) -> arguments)`."""


def prefetch_events(
    steps: Sequence[PrefetchStep],
    registry: ToolRegistry,
    text: str,
    metadata: Mapping[str, Any],
    *,
    seq: int,
    at: datetime,
    owner: str = "agent",
    label: str = "",
) -> list[Event]:
    """The `tool_call` events of the pre-fetch `steps` for one launch (or one message).

    Args:
        registry: the tools the steps may name.
        owner: who declared the steps (named in errors).
        label: inserted into the call ids (`prefetch-<label><n>`), so the searches of a
            later user message (label `m<seq>-`) never reuse the launch's call ids.

    Raises:
        ConfigError: a step names an unknown tool or its arguments fail the tool's schema
            (a configuration bug: nothing is written).
    """
    events: list[Event] = []
    for n, step in enumerate(steps, 1):
        try:
            ref, args = step
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}: prefetch step {n} must be (tool, arguments)") from None
        name = ref.name if isinstance(ref, Tool) else str(ref)
        tool = registry.get(name)
        if tool is None:
            raise ConfigError(f"{owner}: prefetch step {n} names unknown tool {name!r}")
        try:
            values = args(text, dict(metadata)) if callable(args) else args
        except Exception as exc:
            raise ConfigError(
                f"{owner}: prefetch step {n}: computing the "
                f"arguments failed: {type(exc).__name__}: {exc}"
            ) from None
        try:
            validated = tool.validate(values or {})
        except ValidationError as exc:
            raise ConfigError(
                f"{owner}: prefetch step {n}: {compact_validation_error(name, exc)}"
            ) from None
        events.append(
            ToolCall(
                seq=seq + len(events),
                at=at,
                call_id=f"{PREFETCH_PREFIX}{label}{n}",
                tool=tool.name,
                version=tool.version,
                arguments=validated.model_dump(mode="json"),
            )
        )
    return events
