"""`decide`: the agent as a stateless reducer (factors 8, 9, 12).

`decide(agent, thread)` is a pure function: given the same agent and thread it returns the
same step, reading no clock, no randomness and no I/O. It imports nothing from stores,
models or the network (a test enforces this). `interpret` is its twin for model output:
it turns a recorded model answer into validated `tool_call` events or one `invalid_output`,
also purely, so a replay re-derives exactly the same events.

The steps::

    CallModel()            ask the model for the next intent
    RunTool(call, attempt) run a validated (and, if needed, approved) tool call
    AwaitApproval(call)    write approval_requested and pause
    AwaitHuman(id, text)   write human_request and pause
    Finish(message)        write done
    Escalate(reason)       write escalated: a human takes over
    Wait(status)           nothing to do until something from outside arrives
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .agent import Agent
from .events import (
    Event,
    InvalidOutput,
    ModelError,
    PendingCall,
    RawToolCall,
    Status,
    Thread,
    ToolCall,
)
from .tools import compact_validation_error

__all__ = [
    "AwaitApproval",
    "AwaitHuman",
    "CallModel",
    "Escalate",
    "Finish",
    "RunTool",
    "Step",
    "Wait",
    "decide",
    "interpret",
]


@dataclass(frozen=True, slots=True)
class CallModel:
    pass


@dataclass(frozen=True, slots=True)
class RunTool:
    call: PendingCall
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    call: PendingCall


@dataclass(frozen=True, slots=True)
class AwaitHuman:
    request_id: str
    question: str


@dataclass(frozen=True, slots=True)
class Finish:
    message: str
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wait:
    status: Status


Step = CallModel | RunTool | AwaitApproval | AwaitHuman | Finish | Escalate | Wait


def decide(agent: Agent, thread: Thread) -> Step:
    """The next step for `thread`. Pure; O(1) in the thread's length (reads folded state)."""
    state = thread.state
    status = state.status
    if status is not Status.RUNNING:
        return Wait(status)
    if state.next_seq == 0:
        return Wait(status)
    if state.last_kind == "model_error":
        rejected = _rejected_request(thread)
        if rejected is not None:
            return rejected
    if state.consecutive_errors >= agent.max_consecutive_errors:
        return Escalate(
            f"{state.consecutive_errors} consecutive errors",
            {"last_error": state.last_error or ""},
        )
    if state.pending:
        call = next(iter(state.pending.values()))
        return _decide_call(agent, call)
    if state.last_kind in ("done", "escalated", "failed"):
        return Wait(status)
    if state.run_steps >= agent.max_steps:
        return Escalate(
            f"step limit reached: {state.run_steps} model calls without human input",
            {"max_steps": agent.max_steps},
        )
    return CallModel()


def _rejected_request(thread: Thread) -> Escalate | None:
    """Escalate at once when the provider called the request itself invalid: asking again
    would send the same request and fail the same way (reported once, not retried)."""
    last = thread.events[-1]
    if isinstance(last, ModelError) and last.error_type == "InvalidRequest":
        return Escalate(
            f"the model provider rejected the request: {last.message}",
            {"last_error": f"{last.error_type}: {last.message}"},
        )
    return None


def _decide_call(agent: Agent, call: PendingCall) -> Step:
    tool = agent.registry.get(call.tool, call.version)
    if tool is None:
        return Escalate(
            f"tool {call.tool}@{call.version} is no longer registered",
            {"call_id": call.call_id},
        )
    if tool.kind == "finish":
        return Finish(str(call.arguments.get("message", "")), call.call_id)
    if tool.kind == "human":
        return AwaitHuman(call.call_id, str(call.arguments.get("message", "")))
    if call.attempt > 0:
        # A tool_started without an outcome: the tool may have run before a crash.
        if tool.side_effects and not tool.idempotent:
            return Escalate(
                f"tool {tool.key} may have run (started, no outcome) and is not idempotent",
                {
                    "call_id": call.call_id,
                    "tool": tool.key,
                    "arguments": call.arguments,
                    "attempt": call.attempt,
                    "idempotency_key": call.idempotency_key,
                },
            )
        return RunTool(call, call.attempt + 1)
    if call.approval == "none":
        try:
            needs = tool.needs_approval(tool.validate(call.arguments))
        except ValidationError:
            needs = True  # edited arguments that no longer validate are caught at run time
        if needs:
            return AwaitApproval(_with_approvers(agent, call))
    return RunTool(call, 1)


def _with_approvers(agent: Agent, call: PendingCall) -> PendingCall:
    """The call with the people allowed to answer its approval.

    They come from `agent.options["approvers"]`: a list of names (every tool), or a mapping
    of tool name (or `"*"`) to names. None named means anyone with the `respond` scope.
    """
    table = agent.options.get("approvers")
    names = table.get(call.tool, table.get("*", ())) if isinstance(table, dict) else table or ()
    if not names:
        return call
    return replace(call, approvers=tuple(str(n) for n in names))


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def interpret(
    agent: Agent,
    text: str,
    tool_calls: Sequence[RawToolCall],
    *,
    seq: int,
    at: datetime,
) -> list[Event]:
    """Turn a model's raw answer into validated `tool_call` events, or one `invalid_output`.

    Accepted forms: native tool calls; or text holding one JSON intent
    `{"intent": name, "arguments": {...}}` (flat arguments beside `intent` also accepted),
    or a JSON list of them, optionally inside a ```json fence. All calls of one answer are
    validated before any is accepted: one bad call rejects the whole answer.

    Call ids are the provider's when it gave one, else `c<seq>` / `c<seq>.<i>`, so a
    replay re-derives identical ids.
    """
    raw: list[tuple[str | None, str, Any]] = []
    if tool_calls:
        for tc in tool_calls:
            try:
                args = json.loads(tc.arguments) if tc.arguments.strip() else {}
            except ValueError as exc:
                return [
                    _invalid(
                        seq, at, f"arguments for {tc.name} are not valid JSON: {exc}", tc.arguments
                    )
                ]
            raw.append((tc.id, tc.name, args))
    else:
        body = text.strip()
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1)
        if not body:
            return [_invalid(seq, at, _expected_form(agent, "the output was empty"), text)]
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return [
                _invalid(seq, at, _expected_form(agent, f"output is not valid JSON ({exc})"), text)
            ]
        items = parsed if isinstance(parsed, list) else [parsed]
        if not items:
            return [_invalid(seq, at, _expected_form(agent, "the list of intents is empty"), text)]
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("intent"), str):
                return [
                    _invalid(seq, at, _expected_form(agent, 'missing the "intent" field'), text)
                ]
            name = item["intent"]
            args = item.get("arguments")
            if args is None:
                args = {k: v for k, v in item.items() if k != "intent"}
            raw.append((None, name, args))

    events: list[Event] = []
    many = len(raw) > 1
    for i, (call_id, name, args) in enumerate(raw):
        tool = agent.registry.get(name)
        if tool is None:
            known = ", ".join(agent.registry.names())
            return [
                _invalid(
                    seq,
                    at,
                    f"unknown tool {name!r}; choose one of: {known}",
                    text or _dump(tool_calls),
                )
            ]
        if not isinstance(args, dict):
            return [
                _invalid(
                    seq,
                    at,
                    f"arguments for {name} must be a JSON object",
                    text or _dump(tool_calls),
                )
            ]
        try:
            validated = tool.validate(args)
        except ValidationError as exc:
            return [
                _invalid(seq, at, compact_validation_error(name, exc), text or _dump(tool_calls))
            ]
        cid = call_id or (f"c{seq}.{i}" if many else f"c{seq}")
        events.append(
            ToolCall(
                seq=seq + i,
                at=at,
                call_id=cid,
                tool=tool.name,
                version=tool.version,
                arguments=validated.model_dump(mode="json"),
            )
        )
    return events


def _invalid(seq: int, at: datetime, reason: str, output: str) -> InvalidOutput:
    return InvalidOutput(seq=seq, at=at, reason=reason, output=output[:2000])


def _expected_form(agent: Agent, problem: str) -> str:
    names = ", ".join(agent.registry.names())
    return (
        f'{problem}; answer with one JSON object {{"intent": <one of {names}>, '
        '"arguments": {...}}'
    )


def _dump(tool_calls: Sequence[RawToolCall]) -> str:
    return json.dumps([{"name": t.name, "arguments": t.arguments} for t in tool_calls])
