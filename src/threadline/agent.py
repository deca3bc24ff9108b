"""An agent: a prompt, a set of tools and the limits of its control flow (factor 10).

An `Agent` is plain configuration; it holds no state and does no I/O. The same agent
object decides for any number of threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .tools import Tool, ToolRegistry, done_for_now, request_more_information

if TYPE_CHECKING:
    from .events import Thread
    from .models.base import Context, Model

__all__ = ["Agent", "intent_schema"]

Renderer = Callable[["Agent", "Thread"], "Context"]


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
        renderer: builds the model's context from the thread; default is the compact form.
        options: free-form settings read by renderers and budgets (e.g. `context_window`).

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
    renderer: Renderer | None = None
    human_tools: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    registry: ToolRegistry = field(init=False)
    _output_schema: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"agent {self.name}: max_steps must be at least 1")
        if self.max_consecutive_errors < 1:
            raise ConfigError(f"agent {self.name}: max_consecutive_errors must be at least 1")
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

    def render(self, thread: Thread) -> Context:
        """The context the next model call receives (pure function of the thread)."""
        if self.renderer is not None:
            return self.renderer(self, thread)
        from .context.render import render_context

        return render_context(self, thread)


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
