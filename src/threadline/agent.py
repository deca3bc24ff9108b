"""An agent: a prompt, a set of tools and the limits of its control flow (factor 10).

An `Agent` is plain configuration; it holds no state and does no I/O. The same agent
object decides for any number of threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context.settings import ContextSettings
from .errors import ConfigError
from .tools import Tool, ToolRegistry, done_for_now, request_more_information

if TYPE_CHECKING:
    from .events import Thread
    from .models.base import Context, Model

__all__ = ["Agent", "Approvers", "ContextSettings", "intent_schema"]

RenderFunction = Callable[["Agent", "Thread"], "Context"]
"""A user's own rendering: `(agent, thread) -> Context` (it owns format and budget)."""

Approvers = Sequence[str] | Mapping[str, Sequence[str]]
"""Who may answer approvals: names for every tool, or tool name (or `"*"`) -> names."""


@dataclass(eq=False)
class Agent:
    """A small, focused agent.

    Args:
        name: how threads refer to the agent (recorded on every thread).
        tools: the intents the model may choose. `request_more_information` and
            `done_for_now` are added unless `human_tools=False`.
        instructions: the system prompt text, used when no `prompt` file is given.
        prompt: a prompt template (a path or a `threadline.prompts.Prompt`); see docs/prompts.
        max_steps: model calls allowed between two human inputs before escalating.
        max_consecutive_errors: invalid outputs / tool errors / model errors in a row before
            escalating to a human (factor 9).
        model: a `Model` to use instead of the runtime's configured one (tests, pinning).
        renderer: builds the model's context from the thread, replacing the built-in
            formats (`(agent, thread) -> Context`).
        context: how the context is rendered, budgeted, summarised and redacted
            (`ContextSettings`).
        approvers: who may answer this agent's approvals: a list of names (every tool), or
            a mapping of tool name (or `"*"`) to names. None named: anyone with the
            `respond` scope.

    Invariants:
        * `registry` holds every tool version the agent knows; the model is shown only the
          newest version of each name.
    """

    name: str
    tools: Sequence[Tool] = ()
    instructions: str = ""
    prompt: Any = None
    max_steps: int = 20
    max_consecutive_errors: int = 3
    model: Model | None = None
    renderer: RenderFunction | None = None
    human_tools: bool = True
    context: ContextSettings = field(default_factory=ContextSettings)
    approvers: Approvers = ()
    registry: ToolRegistry = field(init=False)
    _output_schema: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"agent {self.name}: max_steps must be at least 1")
        if self.max_consecutive_errors < 1:
            raise ConfigError(f"agent {self.name}: max_consecutive_errors must be at least 1")
        if not isinstance(self.context, ContextSettings):
            raise ConfigError(
                f"agent {self.name}: context must be a threadline.ContextSettings, "
                f"not {type(self.context).__name__}"
            )
        if isinstance(self.approvers, str):
            raise ConfigError(f"agent {self.name}: approvers must be a list of names or a mapping")
        tools = list(self.tools)
        if self.human_tools:
            names = {t.name for t in tools}
            tools += [t for t in (request_more_information, done_for_now) if t.name not in names]
        self.registry = ToolRegistry(tools)

    def add_tools(self, tools: Sequence[Tool]) -> None:
        """Register tools found after construction (an MCP server's `tools/list_changed`):
        each becomes the version the model is shown; older versions stay for old threads."""
        for t in tools:
            self.registry.register(t, newest=True)
        self._output_schema = None

    def visible_tools(self) -> list[Tool]:
        """The newest version of each tool: what the model is shown."""
        return self.registry.latest()

    def output_schema(self) -> dict[str, Any]:
        """JSON Schema of one intent: a union discriminated on `intent` (cached)."""
        if self._output_schema is None:
            self._output_schema = intent_schema(self.visible_tools())
        return self._output_schema

    def approvers_for(self, tool: str) -> tuple[str, ...]:
        """The people allowed to answer an approval of `tool` (empty: anyone)."""
        table = self.approvers
        names = table.get(tool, table.get("*", ())) if isinstance(table, Mapping) else table
        return tuple(str(n) for n in names)


def intent_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """`{"intent": <name>, "arguments": {...}}` for each tool, as one `oneOf` schema."""
    variants = []
    for t in tools:
        variants.append(
            {
                "type": "object",
                "properties": {
                    "intent": {"type": "string", "const": t.name},
                    "arguments": t.schema(),
                },
                "required": ["intent", "arguments"],
                "additionalProperties": False,
            }
        )
    return {"oneOf": variants}
