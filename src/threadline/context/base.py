"""What every context format shares: the format interface, the rendering it produces, and
the small text helpers both built-in formats use.

A format turns events into messages; the `Renderer` (renderer.py) decides which events are
shown and how much room each gets. Nothing here knows an agent, a store or a model backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..events import PREFETCH_PREFIX, Event
from ..models.base import Context, Message, ToolSpec
from .budget import Layout
from .tokens import TokenCounter

__all__ = [
    "PREFETCH_PREFIX",
    "ContextFormat",
    "PromptTemplate",
    "Rendered",
    "message_tokens",
    "tagged",
    "tools_json",
    "truncate_to",
]


class PromptTemplate(Protocol):
    """A loaded system prompt (`threadline.prompts.Prompt` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    def render(self, variables: Mapping[str, Any] | None = None) -> str: ...


class ContextFormat(Protocol):
    """How events become messages. Implement it to add a format (see `messages.py`)."""

    name: str
    native_tools: bool
    """True: tools travel as `Context.tools` (a backend sends them natively). False: they
    are part of the system text and `Context.tools` is empty, so no backend sends them twice
    (backends then constrain the answer with `Context.output_schema`)."""

    def system(self, base: str, tools: Sequence[ToolSpec]) -> str: ...

    def tools_text(self, tools: Sequence[ToolSpec]) -> str:
        """The text the tool definitions cost (in the system text or sent natively)."""
        ...

    def block(
        self, events: Sequence[Event], i: int, reduced: bool, max_tokens: int, counter: TokenCounter
    ) -> Any:
        """The payload of `events[i]` (None when it renders nothing)."""
        ...

    def tokens(self, payload: Any, counter: TokenCounter) -> int: ...

    def summary(self, from_seq: int, to_seq: int, text: str) -> Any: ...

    def assemble(self, payloads: Sequence[Any]) -> tuple[Message, ...]: ...


@dataclass(frozen=True, slots=True)
class Rendered:
    """A context and how it was built (for `threadline render` / `profile` and the runtime).

    Attributes:
        context: exactly what the model call receives.
        layout: which events are shown, reduced or summarised.
        sections: tokens per section: `system`, `tools`, `retrieved`, `summary` and
            `history:<event kind>`.
        compaction: `(from_seq, to_seq, summary)` the runtime stores as a `compacted` event
            before calling the model (None when none is needed).
    """

    context: Context
    layout: Layout
    sections: dict[str, int]
    compaction: tuple[int, int, str] | None


def truncate_to(text: str, max_tokens: int, counter: TokenCounter, seq: int) -> str:
    """`text` cut to about `max_tokens`, ending with a pointer to the full event."""
    total = counter.count(text)
    if total <= max_tokens:
        return text
    keep = max(0, int(len(text) * max_tokens / total) - 40)
    cut = text.rfind("\n", 0, keep)
    head = text[: cut if cut > keep // 2 else keep]
    return f"{head}\n… [truncated: full result in event {seq}]"


def tagged(tag: str, attrs: str, body: str) -> str:
    """`<tag attrs>body</tag>`, on one line when the body is one line."""
    if "\n" in body:
        return f"<{tag}{attrs}>\n{body}\n</{tag}>"
    return f"<{tag}{attrs}>{body}</{tag}>"


def tools_json(tools: Sequence[ToolSpec]) -> str:
    """Tool definitions as a chat-completions request carries them (compact JSON)."""
    return json.dumps(
        [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in tools
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def message_tokens(messages: Sequence[Message], counter: TokenCounter) -> int:
    """Tokens of chat messages as a chat API counts them (content, calls, framing)."""
    total = 0
    for m in messages:
        total += 4 + counter.count(m.content)
        for c in m.tool_calls:
            total += 8 + counter.count(c.name) + counter.count(c.arguments)
    return total
