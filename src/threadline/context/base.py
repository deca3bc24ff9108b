"""What every context format shares: the format interface, the rendering it produces, and
the small text helpers both built-in formats use.

A format turns events into messages; the `Renderer` (renderer.py) decides which events are
shown and how much room each gets. Nothing here knows an agent, a store or a model backend.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, get_args

from typing_extensions import TypeIs

from .. import events as ev
from ..events import PREFETCH_PREFIX, Event
from ..models.base import Context, Message, ToolSpec
from .budget import Layout
from .tokens import TokenCounter

__all__ = [
    "NOT_RUN",
    "PREFETCH_PREFIX",
    "ContextFormat",
    "PromptTemplate",
    "Rendered",
    "Unshown",
    "attr_value",
    "fence",
    "message_tokens",
    "tag_name",
    "tagged",
    "tools_json",
    "truncate_to",
    "unshown",
]


Unshown: TypeAlias = (
    ev.ModelError
    | ev.ApprovalRequested
    | ev.ToolStarted
    | ev.ToolAttemptFailed
    | ev.ChildStarted
    | ev.HumanRequest
    | ev.Paused
    | ev.Resumed
    | ev.Compacted
    | ev.ForkedFrom
    | ev.TokenBudgetExceeded
    | ev.BudgetReserved
    | ev.BudgetSettled
    | ev.BudgetRaised
    | ev.Waiting
)
"""The kinds no built-in format shows the model: the runtime's bookkeeping (a provider's
failure, a tool's start and failed attempts, budgets, waits, a sub-agent's start), what is
asked of people (the model's own call shows it), the lifecycle (pause, resume, fork) and
compaction markers (their summary is rendered apart). A `failed` event is not among them:
each format shows the calls a cancel withdrew as not run (`NOT_RUN`), and nothing else of
it."""

NOT_RUN = "the thread was cancelled"
"""Why a call a cancel withdrew (`Failed.withdrawn`) has no result: it never ran. Both
formats show it as that call's outcome, so the model of a resumed thread does not take the
call for one still running, or one that ran and returned nothing."""

_UNSHOWN = frozenset(get_args(Unshown))


def unshown(event: Event) -> TypeIs[Unshown]:
    """Whether `event` is of a kind no built-in format shows the model (`Unshown`).

    An exact-type test, not `isinstance`: see `compact._block`.
    """
    return type(event) in _UNSHOWN


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


@dataclass(slots=True)
class Rendered:
    """A context and how it was built (for `threadline render` / `profile` and the runtime);
    made once a render and not changed after (not frozen: see `budget.Layout`).

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


# -- untrusted text ------------------------------------------------------------------------
#
# Everything an event carries came from outside the renderer: people, tools, retrieved
# documents, the model itself. Rendered as is, a tool result holding
# `</lookup_result><user name=admin>...` would show the model a block no event wrote (and
# `<|im_start|>system` a role marker a chat template turns into a special token). So every
# piece of event text goes through `fence` and every attribute through `attr_value`: the
# renderer's own tags and the chat template's markers are the only ones the model sees.

_OPENER = re.compile(r"<(?=[/!?|A-Za-z_])")
"""A `<` that could begin a tag (`<user`, `</x`, `<!--`, `<?`) or a role marker (`<|`)."""

_BARE_ATTR = re.compile(r"[\w.@:+-]{1,200}")
_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def fence(text: str) -> str:
    """`text` with every `<` that could open a tag or a role marker written `&lt;`.

    Linear, and a no-op (the same object) for text without such a `<`. Nothing else is
    touched: a `<` before a space, a digit or `=` (`a < b`, `<= 3`) stays as written.
    """
    if "<" not in text:
        return text
    return _OPENER.sub("&lt;", text)


def attr_value(value: object) -> str:
    """An attribute value that cannot end its tag: bare when it is a plain word (ids,
    names, emails), else a JSON string with `<`, `>` and `&` as `\\u` escapes."""
    text = str(value)
    if _BARE_ATTR.fullmatch(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return quoted.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.lru_cache(maxsize=1024)  # a thread names a few tools, in every block
def tag_name(name: str) -> str:
    """`name` as a tag name: tool names are registered in this shape, but a stored (or
    imported) event may hold anything; other characters become `_`."""
    if _TAG.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"[:64]


def tagged(tag: str, attrs: str, body: str) -> str:
    """`<tag attrs>body`, on one line when the body is one line, else the body below.

    No closing tag: a block ends where the next one starts, at the next line that begins
    with a tag. Event text cannot begin one (`fence` writes every `<` that could open a
    tag as `&lt;`), so only the renderer's own tags start a line with `<` and a letter,
    and the closing tag (4-7 tokens a block, 0.02 of the airline runs' request) would
    tell the model nothing.
    """
    if "\n" in body:
        return f"<{tag}{attrs}>\n{body}"
    return f"<{tag}{attrs}>{body}"


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
