"""`decide`: the agent as a stateless reducer (factors 8, 9, 12).

`decide(agent, thread)` is a pure function: given the same agent and thread it returns the
same step, reading no clock, no randomness and no I/O. It imports nothing from stores,
models or the network (a test enforces this). `interpret` is its twin for model output:
it turns a recorded model answer into validated `tool_call` events or one `invalid_output`,
also purely, so a replay re-derives exactly the same events.

The steps::

    CallModel()            ask the model for the next intent
    RunTool(call, attempt) run a validated (and, if needed, approved) tool call
    RunTools(runs)         run several such calls of one answer concurrently
    CheckGuards(calls)     ask the agent's dispatch guards about calls not yet judged
    AwaitApproval(call)    write approval_requested (one per call needing it) and pause
    AwaitHuman(id, text)   write human_request and pause
    Finish(message)        write done
    Escalate(reason)       write escalated: a human takes over
    Wait(status)           nothing to do until something from outside arrives
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from .agent import Agent
from .bounds import BoundsError, check_value, clip, flat_scalars, parse_json, scrub_text
from .events import (
    BUDGET_SOURCE,
    CONTEXT_SOURCE,
    ApprovalRequested,
    Done,
    Escalated,
    Event,
    HumanRequest,
    InvalidOutput,
    ModelError,
    PendingCall,
    RawToolCall,
    Status,
    Thread,
    ToolCall,
    ToolError,
    is_prefetch,
)
from .guards import needs_guards
from .loop_guard import CallHistory, repeat_reason
from .tools import ESCALATED_CHILD, Tool, compact_validation_error

__all__ = [
    "AwaitApproval",
    "AwaitHuman",
    "CallIdIndex",
    "CallModel",
    "CheckGuards",
    "Escalate",
    "Finish",
    "RunTool",
    "RunTools",
    "Step",
    "Wait",
    "call_ids",
    "decide",
    "interpret",
    "is_input",
    "step_events",
]


@dataclass(frozen=True, slots=True)
class CallModel:
    pass


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run `call`. `args` is its validated arguments (validated once per call; None only
    when they no longer validate, which the run then records as a tool error)."""

    call: PendingCall
    attempt: int = 1
    args: BaseModel | None = None


@dataclass(frozen=True, slots=True)
class RunTools:
    """Run several calls of one answer concurrently (`Agent.max_parallel_tools` at once;
    calls sharing a resource key one after another, in call order). The runtime records
    each outcome as it finishes; replay follows the recorded order."""

    runs: tuple[RunTool, ...]


@dataclass(frozen=True, slots=True)
class CheckGuards:
    """Ask the agent's dispatch guards about `calls` (the calls of an answer no guard has
    seen), before any call of that answer is dispatched (`threadline.guards`)."""

    calls: tuple[PendingCall, ...]


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Ask for approval of `call` and of the `more` calls of the same answer that need it:
    one `approval_requested` each, written together before anyone answers."""

    call: PendingCall
    more: tuple[PendingCall, ...] = ()

    @property
    def calls(self) -> tuple[PendingCall, ...]:
        return (self.call, *self.more)


@dataclass(frozen=True, slots=True)
class AwaitHuman:
    """Ask a person `question`; only `responders` may answer (empty: anyone allowed)."""

    request_id: str
    question: str
    responders: tuple[str, ...] = ()


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


Step = (
    CallModel
    | RunTool
    | RunTools
    | CheckGuards
    | AwaitApproval
    | AwaitHuman
    | Finish
    | Escalate
    | Wait
)


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
    if state.last_kind == "tool_error":
        escalated = _escalated_child(agent, thread)
        if escalated is not None:
            return escalated
    if state.consecutive_errors >= agent.max_consecutive_errors:
        return Escalate(
            f"{state.consecutive_errors} consecutive errors",
            {"last_error": state.last_error or ""},
        )
    if state.pending:
        return _decide_calls(agent, state.pending.values())
    if state.last_kind in ("done", "escalated", "failed"):
        return Wait(status)
    if state.run_steps >= agent.max_steps:
        return Escalate(
            f"step limit reached: {state.run_steps} model calls without human input",
            {"max_steps": agent.max_steps},
        )
    if state.breaker_waits >= agent.max_breaker_waits:
        return Escalate(
            f"the model provider stayed unavailable: {state.breaker_waits} circuit-breaker "
            "waits in a row without an answer",
            {"max_breaker_waits": agent.max_breaker_waits, "last_error": state.last_error or ""},
        )
    return CallModel()


def _escalated_child(agent: Agent, thread: Thread) -> Escalate | None:
    """Escalate with a sub-agent that escalated, when its tool says so
    (`Agent.as_tool(on_escalation="escalate")`); else its error goes to the model."""
    last = thread.events[-1]
    if not isinstance(last, ToolError) or last.error_type != ESCALATED_CHILD:
        return None
    tool = agent.registry.get(last.tool)
    if tool is None or tool.sub_agent is None or tool.sub_agent.on_escalation != "escalate":
        return None
    return Escalate(last.message, {"call_id": last.call_id, "last_error": last.message})


_REJECTED = ("InvalidRequest", "ContextOverflow")


def _rejected_request(thread: Thread) -> Escalate | None:
    """Escalate at once when the provider called the request itself invalid: asking again
    would send the same request and fail the same way (reported once, not retried). A
    `ContextOverflow` is one too (the call was already made once more under what the
    refusal taught: `threadline.overflow`)."""
    last = thread.events[-1]
    if isinstance(last, ModelError) and last.error_type in _REJECTED:
        return Escalate(
            f"the model provider rejected the request: {last.message}",
            {"last_error": f"{last.error_type}: {last.message}"},
        )
    return None


def _decide_calls(agent: Agent, calls: Iterable[PendingCall]) -> Step:
    """The step for the pending calls of an answer, taken together (factor 8's parallel
    calls): the calls needing approval are all requested at once; then every runnable call
    runs (concurrently when several); then a question; a finish last, once it is alone.
    Calls already awaiting their verdict are skipped; any escalation comes first. Before
    all that, the agent's guards judge the calls none has seen."""
    if agent.dispatch_guards:
        calls = tuple(calls)
        unjudged = tuple(c for c in calls if needs_guards(agent, c))
        if unjudged:
            return CheckGuards(unjudged)
    approvals: list[PendingCall] = []
    runs: list[RunTool] = []
    later: list[AwaitHuman | Finish] = []
    for call in calls:
        if call.approval == "requested" or call.child is not None:
            continue  # awaiting a verdict, or a sub-agent's end
        step = _decide_call(agent, call)
        if isinstance(step, Escalate):
            return step
        if isinstance(step, AwaitApproval):
            approvals.append(step.call)
        elif isinstance(step, RunTool):
            runs.append(step)
        elif isinstance(step, AwaitHuman | Finish):
            later.append(step)
    if approvals:
        return AwaitApproval(approvals[0], tuple(approvals[1:]))
    if len(runs) > 1:
        return RunTools(tuple(runs))
    if runs:
        return runs[0]
    for step in later:
        if isinstance(step, AwaitHuman):
            return step
    if later:
        return later[0]
    return Wait(Status.AWAITING_APPROVAL)


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
        message = str(call.arguments.get("message", ""))
        return AwaitHuman(call.call_id, message, tuple(agent.responders))
    if call.attempt > call.failed:
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
        return RunTool(call, call.attempt + 1, _validated(tool, call))
    if call.failed:  # attempts that failed, recorded: try again (`threadline.retries`)
        return RunTool(call, call.failed + 1, _validated(tool, call))
    args = _validated(tool, call)
    # Arguments that no longer validate wait for a human, and fail at run time.
    required = call.guard == "require_approval" or args is None or tool.needs_approval(args)
    if call.approval == "none" and required:
        return AwaitApproval(_with_approvers(agent, call))
    return RunTool(call, 1, args)


def _validated(tool: Tool, call: PendingCall) -> BaseModel | None:
    """The call's validated arguments: the ones `interpret` made, else validated now."""
    if isinstance(call.validated, BaseModel):
        return call.validated
    try:
        return tool.validate(call.arguments)
    except ValidationError:
        return None


def _with_approvers(agent: Agent, call: PendingCall) -> PendingCall:
    """The call with the people allowed to answer its approval (`Agent.approvers`)."""
    names = agent.approvers_for(call.tool)
    return replace(call, approvers=names) if names else call


def step_events(step: Step, seq: int, at: datetime) -> list[Event]:
    """The events a step without I/O writes. Shared by the runtime and replay.

    Raises:
        TypeError: `step` needs I/O (a model call or a tool run) or writes nothing.
    """
    match step:
        case AwaitApproval():
            return [
                ApprovalRequested(
                    seq=seq + i,
                    at=at,
                    call_id=call.call_id,
                    tool=call.tool,
                    arguments=call.arguments,
                    approvers=call.approvers,
                )
                for i, call in enumerate(step.calls)
            ]
        case AwaitHuman(request_id, question, responders):
            return [
                HumanRequest(
                    seq=seq,
                    at=at,
                    request_id=request_id,
                    question=question,
                    responders=responders,
                )
            ]
        case Finish(message):
            return [Done(seq=seq, at=at, message=message)]
        case Escalate(reason, details):
            return [Escalated(seq=seq, at=at, reason=reason, details=details)]
    raise TypeError(f"step {step!r} needs I/O")


def is_input(event: Event) -> bool:
    """Whether `event` entered the thread from outside `decide` and `interpret` (people,
    triggers, the clock, the context layer, the agent's pre-fetch configuration): replay
    feeds such events in instead of re-deriving them. The kinds say so in their traits
    (`replay="input"`); two kinds are inputs only when the context layer wrote them."""
    if event.traits.replay == "input":
        return True
    if isinstance(event, Escalated):
        return event.details.get("source") in (CONTEXT_SOURCE, BUDGET_SOURCE)
    return is_prefetch(event)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def interpret(
    agent: Agent,
    text: str,
    tool_calls: Sequence[RawToolCall],
    *,
    seq: int,
    at: datetime,
    taken: Collection[str] = (),
    versions: Mapping[str, str] | None = None,
    history: CallHistory | None = None,
    validated: dict[str, BaseModel] | None = None,
) -> list[Event]:
    """Turn a model's raw answer into validated `tool_call` events, or one `invalid_output`.

    Accepted forms: native tool calls; or text holding one JSON intent
    `{"intent": name, "arguments": {...}}` (flat arguments beside `intent` also accepted),
    or a JSON list of them, optionally inside a ```json fence. All calls of one answer are
    validated before any is accepted: one bad call rejects the whole answer.

    Call ids are the provider's when it gave one, else `c<seq>` / `c<seq>.<i>`, so a
    replay re-derives identical ids. A provider id that is already `taken` in the thread
    (`call_ids(thread)`), repeated in the answer, longer than 64 characters or not valid
    Unicode is replaced by `c<seq>.<i>`: call ids (and so idempotency keys) are unique per
    thread whatever the provider returns. `versions` pins a tool name to the version a
    recorded thread called (replay re-derives with it, not the newest, when registered).

    Anything nested deeper than `bounds.MAX_DEPTH`, holding a non-finite number or a lone
    surrogate is one `invalid_output` (nothing else is written). The arguments stored are
    the ones the model wrote, not a coerced copy (an integer for a `number` stays one).

    With `history` (`loop_guard.call_history` of the thread), an answer repeating a call
    too often, or repeating a call a person rejected, is one `invalid_output` saying so
    (see `threadline.loop_guard`).

    `validated`, when given, receives the validated arguments of each call of an accepted
    answer, by call id (what `RunTool` carries, so a call's arguments are validated once);
    a refused answer adds nothing to it.
    """
    raw = _parse(agent, text, tool_calls, seq, at)
    if not isinstance(raw, list):
        return [raw]
    events: list[Event] = []
    values: dict[str, BaseModel] = {}
    exempt: set[str] = set()  # tools never refused as repeats (finishing, asking a person)
    many = len(raw) > 1
    used: set[str] = set()
    for i, (call_id, name, args) in enumerate(raw):
        pinned = versions.get(name) if versions else None
        tool = (pinned and agent.registry.get(name, pinned)) or agent.registry.get(name)
        if tool is None:
            known = ", ".join(agent.registry.names())
            reason = f"unknown tool {clip(scrub_text(name), 80)!r}; choose one of: {known}"
            return [_invalid(seq, at, reason, text or _dump(tool_calls))]
        if not isinstance(args, dict):
            reason = f"arguments for {name} must be a JSON object"
            return [_invalid(seq, at, reason, text or _dump(tool_calls))]
        try:
            value = tool.validate(args)
        except ValidationError as exc:
            reason = compact_validation_error(name, exc)
            return [_invalid(seq, at, reason, text or _dump(tool_calls))]
        try:
            _check_validated(value, name)
        except BoundsError as exc:  # e.g. "NaN" coerced to a float by lax validation
            return [_invalid(seq, at, str(exc), text or _dump(tool_calls))]
        if tool.kind != "function":
            exempt.add(tool.name)
        cid = call_id or (f"c{seq}.{i}" if many else f"c{seq}")
        if cid in used or cid in taken or len(cid) > 64 or scrub_text(cid) != cid:
            cid = f"c{seq}.{i}"
        used.add(cid)
        values[cid] = value
        events.append(
            ToolCall(
                seq=seq + i,
                at=at,
                call_id=cid,
                tool=tool.name,
                version=tool.version,
                arguments=args,
            )
        )
    if history is not None:
        calls = [e for e in events if isinstance(e, ToolCall)]
        refused = repeat_reason(history, calls, agent.max_repeated_calls, frozenset(exempt))
        if refused is not None:
            return [_invalid(seq, at, refused, text or _dump(tool_calls))]
    if validated is not None:
        validated.update(values)
    return events


def _check_validated(value: BaseModel, name: str) -> None:
    """Check the validated arguments a tool receives against the limits (lax validation
    may coerce "NaN" to a float). Fields holding only scalars are checked as they are;
    anything else as its dump."""
    if not value.__pydantic_extra__ and flat_scalars(value.__dict__):
        return
    check_value(value.model_dump(), where=f"arguments for {name}")


def _parse(
    agent: Agent, text: str, tool_calls: Sequence[RawToolCall], seq: int, at: datetime
) -> list[tuple[str | None, str, Any]] | InvalidOutput:
    """(call id, tool name, arguments) of each call in the answer, or why it is unreadable."""
    raw: list[tuple[str | None, str, Any]] = []
    if tool_calls:
        for tc in tool_calls:
            try:
                args = parse_json(tc.arguments) if tc.arguments.strip() else {}
            except BoundsError as exc:
                reason = f"arguments for {clip(scrub_text(tc.name), 80)} rejected: {exc}"
                return _invalid(seq, at, reason, tc.arguments)
            except ValueError as exc:
                reason = f"arguments for {clip(scrub_text(tc.name), 80)} are not valid JSON: {exc}"
                return _invalid(seq, at, reason, tc.arguments)
            raw.append((tc.id, tc.name, args))
        return raw
    body = text.strip()
    fenced = _FENCE.match(body) if "```" in body else None
    if fenced:
        body = fenced.group(1)
    if not body:
        return _invalid(seq, at, _expected_form(agent, "the output was empty"), text)
    try:
        parsed = parse_json(body)
    except BoundsError as exc:
        return _invalid(seq, at, _expected_form(agent, f"output rejected: {exc}"), text)
    except ValueError as exc:
        return _invalid(seq, at, _expected_form(agent, f"output is not valid JSON ({exc})"), text)
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        return _invalid(seq, at, _expected_form(agent, "the list of intents is empty"), text)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("intent"), str):
            return _invalid(seq, at, _expected_form(agent, 'missing the "intent" field'), text)
        args = item.get("arguments")
        if args is None:
            args = {k: v for k, v in item.items() if k != "intent"}
        raw.append((None, item["intent"], args))
    return raw


def _invalid(seq: int, at: datetime, reason: str, output: str) -> InvalidOutput:
    return InvalidOutput(
        seq=seq, at=at, reason=scrub_text(clip(reason, 2000)), output=scrub_text(output[:2000])
    )


def call_ids(thread: Thread) -> frozenset[str]:
    """The call ids already used in `thread` (what `interpret` must not reuse)."""
    return frozenset(e.call_id for e in thread.events if isinstance(e, ToolCall))


class CallIdIndex:
    """`call_ids` per thread, extended by the events new since the last look (a turn of
    a long thread costs O(new events), not a scan); bounded to `maxsize` threads."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._data: OrderedDict[str, tuple[int, Event | None, set[str]]] = OrderedDict()
        self._maxsize = maxsize

    def taken(self, thread: Thread) -> Collection[str]:
        """The call ids used in `thread` (read it before the thread grows again)."""
        events = thread.events
        n, last, ids = self._data.get(thread.id) or (0, None, set())
        if n > len(events) or (n and events[n - 1] is not last and events[n - 1] != last):
            n, ids = 0, set()  # another thread under the same id: start over
        for k in range(n, len(events)):  # a loop, not a generator: this runs every turn
            e = events[k]
            if type(e) is ToolCall:
                ids.add(e.call_id)
        self._data[thread.id] = (len(events), events[-1] if events else None, ids)
        self._data.move_to_end(thread.id)
        if len(self._data) > self._maxsize:
            self._data.popitem(last=False)
        return ids


def _expected_form(agent: Agent, problem: str) -> str:
    names = ", ".join(agent.registry.names())
    return (
        f'{problem}; answer with one JSON object {{"intent": <one of {names}>, '
        '"arguments": {...}}'
    )


def _dump(tool_calls: Sequence[RawToolCall]) -> str:
    return json.dumps([{"name": t.name, "arguments": t.arguments} for t in tool_calls])
