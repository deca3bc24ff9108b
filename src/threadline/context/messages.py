"""The standard chat message array, with native tool-call messages.

Choose it with `Agent(context=ContextSettings(format="messages"))`. Each event becomes zero or
more chat messages:

    user_message                    -> user
    human_response                  -> tool, answering the request_more_information call
    done                            -> tool, answering the done_for_now call
    model_call text beside native calls, and the tool_calls after it (consecutive ones)
                                    -> one assistant message with content and `tool_calls`
    tool_result / tool_error        -> tool (tool_call_id = the call id)
    approval (rejected or edited)   -> tool answering the call: what the human decided
    guard_verdict (block)           -> tool answering the call: the guard's reason
    responded_instead               -> tool answering the call (not run), then user: the
                                       human's message in place of a verdict
    failed (a cancel's)             -> tool answering each call it withdrew: not run
    invalid_output                  -> user: the reason, so the model can correct itself
    external_event / escalated      -> user, as a tagged block
    compacted summary               -> user: the summary of the events it replaces

Message text from events is fenced (`base.fence`): no user, tool or document can write a
tag (or a chat template's role marker) the model would take for one of the renderer's.

Tool definitions travel as `Context.tools` (`ToolSpec`s) and the system prompt holds only
the instructions. `thread_from_openai` is the reverse: it turns an OpenAI chat transcript
into a thread, which the benchmark uses to render recorded runs both ways.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, assert_never

from .. import events as ev
from ..models.base import Message, ToolSpec
from .base import NOT_RUN, attr_value, fence, tools_json, truncate_to, unshown
from .notation import dump_block
from .tokens import TokenCounter

__all__ = ["MESSAGES", "MessagesFormat", "thread_from_openai", "to_openai"]

_OVERHEAD = 4
"""Tokens a chat API spends framing each message (role and separators)."""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class MessagesFormat:
    """Events as the standard chat array (see the module docstring)."""

    name = "messages"
    native_tools = True

    def system(self, base: str, tools: Sequence[ToolSpec]) -> str:
        return base.strip()

    def tools_text(self, tools: Sequence[ToolSpec]) -> str:
        return tools_json(tools)

    def block(
        self,
        events: Sequence[ev.Event],
        i: int,
        reduced: bool,
        max_tokens: int,
        counter: TokenCounter,
    ) -> tuple[Message, ...] | None:
        """The messages of `events[i]` (None when it renders nothing).

        Raises:
            AssertionError: `events[i]` is of a kind this format does not know.
        """
        e = events[i]
        if unshown(e):
            return None
        match e:
            case ev.UserMessage():
                return (Message("user", fence(e.text)),)
            case ev.HumanResponse():
                # The answer to a request_more_information call: its tool result.
                return (Message("tool", fence(e.text), tool_call_id=e.request_id),)
            case ev.Done():
                prev = events[i - 1] if i > 0 else None
                if isinstance(prev, ev.ToolCall) and prev.tool == "done_for_now":
                    return (Message("tool", "done", tool_call_id=prev.call_id),)
                return None
            case ev.ModelCall():
                if e.tool_calls and e.output.strip():
                    return (Message("assistant", fence(e.output)),)
                return None
            case ev.ToolCall():
                call = ev.RawToolCall(id=e.call_id, name=e.tool, arguments=_json(e.arguments))
                return (Message("assistant", "", (call,)),)
            case ev.ToolResult():
                result = e.result
                text = fence(result if isinstance(result, str) else _json(result))
                if reduced:
                    text = truncate_to(text, max_tokens, counter, e.seq)
                return (Message("tool", text, tool_call_id=e.call_id),)
            case ev.ToolError():
                text = fence(f"error: {e.error_type}: {e.message}")
                return (Message("tool", text, tool_call_id=e.call_id),)
            case ev.Approval():
                return _approval(e)
            case ev.GuardVerdict():
                if e.verdict != "block":
                    return None
                text = fence(f"blocked by {e.guard}: {e.reason}")
                return (Message("tool", text, tool_call_id=e.call_id),)
            case ev.RespondedInstead():
                # The call is answered (a chat API wants every call answered), then the
                # person's message follows as theirs.
                not_run = "not run: a human answered with a message instead of a verdict"
                return (
                    Message("tool", not_run, tool_call_id=e.call_id),
                    Message("user", fence(e.text)),
                )
            case ev.Failed():
                # A cancel's: each call it withdrew is answered, as never run.
                text = f"not run: {NOT_RUN}"
                return tuple(Message("tool", text, tool_call_id=c) for c in e.withdrawn) or None
            case ev.InvalidOutput():
                return (Message("user", f"Your last output was invalid: {fence(e.reason)}"),)
            case ev.Escalated():
                return (Message("user", f"<escalated>{fence(e.reason)}</escalated>"),)
            case ev.ExternalEvent():
                body = fence(dump_block(e.payload))
                name = attr_value(e.name)
                return (Message("user", f"<event name={name}>\n{body}\n</event>"),)
            case ev.WaitTimedOut():
                return None
            case _:
                assert_never(e)

    def tokens(self, payload: Any, counter: TokenCounter) -> int:
        if not payload:
            return 0
        total = 0
        for m in payload:
            total += _OVERHEAD + counter.count(m.content)
            for c in m.tool_calls:
                total += counter.count(c.name) + counter.count(c.arguments) + 8
        return total

    def summary(self, from_seq: int, to_seq: int, text: str) -> tuple[Message, ...]:
        body = fence(text)
        return (Message("user", f"<summary events={from_seq}-{to_seq}>\n{body}\n</summary>"),)

    def assemble(self, payloads: Sequence[Any]) -> tuple[Message, ...]:
        """Join the messages so that a chat API accepts them (see `Assembly`)."""
        assembly = Assembly()
        for payload in payloads:
            assembly.add(payload)
        return assembly.result()


Checkpoint = tuple[
    int, Message | None, Message | None, tuple[str, ...], tuple[Message, ...], int, int
]
"""An `Assembly`'s state: messages out, the last one, the pending one, waiting, deferred,
the weight of the messages out and of the last one."""


class Assembly:
    """`MessagesFormat.assemble` as a fold over payloads, resumable from a checkpoint.

    One assistant message per answer, each followed at once by a `tool` message for every
    call it made (other messages wait until those are in), no orphan `tool` message (a
    result whose call was summarised away becomes a user note), and no two user messages
    in a row. Three folds run as one: consecutive calls of one answer join the pending
    assistant message; a message that cannot join it goes on to the pairing of calls and
    results; what that emits is merged with the last user message or appended.

    Invariant: messages before the last one of `messages` never change, so a checkpoint is
    their count and the few values after it (`checkpoint`, `restore`), and `result()`
    leaves the fold as it was: the incremental renderer resumes it from two units back
    instead of assembling the whole window again. With `weigh` (a message's tokens), the
    total of the messages out is kept as they are emitted.
    """

    def __init__(self, weigh: Callable[[Message], int] | None = None) -> None:
        self.messages: list[Message] = []
        self.pending: Message | None = None
        self.waiting: list[str] = []  # call ids of the last answer without a result
        self.deferred: list[Message] = []
        self.weigh = weigh
        self.weight = 0  # of `messages`, when weighed
        self.last_weight = 0

    def add(self, payload: Any) -> None:
        for m in payload or ():
            prev = self.pending
            if (
                prev is not None
                and prev.role == "assistant"
                and m.role == "assistant"
                and m.tool_calls
                and not m.content
            ):
                # consecutive calls of one answer: one assistant message, many tool_calls
                self.pending = Message("assistant", prev.content, prev.tool_calls + m.tool_calls)
                continue
            if prev is not None:
                self._pair(prev)
            self.pending = m

    def result(self) -> tuple[Message, ...]:
        """The messages so far, as if the payloads ended here (the fold is unchanged)."""
        return self.weighed()[0]

    def weighed(self) -> tuple[tuple[Message, ...], int]:
        """`result()` and its weight (0 without `weigh`)."""
        saved = self.checkpoint()
        if self.pending is not None:
            self._pair(self.pending)
        self._close()
        out = (tuple(self.messages), self.weight)
        self.restore(saved)
        return out

    def checkpoint(self) -> Checkpoint:
        last = self.messages[-1] if self.messages else None
        return (
            len(self.messages),
            last,
            self.pending,
            tuple(self.waiting),
            tuple(self.deferred),
            self.weight,
            self.last_weight,
        )

    def restore(self, saved: Checkpoint) -> None:
        n, last, self.pending, waiting, deferred, self.weight, self.last_weight = saved
        del self.messages[n:]
        if last is not None:
            self.messages[-1] = last
        self.waiting, self.deferred = list(waiting), list(deferred)

    def _pair(self, m: Message) -> None:
        if m.role == "tool":
            if m.tool_call_id in self.waiting:
                self._emit(m)
                self.waiting.remove(m.tool_call_id)
                if not self.waiting:
                    self._close()
                return
            m = Message("user", f"Result of call {m.tool_call_id}:\n{m.content}")
        if m.role == "assistant" and m.tool_calls:
            self._close()
            self._emit(m)
            self.waiting.extend(c.id or "" for c in m.tool_calls)
        elif self.waiting:
            self.deferred.append(m)
        else:
            self._emit(m)

    def _close(self) -> None:
        for call_id in self.waiting:
            self._emit(Message("tool", "(no result)", tool_call_id=call_id))
        self.waiting.clear()
        deferred, self.deferred = self.deferred, []
        for m in deferred:
            self._emit(m)

    def _emit(self, m: Message) -> None:
        out = self.messages
        if out and out[-1].role == "user" and m.role == "user":
            m = Message("user", f"{out[-1].content}\n\n{m.content}")
            out[-1] = m
            self.weight -= self.last_weight
        else:
            out.append(m)
        if self.weigh is not None:
            self.last_weight = self.weigh(m)
            self.weight += self.last_weight


def _approval(e: ev.Approval) -> tuple[Message, ...] | None:
    if not e.approved:
        return (
            Message(
                "tool",
                fence(f"rejected by a human: {e.comment or ''}".strip()),
                tool_call_id=e.call_id,
            ),
        )
    if e.edited_arguments is not None:
        return (
            Message(
                "user",
                "A human approved the call with these arguments:\n"
                + fence(dump_block(e.edited_arguments)),
            ),
        )
    return None


MESSAGES = MessagesFormat()


def to_openai(system: str, messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Messages as the `messages` list of an OpenAI chat-completions request."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content or None}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def thread_from_openai(
    messages: Sequence[Mapping[str, Any]],
    *,
    thread_id: str = "imported",
    agent: str = "imported",
    model: str = "imported",
) -> tuple[str, ev.Thread]:
    """An OpenAI chat transcript as (system prompt, thread).

    Assistant text becomes a `request_more_information` intent (the agent talking to the
    user); the next user message answers it as a `human_response`. Assistant tool calls
    become a `model_call` plus validated `tool_call` events keeping the provider's ids, and
    `tool` messages become `tool_result` events whose result is the content (JSON decoded
    when it is JSON).
    """
    system = ""
    thread = ev.Thread(thread_id, agent)
    open_request: str | None = None

    def add(event_cls: Callable[..., ev.Event], **fields: Any) -> None:
        thread.append_new(event_cls, at=_EPOCH, **fields)

    for m in messages:
        role = m.get("role")
        content = m.get("content") or ""
        if role == "system":
            system = content
        elif role == "user":
            if open_request is not None:
                add(ev.HumanResponse, request_id=open_request, text=content)
                open_request = None
            else:
                add(ev.UserMessage, text=content)
        elif role == "assistant":
            calls = m.get("tool_calls") or []
            raw = tuple(
                ev.RawToolCall(
                    id=c.get("id"), name=c["function"]["name"], arguments=c["function"]["arguments"]
                )
                for c in calls
            )
            add(ev.ModelCall, model=model, output=content, tool_calls=raw)
            for c in raw:
                args = json.loads(c.arguments) if c.arguments.strip() else {}
                add(
                    ev.ToolCall,
                    call_id=c.id or f"c{thread.next_seq}",
                    tool=c.name,
                    version="1",
                    arguments=args,
                )
            if content and not raw:
                cid = f"c{thread.next_seq}"
                add(
                    ev.ToolCall,
                    call_id=cid,
                    tool="request_more_information",
                    version="1",
                    arguments={"message": content},
                )
                add(ev.HumanRequest, request_id=cid, question=content)
                open_request = cid
        elif role == "tool":
            try:
                result: Any = json.loads(content)
            except ValueError:
                result = content
            add(
                ev.ToolResult,
                call_id=m.get("tool_call_id") or "",
                tool=m.get("name") or "",
                result=result,
            )
    return system, thread
