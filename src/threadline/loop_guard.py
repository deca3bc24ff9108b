"""The loop guard: a model repeating itself is told so instead of being obeyed (factor 9).

Two repeats are refused, as an `invalid_output` the model reads next turn:

* the same call (intent and arguments) in `Agent.max_repeated_calls` answers in a row
  (default 3: the third identical answer is refused; the first two ran);
* a call identical to one a person just rejected (within the answers the guard looks back
  at, and since a person last wrote to the thread).

A refusal is an error like any invalid output: if the model persists, the thread escalates
after `Agent.max_consecutive_errors` of them, with the guard's reason as the last error.

"In a row" counts the answers that made tool calls since the last message or answer from a
person (`user_message`, `human_response`): new input may make the same call right again.
Refused answers make no calls and do not break the row, so a model that repeats the
refused call is refused again. A call that ended in a `tool_error` is not part of a row:
trying a failed call again is a retry, which `Agent.max_consecutive_errors` bounds (a tool
behind a dropped connection succeeds on the next try). Everything here is pure, read from
the thread, so replay re-derives each refusal from the record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .events import (
    PREFETCH_PREFIX,
    Approval,
    HumanResponse,
    ModelCall,
    Thread,
    ToolCall,
    ToolError,
    ToolResult,
    UserMessage,
)

__all__ = ["Call", "CallHistory", "call_history", "repeat_reason"]


def signature(tool: str, arguments: object) -> str:
    """A call's identity for the guard: its tool and its arguments, key order ignored."""
    return tool + "\x00" + json.dumps(arguments, sort_keys=True, default=str)


Call = tuple[str, object]
"""A call as the guard keeps it: (tool, arguments). Its `signature` is spelled only when a
new call equals it (a cheap test first: equal signatures imply equal JSON values)."""


@dataclass(slots=True)
class CallHistory:
    """What the guard needs from a thread.

    Attributes:
        answers: the calls of each recent answer that made calls, oldest first (only as
            many as the guard looks at); None stands for a call that failed (in no row).
        rejected: (call, the person's comment) for calls rejected since a person last
            wrote, the latest rejection first.
    """

    answers: tuple[tuple[Call | None, ...], ...] = ()
    rejected: tuple[tuple[Call, str | None], ...] = ()


_MIN_DEPTH = 3
"""Answers looked back at least (for rejected calls, when the repeat check is off)."""


def call_history(thread: Thread, depth: int) -> CallHistory:
    """The last `depth` answers with calls (at least 3), and the calls rejected within
    them, since a person last wrote to `thread`. O(events of those answers)."""
    answers: list[tuple[Call | None, ...]] = []
    rejected_ids: dict[str, str | None] = {}
    calls: dict[str, Call] = {}
    failed: set[str] = set()
    current: list[Call | None] = []
    bound = max(depth, _MIN_DEPTH)
    # Dispatched on the exact type (event classes have no subclasses): a failing
    # isinstance of an event class goes through pydantic's ABC metaclass, and even
    # `event.kind` is an attribute read through pydantic's `__getattr__` hook.
    for event in reversed(thread.events):
        if type(event) is ToolResult:
            continue
        if type(event) is ToolCall:
            if not event.call_id.startswith(PREFETCH_PREFIX):
                call = (event.tool, event.arguments)
                calls[event.call_id] = call
                # a failed call keeps its answer in the count but is in no row: a retry
                current.append(None if event.call_id in failed else call)
        elif type(event) is ModelCall:
            if current:
                answers.append(tuple(current))
                if len(answers) >= bound:
                    break  # bounded scan: older rejections are not "just" rejected
            current = []
        elif type(event) is ToolError:
            failed.add(event.call_id)
        elif type(event) is UserMessage or type(event) is HumanResponse:
            break
        elif type(event) is Approval and not event.approved:
            rejected_ids.setdefault(event.call_id, event.comment)
    if not rejected_ids:
        return CallHistory(tuple(reversed(answers)))
    rejected = tuple((calls[cid], note) for cid, note in rejected_ids.items() if cid in calls)
    return CallHistory(tuple(reversed(answers)), rejected)


def _same(call: Call | None, tool: str, arguments: object, sig: list[str]) -> bool:
    """Whether `call` has the signature of (`tool`, `arguments`); `sig` caches the latter."""
    if call is None or call[0] != tool or call[1] != arguments:
        return False
    if not sig:
        sig.append(signature(tool, arguments))
    return signature(*call) == sig[0]


def _in_each(window: Sequence[tuple[Call | None, ...]], call: ToolCall, sig: list[str]) -> bool:
    """Whether `call` is among the calls of each answer of `window` (plain loops: this
    runs for every call of every answer)."""
    for answer in window:
        for made in answer:
            if _same(made, call.tool, call.arguments, sig):
                break
        else:
            return False
    return True


def repeat_reason(
    history: CallHistory, calls: Sequence[ToolCall], max_repeated: int, exempt: frozenset[str]
) -> str | None:
    """Why the calls of a new answer are refused as repeats, or None.

    Args:
        calls: the answer's validated calls.
        max_repeated: `Agent.max_repeated_calls` (0: only rejected calls are refused).
        exempt: tool names never refused as repeats (finishing, asking a person).
    """
    window = history.answers[-(max_repeated - 1) :] if max_repeated > 1 else ()
    for call in calls:
        if call.tool in exempt:
            continue
        sig: list[str] = []
        rejected = (
            [note for c, note in history.rejected if _same(c, call.tool, call.arguments, sig)]
            if history.rejected
            else []
        )
        if rejected:
            note = rejected[-1]  # one call rejected twice: the earliest comment (as before)
            said = f' (they said: "{note}")' if note else ""
            return (
                f"a person rejected exactly this call: {call.tool} with these arguments{said}; "
                "do not propose it again unchanged: change what they objected to, choose "
                "another intent, or ask with request_more_information"
            )
        if window and len(window) == max_repeated - 1 and _in_each(window, call, sig):
            return (
                f"repeated call: {call.tool} with the same arguments {max_repeated} times in a "
                "row; its outcome is already in the thread: use it, choose another intent, or "
                "finish with done_for_now"
            )
    return None
