"""Deterministic replay (factor 12): re-derive a thread's steps from its log.

Inputs that came from outside (user messages, human answers, approvals, pauses, external
events, recorded model outputs, recorded tool outcomes) are fed back in; everything the
runtime *decided* (which tool call, approval requests, questions, finishes, escalations) is
derived again by today's `decide` and `interpret` and compared with what was recorded.
Tools are never re-run and guards never asked again (a judge's verdict is a recorded
outcome, like a model's answer): replay has no side effects.

The comparison ignores timestamps. The first difference raises `ReplayDivergence` with the
event's seq; a replay that matches returns the re-derived thread. A `tool_started` that
does not start its call's next attempt (a write-ahead record delivered twice, which stores
now refuse: `ThreadState.start_refused`) is such a difference, never taken for a retry.
"""

from __future__ import annotations

from .agent import Agent
from .errors import ReplayDivergence
from .events import (
    ChildStarted,
    Event,
    GuardVerdict,
    ModelCall,
    ModelError,
    Thread,
    ToolAttemptFailed,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
)
from .loop_guard import call_history
from .reducer import (
    CallModel,
    CheckGuards,
    RunTool,
    RunTools,
    Wait,
    call_ids,
    decide,
    interpret,
    is_input,
    step_events,
)

__all__ = ["replay_thread"]


def replay_thread(agent: Agent, recorded: Thread) -> Thread:
    """Re-derive `recorded` with `agent`; return the derived thread or raise ReplayDivergence."""
    derived = Thread(
        recorded.id,
        recorded.agent,
        metadata=dict(recorded.metadata),
        created_at=recorded.created_at,
    )
    events = recorded.events
    batch: frozenset[str] = frozenset()
    """Call ids of the batch being run: its events came in the order its tools finished."""
    i = 0
    while i < len(events):
        event = events[i]
        if type(event) is ToolStarted and (refused := derived.state.start_refused(event)):
            _diverge(recorded, event, f"no tool_started: {refused}")  # a store refuses it now
        if is_input(event) or _recorded_outcome(derived, event) or _of_batch(derived, event, batch):
            derived.append(event)
            i += 1
            continue
        step = decide(agent, derived)
        if isinstance(step, RunTools):
            batch = frozenset(run.call.call_id for run in step.runs)
            if not _of_batch(derived, event, batch):
                _diverge(recorded, event, f"running {', '.join(sorted(batch))}")
            derived.append(event)
            i += 1
            continue
        batch = frozenset()
        produced: list[Event]
        if isinstance(step, Wait):
            _diverge(recorded, event, f"a wait ({step.status.value})")
        if isinstance(step, CheckGuards):
            ids = ", ".join(c.call_id for c in step.calls)
            _diverge(recorded, event, f"guard verdicts on {ids}")
        if isinstance(step, CallModel):
            if isinstance(event, ModelError):
                produced = [event]
            elif isinstance(event, ModelCall):
                nxt = events[i + 1] if i + 1 < len(events) else event
                produced = [
                    event,
                    *interpret(
                        agent,
                        event.output,
                        event.tool_calls,
                        seq=event.seq + 1,
                        at=nxt.at,
                        taken=call_ids(derived),
                        versions=_recorded_versions(events, i + 1),
                        history=call_history(derived, agent.max_repeated_calls),
                    ),
                ]
            else:
                _diverge(recorded, event, "a model call")
        elif isinstance(step, RunTool):
            call = step.call
            if isinstance(event, ToolStarted | ChildStarted):
                if event.call_id != call.call_id:
                    _diverge(recorded, event, f"{event.kind} for {call.call_id}")
                produced = [event]
            elif isinstance(event, _OUTCOMES) and event.call_id == call.call_id:
                produced = [event]
            else:
                _diverge(recorded, event, f"running {call.tool} ({call.call_id})")
        else:
            produced = step_events(step, event.seq, event.at)
        for offset, new in enumerate(produced):
            j = i + offset
            if j >= len(events):
                break  # the recording ended mid-step (a crash): what exists matched
            old = events[j]
            if _comparable(new) != _comparable(old):
                _diverge(recorded, old, _describe(new))
            derived.append(old)
        i += len(produced)
    return derived


_OUTCOMES = ToolResult | ToolError | ToolAttemptFailed
"""What a tool run records once it ran: a result, an error, a failed attempt (retried)."""


def _recorded_versions(events: list[Event], start: int) -> dict[str, str]:
    """Tool versions of the calls recorded right after a model call (the same append)."""
    versions: dict[str, str] = {}
    for event in events[start:]:
        if not isinstance(event, ToolCall):
            break
        versions.setdefault(event.tool, event.version)
    return versions


def _of_batch(derived: Thread, event: Event, batch: frozenset[str]) -> bool:
    """Whether `event` starts or ends a pending call of the batch being run (the batch's
    events are taken in the order recorded: the order its tools finished)."""
    return (
        isinstance(event, ToolStarted | ChildStarted | _OUTCOMES)
        and event.call_id in batch
        and event.call_id in derived.state.pending
    )


def _recorded_outcome(derived: Thread, event: Event) -> bool:
    """Whether `event` is the recorded outcome (or failed attempt) of a call replay already
    saw start.

    The decision to run the call was checked at its `tool_started`; what the tool returned
    came from outside. Today's `decide` would read the started call as "may have run" (a
    crash) and escalate a non-idempotent one, but replay never runs tools: it takes the
    recorded outcome, as the run did.
    """
    if isinstance(event, GuardVerdict):  # a guard's answer, as recorded: never asked again
        return event.call_id in derived.state.pending
    if not isinstance(event, _OUTCOMES):
        return False
    call = derived.state.pending.get(event.call_id)
    return call is not None and (call.attempt > 0 or call.child is not None)


def _comparable(event: Event) -> dict[str, object]:
    return event.model_dump(mode="json", exclude={"at"})


def _describe(event: Event) -> str:
    data = _comparable(event)
    data.pop("seq", None)
    text = ", ".join(f"{k}={v!r}" for k, v in data.items() if k != "kind")
    return f"{event.kind}({text[:200]})"


def _diverge(recorded: Thread, event: Event, got: str) -> None:
    raise ReplayDivergence(recorded.id, event.seq, _describe(event), got)
