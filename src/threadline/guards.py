"""Dispatch guards: checks on every validated intent before it is dispatched (factor 8).

An agent declares guards (`Agent(guards=[...])`): plain functions (deterministic policy
checks) or a `threadline.judge.Judge` that asks a second model. Each says, for one
validated call:

* `allow()`: dispatch it as usual;
* `block(reason)`: do not run it; the call is over and the model reads `reason` next turn
  (a block counts as one error, like a tool error: a model that keeps proposing blocked
  calls escalates after `Agent.max_consecutive_errors`);
* `require_approval(reason)`: the call goes to the approval flow, even if its tool would
  not ask (the approver sees the guard and its reason).

`decide` returns `CheckGuards` for the calls of an answer that no guard has seen yet,
before anything of that answer is dispatched; the runtime asks every guard that applies,
in the agent's order (the first block ends the checks for that call), and appends one
`guard_verdict` per guard and call, all calls of the answer in one append, in call order.
The verdicts are recorded outcomes: replay and fork take them from the record and never
ask a guard again; what follows from them (an approval request, the model reading the
block) is derived again.

A guard that fails (raises, times out, a judge's provider is down or its answer is not a
verdict) never crashes the run: its verdict is the agent's failure policy,
`Agent.guard_failure` (`"block"` by default: fail closed; `"require_approval"`; or
`"allow"`: fail open), recorded with `failed=True` and the reason.

Guards see the tools of kind `function` and sub-agents (`Agent.as_tool`); finishing and
asking a person are not dispatches, and pre-fetched calls are configuration, not a
model's choice. Calls a person already approved, and calls resumed after a crash (their
verdict is recorded), are not asked again.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from .bounds import clip, scrub_text
from .errors import ConfigError, MalformedVerdict
from .events import PREFETCH_PREFIX, Event, GuardVerdict, PendingCall, Thread
from .tools import ToolRegistry

__all__ = [
    "GUARDED_KINDS",
    "FailurePolicy",
    "Guard",
    "GuardCall",
    "GuardDecision",
    "GuardFunction",
    "GuardLike",
    "GuardOutcome",
    "Guarded",
    "allow",
    "as_guard",
    "block",
    "failure_outcome",
    "guard_verdicts",
    "needs_guards",
    "require_approval",
    "unjudged",
]

VerdictName = Literal["allow", "block", "require_approval"]
FailurePolicy = Literal["block", "require_approval", "allow"]

GUARDED_KINDS = frozenset({"function", "agent"})
"""Tool kinds whose calls guards see (not `finish`, not `human`)."""

MAX_REASON = 1000
"""Longest reason stored (characters); a judge's longer text is clipped."""

_JUDGE_FIELDS = frozenset(
    GuardVerdict.model_fields.keys()
    - {"seq", "at", "kind", "call_id", "tool", "guard", "verdict", "reason", "failed"}
)
"""What a guard's outcome may add to its `guard_verdict` (a judge's model call)."""


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """What a guard says about one call (see the module)."""

    verdict: VerdictName
    reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in ("allow", "block", "require_approval"):
            raise ConfigError(f"unknown guard verdict {self.verdict!r}")


def allow(reason: str = "") -> GuardDecision:
    """Dispatch the call as usual."""
    return GuardDecision("allow", reason)


def block(reason: str) -> GuardDecision:
    """Do not run the call; the model reads `reason` next turn."""
    return GuardDecision("block", reason)


def require_approval(reason: str = "") -> GuardDecision:
    """Send the call to the approval flow, with `reason` for the approver."""
    return GuardDecision("require_approval", reason)


@dataclass(frozen=True, slots=True)
class GuardCall:
    """The call a guard judges.

    Attributes:
        call_id / tool / version / arguments: the validated call, as recorded.
        args: its arguments as the tool's validated model (None if they no longer
            validate).
        description: the tool's description (what the model was shown).
        side_effects: whether the tool changes anything.
        thread: the thread so far (read it; never change it).
    """

    call_id: str
    tool: str
    version: str
    arguments: dict[str, Any]
    args: BaseModel | None
    description: str
    side_effects: bool
    thread: Thread


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """A guard's decision, and for a judge its model call as the `guard_verdict` records
    it (`model`, `prompt_name`, `prompt_version`, `prompt_hash`, `input_tokens`,
    `output_tokens`, `cost_usd`, `latency_ms`, `output`)."""

    decision: GuardDecision
    failed: bool = False
    judge: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class GuardLike(Protocol):
    """What an agent's guard is: a name, the tools it looks at, and a check.

    `check` returns a `GuardOutcome`; raising is a failure (the agent's policy decides).
    """

    @property
    def name(self) -> str: ...

    def applies_to(self, tool: str) -> bool: ...

    async def check(self, call: GuardCall) -> GuardOutcome: ...


GuardFunction = Callable[[GuardCall], GuardDecision | Awaitable[GuardDecision]]


class Guarded(Protocol):
    """What guarding needs of an agent (`threadline.Agent` is one; declared here so this
    module, which the agent imports, never imports the agent)."""

    @property
    def dispatch_guards(self) -> tuple[GuardLike, ...]: ...

    @property
    def guard_failure(self) -> FailurePolicy: ...

    @property
    def registry(self) -> ToolRegistry: ...


@dataclass(frozen=True)
class Guard:
    """A plain function as a guard: `check(call) -> GuardDecision` (sync or async).

    Args:
        fn: the policy check.
        name: recorded on each verdict (default: the function's name).
        tools: the tool names it looks at (None: every guarded call).
    """

    fn: GuardFunction
    name: str = ""
    tools: Collection[str] | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"a guard must be callable, not {type(self.fn).__name__}")
        if not self.name:
            object.__setattr__(self, "name", getattr(self.fn, "__name__", "guard"))
        if isinstance(self.tools, str):
            raise ConfigError(f"guard {self.name}: tools must be a list of tool names")

    def applies_to(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    async def check(self, call: GuardCall) -> GuardOutcome:
        started = time.perf_counter()
        decided = self.fn(call)
        if inspect.isawaitable(decided):
            decided = await decided
        if not isinstance(decided, GuardDecision):
            raise TypeError(
                f"returned {type(decided).__name__}, not a GuardDecision "
                "(use allow(), block(reason) or require_approval(reason))"
            )
        latency = (time.perf_counter() - started) * 1000
        return GuardOutcome(decided, judge={"latency_ms": round(latency, 3)})


def as_guard(value: object) -> GuardLike:
    """An agent's guard entry as a guard: a `GuardLike` as is, a function wrapped.

    Raises:
        ConfigError: `value` is neither.
    """
    if isinstance(value, GuardLike):
        return value
    if callable(value):
        return Guard(value)
    raise ConfigError(f"a guard must be a function or a Judge, not {type(value).__name__}")


def needs_guards(agent: Guarded, call: PendingCall) -> bool:
    """Whether `call` waits for its guards' verdicts before anything dispatches it."""
    if call.guard != "none" or call.approval != "none" or call.attempt or call.child:
        return False
    if call.call_id.startswith(PREFETCH_PREFIX):
        return False
    tool = agent.registry.get(call.tool, call.version)
    if tool is None or tool.kind not in GUARDED_KINDS:
        return False
    return any(g.applies_to(call.tool) for g in agent.dispatch_guards)


Build = Callable[[int, datetime], list[Event]]


def unjudged(calls: Sequence[PendingCall]) -> Callable[[Thread], bool]:
    """Whether the verdicts on `calls` still apply to a thread a human action changed
    meanwhile: each call is still pending and not yet judged."""
    ids = [c.call_id for c in calls]

    def check(thread: Thread) -> bool:
        pending = thread.state.pending
        return all(i in pending and pending[i].guard == "none" for i in ids)

    return check


async def guard_verdicts(agent: Guarded, thread: Thread, calls: Sequence[PendingCall]) -> Build:
    """Ask the agent's guards about `calls`; return the builder of their `guard_verdict`
    events (in call order, then guard order, whatever order the checks finished in).

    The calls are checked concurrently; the guards of one call one after another, stopping
    at the first block. Nothing here raises for a guard's failure (see the module).
    """
    if len(calls) == 1:  # the common case: no task per call
        judged = [await _check_call(agent, thread, calls[0])]
    else:
        judged = await asyncio.gather(*(_check_call(agent, thread, c) for c in calls))

    def build(seq: int, at: datetime) -> list[Event]:
        events: list[Event] = []
        for call, outcomes in zip(calls, judged, strict=True):
            for name, out in outcomes:
                events.append(_event(seq + len(events), at, call, name, out))
        return events

    return build


async def _check_call(
    agent: Guarded, thread: Thread, call: PendingCall
) -> list[tuple[str, GuardOutcome]]:
    tool = agent.registry.get(call.tool, call.version)
    seen = GuardCall(
        call_id=call.call_id,
        tool=call.tool,
        version=call.version,
        arguments=dict(call.arguments),
        args=call.validated if isinstance(call.validated, BaseModel) else None,
        description=tool.description if tool is not None else "",
        side_effects=tool.side_effects if tool is not None else True,
        thread=thread,
    )
    outcomes: list[tuple[str, GuardOutcome]] = []
    for guard in agent.dispatch_guards:
        if not guard.applies_to(call.tool):
            continue
        try:
            out = await guard.check(seen)
        except MalformedVerdict as exc:  # a judge answered: its call's usage is recorded
            out = failure_outcome(agent.guard_failure, guard.name, exc, exc.usage)
        except Exception as exc:  # a guard's failure is a verdict by policy, never a crash
            out = failure_outcome(agent.guard_failure, guard.name, exc)
        outcomes.append((guard.name, out))
        if out.decision.verdict == "block":
            break
    return outcomes


def failure_outcome(
    policy: FailurePolicy, guard: str, exc: BaseException, judge: Mapping[str, Any] | None = None
) -> GuardOutcome:
    """The verdict of a guard that failed with `exc`, by the agent's failure policy
    (`judge`: what the judge's model call, if it answered, recorded)."""
    what = " ".join(str(exc).split()) or type(exc).__name__
    problem = f"guard {guard} failed ({type(exc).__name__}: {clip(what, 300)})"
    reasons = {
        "block": f"{problem}; the call was not run (guards fail closed)",
        "require_approval": f"{problem}; a person must approve the call instead",
        "allow": f"{problem}; the call was allowed (this agent's guards fail open)",
    }
    return GuardOutcome(GuardDecision(policy, reasons[policy]), failed=True, judge=judge or {})


def _event(
    seq: int, at: datetime, call: PendingCall, guard: str, out: GuardOutcome
) -> GuardVerdict:
    judge = {k: v for k, v in out.judge.items() if k in _JUDGE_FIELDS}
    judge["output"] = scrub_text(clip(str(judge.get("output", "")), 4000))
    return GuardVerdict(
        seq=seq,
        at=at,
        call_id=call.call_id,
        tool=call.tool,
        guard=guard,
        verdict=out.decision.verdict,
        reason=scrub_text(clip(out.decision.reason, MAX_REASON)),
        failed=out.failed,
        **judge,
    )
