"""The compact format (the default): one user message of tagged blocks.

The system prompt holds the instructions and, unless tools travel natively, every tool as a
short signature (`notation.dump_tools`); the whole thread is one user message in which each
event is a tagged block: an opening tag at the start of a line, then the body, which ends
where the next block's tag begins (no closing tags: `base.tagged`). A tool call is a tag
named after the intent with its arguments as YAML-like lines; its result follows as
`<name_result>` (call ids appear only when a result is not right after its call). Results
use the compact notation: mappings as lines, uniform lists as tables.

Every piece of event text is fenced (`base.fence`, `base.attr_value`, `base.tag_name`):
the blocks the model sees are the ones events wrote, whatever a user, a tool, a retrieved
document or the model itself put in their text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, assert_never

from .. import events as ev
from ..models.base import Message, ToolSpec
from .base import (
    NOT_RUN,
    attr_value,
    fence,
    tag_name,
    tagged,
    tools_json,
    truncate_to,
    unshown,
)
from .notation import dump_block, dump_tools
from .tokens import TokenCounter

__all__ = [
    "ANSWER_FORMAT",
    "COMPACT",
    "COMPACT_NATIVE",
    "NATIVE_ANSWER",
    "CompactFormat",
    "call_precedes",
    "call_settled",
    "compact_block",
    "outcome_follows",
    "render_event",
]

NATIVE_ANSWER = "Choose the next step by calling exactly one of the tools."

ANSWER_FORMAT = (
    'Answer with the next step as one JSON object: {"intent": <tool name>, "arguments": '
    "{...}}. Only the listed arguments are accepted."
)


def _attrs(**kwargs: Any) -> str:
    return "".join([f" {k}={attr_value(v)}" for k, v in kwargs.items() if v not in (None, "")])


_BETWEEN = 4
"""Events looked through between a call and its outcome (its start, guards' verdicts)."""


def _outcome_of(event: ev.Event) -> str | None:
    """The call id `event` ends (a result, an error, a guard's block), else None."""
    # Exact types, not `isinstance`: see `_block`.
    if type(event) is ev.ToolResult or type(event) is ev.ToolError:
        return event.call_id
    if type(event) is ev.GuardVerdict and event.verdict == "block":
        return event.call_id
    return None


_BETWEEN_KINDS = frozenset({ev.ToolStarted, ev.ChildStarted, ev.GuardVerdict})


def _in_between(event: ev.Event) -> bool:
    return type(event) in _BETWEEN_KINDS


def outcome_follows(events: Sequence[ev.Event], i: int, call_id: str) -> bool:
    """Whether the outcome of call `call_id` (at `events[i]`) comes right after it."""
    for j in range(i + 1, i + 1 + _BETWEEN):
        if j >= len(events):
            return False
        nxt = events[j]
        ended = _outcome_of(nxt)
        if ended is not None:
            return ended == call_id
        if not _in_between(nxt):
            return False
    return False


def call_settled(events: Sequence[ev.Event], i: int) -> bool:
    """Whether `outcome_follows` for the call at `events[i]` is final: no event appended
    later can change it (it looked at a later event that decided it, or at all it may)."""
    for j in range(i + 1, i + 1 + _BETWEEN):
        if j >= len(events):
            return False
        nxt = events[j]
        if _outcome_of(nxt) is not None or not _in_between(nxt):
            return True
    return True


def settled_before(events: Sequence[ev.Event]) -> int:
    """An index before which every call is settled (`call_settled` looks `_BETWEEN` ahead)."""
    return len(events) - _BETWEEN


def call_precedes(events: Sequence[ev.Event], i: int, call_id: str) -> bool:
    """Whether the call of the outcome at `events[i]` comes right before it."""
    for j in range(i - 1, i - 1 - _BETWEEN, -1):
        if j < 0:
            return False
        prev = events[j]
        if isinstance(prev, ev.ToolCall):
            return prev.call_id == call_id
        if not _in_between(prev) or _outcome_of(prev) is not None:
            return False
    return False


def compact_block(
    events: Sequence[ev.Event],
    i: int,
    *,
    reduced: bool = False,
    max_tokens: int = 800,
    counter: TokenCounter | None = None,
) -> str:
    """`events[i]` as a tagged block ('' for events the model does not need).

    Raises:
        AssertionError: `events[i]` is of a kind this function does not know (every kind
            must be handled here; mypy names the one that is not).
    """
    return _block(events, i, reduced, max_tokens, counter) or ""


def _block(
    events: Sequence[ev.Event],
    i: int,
    reduced: bool,
    max_tokens: int,
    counter: TokenCounter | None,
) -> str | None:
    """`compact_block`, None for nothing: `CompactFormat.block` itself (the renderer's
    call, once a block per pass), with the parameters of `ContextFormat.block`."""
    e = events[i]
    if unshown(e):
        return None
    # The kinds of every turn by exact type first: a class pattern that fails is an
    # `isinstance` through pydantic's ABC metaclass (about 1,000 instructions each), and
    # event classes have no subclasses, so elsewhere this module tests exact types too.
    if type(e) is ev.ToolResult:
        return _result_block(events, i, e, reduced, max_tokens, counter)
    if type(e) is ev.ToolCall:
        return _call_block(events, i, e)
    match e:
        case ev.ModelCall():
            # Text beside native tool calls is the model talking (to the user or itself);
            # without tool calls the text *is* the intent and its tool_call shows it.
            if e.tool_calls and e.output.strip():
                return tagged("assistant", "", fence(e.output))
            return None
        case ev.ToolCall():
            return _call_block(events, i, e)
        case ev.ToolResult():
            return _result_block(events, i, e, reduced, max_tokens, counter)
        case ev.UserMessage():
            return tagged("user", _attrs(name=e.sender), fence(e.text))
        case ev.HumanResponse():
            return tagged("user", _attrs(name=e.by), fence(e.text))
        case ev.RespondedInstead():
            # The person's message in place of a verdict: the call did not run.
            return tagged("user", _attrs(name=e.by, instead_of=e.call_id), fence(e.text))
        case ev.ToolError():
            cid = None if call_precedes(events, i, e.call_id) else e.call_id
            return tagged("error", _attrs(id=cid), fence(f"{e.error_type}: {e.message}"))
        case ev.InvalidOutput():
            return tagged("invalid_output", "", fence(e.reason))
        case ev.GuardVerdict():
            if e.verdict != "block":
                return None  # allowed, or sent to a person: the approval shows what they said
            cid = None if call_precedes(events, i, e.call_id) else e.call_id
            return tagged("blocked", _attrs(id=cid, by=e.guard), fence(e.reason))
        case ev.Approval():
            who = _attrs(id=e.call_id, by=e.by)
            if not e.approved:
                return tagged("rejected", who, fence(e.comment or ""))
            if e.edited_arguments is not None:
                return f"<approved{who} edited>\n{fence(dump_block(e.edited_arguments))}"
            return f"<approved{who}/>"
        case ev.Escalated():
            return tagged("escalated", "", fence(e.reason))
        case ev.Failed():
            # A cancel's: a line for each call it withdrew, which never ran.
            lines = [f"<not_run{_withdrawn(events, i, c)}>{NOT_RUN}" for c in e.withdrawn]
            return "\n".join(lines) or None
        case ev.ExternalEvent():
            body = fence(dump_block(e.payload)) if e.payload else ""
            return f"<event{_attrs(name=e.name, source=e.source)}>\n{body}"
        case ev.WaitTimedOut():
            if _ends_hidden_wait(events, i):
                return None  # the runtime's own wait: nothing the model can act on
            return f"<wait_timed_out{_attrs(event=e.event)}/>"
        case ev.Done():
            return None
        case _:
            assert_never(e)


def _ends_hidden_wait(events: Sequence[ev.Event], i: int) -> bool:
    """Whether the wait that `events[i]` (a wait_timed_out) ends was the runtime's own (a
    breaker wait, a tool call's backoff, a rate limit)."""
    for j in range(i - 1, max(-1, i - 8), -1):
        wait = events[j]
        if isinstance(wait, ev.Waiting):
            return wait.breaker or wait.call_id is not None or wait.rate_limit is not None
    return False


def _result_block(
    events: Sequence[ev.Event],
    i: int,
    e: ev.ToolResult,
    reduced: bool,
    max_tokens: int,
    counter: TokenCounter | None,
) -> str:
    cid = None if call_precedes(events, i, e.call_id) else e.call_id
    body = fence(dump_block(e.result))
    if reduced and counter is not None:
        body = truncate_to(body, max_tokens, counter, e.seq)
    return tagged(f"{tag_name(e.tool)}_result", _attrs(id=cid), body)


def _call_block(events: Sequence[ev.Event], i: int, e: ev.ToolCall) -> str:
    args = e.arguments
    cid = None if outcome_follows(events, i, e.call_id) else e.call_id
    tool = tag_name(e.tool)
    if _asks_a_person(args):
        # The human tools: the message is the whole intent, and the answer (a human
        # response, or the end of the thread) needs no id to be matched.
        return tagged(tool, "", fence(args["message"]))
    if not args:
        return f"<{tool}{_attrs(id=cid)}/>"
    return tagged(tool, _attrs(id=cid), fence(dump_block(args)))


def _asks_a_person(args: Mapping[str, Any]) -> bool:
    """A human tool's arguments (`request_more_information`, ...): its call shows no id."""
    return set(args) == {"message"} and isinstance(args["message"], str)


def _withdrawn(events: Sequence[ev.Event], i: int, call_id: str) -> str:
    """The attributes naming a call a cancel withdrew as the model saw it: its id, or the
    tool of a human tool's call, which was shown without one (`_call_block`)."""
    for j in range(i - 1, -1, -1):
        prev = events[j]
        if type(prev) is ev.ToolCall and prev.call_id == call_id:
            if _asks_a_person(prev.arguments):
                return _attrs(tool=tag_name(prev.tool))
            break
    return _attrs(id=call_id)


def render_event(event: ev.Event) -> str:
    """One event as a tagged block, out of context (ids always shown)."""
    return compact_block([event], 0)


class CompactFormat:
    """The default: one user message of tagged blocks.

    Args:
        native_tools: True (the default for agents): tool definitions travel as
            `Context.tools` for the backend to send natively and the system text does not
            repeat them. False (`ContextSettings(native_tools=False)`): they are compact
            signatures in the system text and `Context.tools` is empty, so a backend asks
            for the JSON intent with `output_schema` instead; this is the smallest context.
    """

    name = "compact"

    def __init__(self, native_tools: bool = False) -> None:
        self.native_tools = native_tools
        if native_tools:
            self.name = "compact+native"

    def system(self, base: str, tools: Sequence[ToolSpec]) -> str:
        if self.native_tools:
            parts = [base.strip(), NATIVE_ANSWER]
        else:
            parts = [base.strip(), self.tools_text(tools), ANSWER_FORMAT]
        return "\n\n".join(p for p in parts if p)

    def tools_text(self, tools: Sequence[ToolSpec]) -> str:
        if self.native_tools:
            return tools_json(tools)
        sigs = dump_tools([(t.name, t.description, t.parameters) for t in tools])
        return f"## Tools\n{sigs}"

    block = staticmethod(_block)

    def tokens(self, payload: Any, counter: TokenCounter) -> int:
        return counter.count(payload) + 1 if payload else 0

    def summary(self, from_seq: int, to_seq: int, text: str) -> str:
        return tagged("summary", f" events={from_seq}-{to_seq}", fence(text))

    def assemble(self, payloads: Sequence[Any]) -> tuple[Message, ...]:
        body = "\n".join(p for p in payloads if p)
        return (Message("user", body),) if body else ()


COMPACT = CompactFormat()
"""The compact form with tool signatures in the system text (the smallest context)."""
COMPACT_NATIVE = CompactFormat(native_tools=True)
"""The compact form with tool definitions sent natively by the backend."""
