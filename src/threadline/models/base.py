"""The one-method model interface and the values that cross it.

`Model.request(context) -> ModelOutput` is the whole contract a backend implements. The
context is already rendered (the renderer owns every token); the output is returned
verbatim (text and/or native tool calls). Validating it into an intent is the reducer's
job, not the backend's, so every backend is held to the same schema.

Backends raise `threadline.errors.ModelError` (with `retryable`) when a provider fails; the
runtime turns that into a `model_error` event, never a crashed loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..events import RawToolCall

__all__ = ["Context", "Message", "Model", "ModelOutput", "ToolSpec"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model is shown it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. `tool_calls` and `tool_call_id` carry native tool-call turns."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[RawToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """Exactly what one model call receives.

    Attributes:
        system: the system prompt text.
        messages: the conversation after the system prompt.
        tools: the intents the model may choose, as specs.
        output_schema: JSON Schema of one valid intent (a discriminated union on `intent`);
            backends that constrain output (JSON schema mode, grammars) use it.
        max_output_tokens: the output reservation of the token budget.
        prompt_name / prompt_version / prompt_hash: recorded in the `model_call` event.
        input_tokens: the renderer's own count of the context, when it made one.
    """

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    output_schema: dict[str, Any] = field(default_factory=dict)
    max_output_tokens: int = 1024
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    input_tokens: int | None = None

    def as_text(self) -> str:
        """The context as plain text, for display (`threadline render`) and test models."""
        parts = [f"[system]\n{self.system}"] if self.system else []
        for m in self.messages:
            head = f"[{m.role}{' ' + m.tool_call_id if m.tool_call_id else ''}]"
            body = m.content
            for tc in m.tool_calls:
                body += f"\n<call {tc.id or ''} {tc.name}>{tc.arguments}</call>"
            parts.append(f"{head}\n{body}")
        return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """A model's answer, verbatim, with usage.

    Attributes:
        text: the text output (for JSON-mode backends, the JSON intent).
        tool_calls: native tool calls, arguments unparsed.
        model: the pinned model id that answered (recorded in the event).
        cost_usd: None when the price is unknown.
    """

    text: str = ""
    tool_calls: tuple[RawToolCall, ...] = ()
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0


@runtime_checkable
class Model(Protocol):
    """Anything that turns a rendered context into a `ModelOutput`."""

    @property
    def model_id(self) -> str:
        """The pinned id recorded in every `model_call` event."""
        ...

    async def request(self, context: Context) -> ModelOutput:
        """Answer one context. Raises `ModelError` on provider failure."""
        ...
