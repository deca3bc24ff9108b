"""The state derived from a thread: status and `ThreadState`, folded one event at a time."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, Literal, assert_never

from ..errors import CorruptEvent
from . import kinds as ev

__all__ = [
    "PendingCall",
    "Status",
    "ThreadState",
]


class Status(StrEnum):
    """A thread's status; always derived from its events."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HUMAN = "awaiting_human"
    WAITING = "waiting"
    PAUSED = "paused"
    DONE = "done"
    ESCALATED = "escalated"
    FAILED = "failed"


_FINISH = "done_for_now"
"""The built-in finishing intent. Beside calls awaiting approval it waits for them (a
thread whose other calls all await a verdict is awaiting approval, not running)."""

TERMINAL = frozenset({Status.DONE, Status.ESCALATED, Status.FAILED})


@dataclass(slots=True)
class PendingCall:
    """A validated tool call that has no outcome yet."""

    call_id: str
    tool: str
    version: str
    arguments: dict[str, ev.JsonValue]
    seq: int
    approval: Literal["none", "requested", "approved"] = "none"
    approvers: tuple[str, ...] = ()
    attempt: int = 0
    """Number of `tool_started` events seen; >0 with no outcome means 'maybe ran'."""
    idempotency_key: str | None = None
    child: str | None = None
    """The sub-agent thread working on the call (`child_started`), until its outcome."""
    failed: int = 0
    """The attempt the latest `tool_attempt_failed` recorded: those attempts are known to
    have failed (not 'maybe ran'), and the next one is `failed + 1`."""
    retry_at: datetime | None = None
    """When the next attempt may start (the backoff of the latest failed one)."""
    guard: Literal["none", "allow", "require_approval"] = "none"
    """What the agent's dispatch guards said (`guard_verdict`); `none`: not asked yet. A
    blocked call is no longer pending."""
    validated: Any = field(default=None, compare=False, repr=False)
    """The arguments as the tool's validated model, when this process validated them
    (reading the model's answer); never stored, so a loaded thread validates afresh."""


@dataclass(slots=True)
class ThreadState:
    """Everything derived from a thread, folded one event at a time.

    Attributes:
        next_seq: the seq the next appended event must carry.
        model_calls: model calls in the whole thread.
        run_steps: model calls since the last human input (bounded by `max_steps`).
        consecutive_errors: invalid outputs, tool errors and model errors since the last
            success (a tool result) or human input.
        pending: calls without an outcome, in the order the model made them.
        human_request: id of the open `human_request`, if any.
        terminal: `done`, `escalated` or `failed` once the thread ended; cleared by new input.
        paused: set by `paused`, cleared by `resumed`.
        waiting_until / waiting_for: an open durable wait.
        breaker_waits: waits on an open circuit breaker since the last model call or human
            input (bounded by `Agent.max_breaker_waits`).
        last_error: the compacted text of the latest error, for escalation messages.
        last_kind: kind of the latest event.
        spent_calls / spent_tokens / spent_usd: what the thread's model calls used, as
            settled (`budget_settled`; only threads under a budget record it).
        reserved_tokens / reserved_usd: the open reservation (`budget_reserved` not yet
            settled), None when there is none.
        budget: the thread's own budget as last raised (`budget_raised`), None when never
            raised (the launch's or the agent's applies: `threadline.budgets.limits`).
    """

    next_seq: int = 0
    model_calls: int = 0
    run_steps: int = 0
    consecutive_errors: int = 0
    pending: dict[str, PendingCall] = field(default_factory=dict)
    human_request: str | None = None
    terminal: Status | None = None
    paused: bool = False
    waiting: bool = False
    waiting_until: datetime | None = None
    waiting_for: str | None = None
    last_error: str | None = None
    last_kind: str | None = None
    breaker_waits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    spent_calls: int = 0
    spent_tokens: int = 0
    spent_usd: float = 0.0
    reserved_tokens: int | None = None
    reserved_usd: float | None = None
    budget: ev.Budget | None = None

    @property
    def status(self) -> Status:
        if self.paused:
            return Status.PAUSED
        if self.terminal is not None:
            return self.terminal
        if self.human_request is not None:
            return Status.AWAITING_HUMAN
        if self.waiting:
            return Status.WAITING
        requested = delegated = False
        for call in self.pending.values():
            if call.approval == "requested":
                requested = True
            elif call.child is not None:
                delegated = True
            elif call.tool != _FINISH:
                return Status.RUNNING  # a call of the answer can run while others await
        if requested:
            return Status.AWAITING_APPROVAL
        return Status.WAITING if delegated else Status.RUNNING

    def copy(self) -> ThreadState:
        """An independent copy: only `pending` holds mutable values. Built positionally
        from the fields (`dataclasses.replace` and `copy.deepcopy` cost an append 5-10x
        more; bench/overhead.py)."""
        new = ThreadState(*_state_fields(self))
        new.pending = {}
        for key, call in self.pending.items():
            copied = new.pending[key] = PendingCall(*_call_fields(call))
            copied.arguments = dict(call.arguments)
        return new

    def apply(self, event: ev.Event) -> None:
        """Fold one event into the state. O(1) in the thread's length."""
        if event.seq != self.next_seq:
            raise CorruptEvent("?", event.seq, f"expected seq {self.next_seq}")
        self.next_seq += 1
        self.last_kind = event.kind
        traits = event.traits
        if traits.human_input:
            self.run_steps = 0
            self.consecutive_errors = 0
            self.breaker_waits = 0
        if traits.error:
            self.consecutive_errors += 1
        # The kinds of every turn by exact type first: each case below is an isinstance
        # test, and one that fails costs about a microsecond (pydantic's metaclass is an
        # ABCMeta); event classes have no subclasses.
        if (
            type(event) is ev.ToolResult
            or type(event) is ev.ToolCall
            or type(event) is ev.ModelCall
        ):
            self._turn_event(event)
            return
        match event:
            case ev.ToolResult() | ev.ToolCall() | ev.ModelCall():
                self._turn_event(event)
            case ev.UserMessage():
                self.terminal = None
                self.waiting = False
            case ev.ModelError():
                self.last_error = f"{event.error_type}: {event.message}"
            case ev.InvalidOutput():
                self.last_error = event.reason
            case ev.ApprovalRequested():
                call = self.pending.get(event.call_id)
                if call is not None:
                    call.approval = "requested"
                    call.approvers = event.approvers
            case ev.Approval():
                call = self.pending.get(event.call_id)
                if call is not None:
                    if event.approved:
                        call.approval = "approved"
                        if event.edited_arguments is not None:
                            call.arguments = dict(event.edited_arguments)
                            call.validated = None
                    else:
                        del self.pending[event.call_id]
            case ev.GuardVerdict():
                self._judged(event)
            case ev.RespondedInstead():
                self.pending.pop(event.call_id, None)  # not run: the model decides again
            case ev.ToolStarted() | ev.ToolAttemptFailed() | ev.ChildStarted():
                call = self.pending.get(event.call_id)
                if call is not None:
                    _progress(call, event)
            case ev.ToolError():
                self.pending.pop(event.call_id, None)
                self.last_error = f"{event.tool}: {event.error_type}: {event.message}"
            case ev.HumanRequest():
                self.human_request = event.request_id
            case ev.HumanResponse():
                if self.human_request == event.request_id:
                    self.human_request = None
                self.pending.pop(event.request_id, None)
                self.terminal = None
            case ev.Done():
                self.terminal = Status.DONE
                self.pending.clear()
            case ev.Escalated():
                self.terminal = Status.ESCALATED
            case ev.Failed():
                self.terminal = Status.FAILED
                for call_id in event.withdrawn:  # a cancel's: never to run
                    self._withdraw(call_id)
            case ev.Paused():
                self.paused = True
            case ev.Resumed():
                self.paused = False
                if self.terminal in (Status.ESCALATED, Status.FAILED):
                    self.terminal = None  # a person took it back (an operator's retry)
            case ev.Waiting():
                self.waiting = True
                self.waiting_until = event.until
                self.waiting_for = event.event
                if event.breaker:
                    self.breaker_waits += 1
            case ev.ExternalEvent():
                if self.waiting and (self.waiting_for is None or self.waiting_for == event.name):
                    self._end_wait()
            case ev.WaitTimedOut():
                self._end_wait()
            case ev.BudgetReserved() | ev.BudgetSettled() | ev.BudgetRaised():
                self._budget(event)
            case ev.Compacted() | ev.ForkedFrom() | ev.TokenBudgetExceeded():
                pass
            case _:
                assert_never(event)

    def start_refused(self, event: ev.ToolStarted) -> str | None:
        """Why `event` may not follow this state, or None if it may. A `tool_started`
        starts the next attempt of a pending call: 1, then one more than the last attempt
        started or failed. Anything else is a write-ahead record delivered twice (an append
        sent again at a later seq) or written by a writer that does not know the call moved
        on: accepted, it would be counted as a retry, and its writer would run the tool."""
        call = self.pending.get(event.call_id)
        if call is None:
            return f"call {event.call_id} is not pending"
        expected = max(call.attempt, call.failed) + 1
        if event.attempt == expected:
            return None
        if event.attempt <= call.attempt:
            return f"attempt {event.attempt} of call {event.call_id} was already started"
        return f"call {event.call_id} is at attempt {expected}, not {event.attempt}"

    def _turn_event(self, event: ev.ToolResult | ev.ToolCall | ev.ModelCall) -> None:
        if type(event) is ev.ToolResult:
            self.pending.pop(event.call_id, None)
            self.consecutive_errors = 0
        elif type(event) is ev.ToolCall:
            self.pending[event.call_id] = PendingCall(
                event.call_id, event.tool, event.version, dict(event.arguments), event.seq
            )
        elif type(event) is ev.ModelCall:
            self.breaker_waits = 0
            self.model_calls += 1
            self.run_steps += 1
            self.input_tokens += event.input_tokens
            self.output_tokens += event.output_tokens
            self.cost_usd += event.cost_usd or 0.0

    def _judged(self, event: ev.GuardVerdict) -> None:
        """A guard's verdict: a block ends the call (one error, like a tool error: a model
        that keeps proposing blocked calls escalates); a judge's usage counts as the
        thread's."""
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cost_usd += event.cost_usd or 0.0
        call = self.pending.get(event.call_id)
        if call is None:
            return
        if event.verdict == "block":
            del self.pending[event.call_id]
            self.consecutive_errors += 1
            self.last_error = f"{event.tool}: blocked by {event.guard}: {event.reason}"
        elif call.guard != "require_approval":
            call.guard = event.verdict

    def _budget(self, event: ev.BudgetReserved | ev.BudgetSettled | ev.BudgetRaised) -> None:
        if isinstance(event, ev.BudgetRaised):
            self.budget = event.budget
            if self.terminal == Status.ESCALATED:  # stopped by its budget: runs on
                self.terminal = None
            return
        if isinstance(event, ev.BudgetReserved):
            self.reserved_tokens, self.reserved_usd = event.tokens, event.usd
            return
        self.spent_calls += event.calls
        self.spent_tokens += event.tokens
        self.spent_usd += event.usd
        self.reserved_tokens = self.reserved_usd = None

    def _withdraw(self, call_id: str) -> None:
        """Drop a call a cancel withdrew, with its open question or the backoff it waits
        out (`retries.retry_wait`: the wait ends at the call's `retry_at`), which would
        otherwise hold a resumed thread for a retry that never runs."""
        call = self.pending.pop(call_id, None)
        if self.human_request == call_id:
            self.human_request = None
        backoff = call.retry_at if call is not None else None
        if backoff is not None and self.waiting_for is None and self.waiting_until == backoff:
            self._end_wait()

    def _end_wait(self) -> None:
        self.waiting = False
        self.waiting_until = None
        self.waiting_for = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (stores keep it beside the events as a rebuildable cache)."""
        return {
            "next_seq": self.next_seq,
            "model_calls": self.model_calls,
            "run_steps": self.run_steps,
            "consecutive_errors": self.consecutive_errors,
            "pending": [
                {
                    "call_id": c.call_id,
                    "tool": c.tool,
                    "version": c.version,
                    "arguments": c.arguments,
                    "seq": c.seq,
                    "approval": c.approval,
                    "approvers": list(c.approvers),
                    "attempt": c.attempt,
                    "idempotency_key": c.idempotency_key,
                    "child": c.child,
                    "failed": c.failed,
                    "retry_at": c.retry_at.isoformat() if c.retry_at else None,
                    "guard": c.guard,
                }
                for c in self.pending.values()
            ],
            "human_request": self.human_request,
            "terminal": self.terminal.value if self.terminal else None,
            "paused": self.paused,
            "waiting": self.waiting,
            "waiting_until": self.waiting_until.isoformat() if self.waiting_until else None,
            "waiting_for": self.waiting_for,
            "last_error": self.last_error,
            "last_kind": self.last_kind,
            "breaker_waits": self.breaker_waits,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "spent_calls": self.spent_calls,
            "spent_tokens": self.spent_tokens,
            "spent_usd": self.spent_usd,
            "reserved_tokens": self.reserved_tokens,
            "reserved_usd": self.reserved_usd,
            "budget": self.budget.model_dump(exclude_none=True) if self.budget else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThreadState:
        state = cls(**{k: v for k, v in data.items() if k not in _NOT_PLAIN})
        if data.get("budget") is not None:
            state.budget = ev.Budget.model_validate(data["budget"])
        state.terminal = Status(data["terminal"]) if data.get("terminal") else None
        until = data.get("waiting_until")
        state.waiting_until = datetime.fromisoformat(until) if until else None
        for c in data.get("pending", []):
            c = dict(c)
            c["approvers"] = tuple(c.get("approvers", ()))
            c["retry_at"] = datetime.fromisoformat(c["retry_at"]) if c.get("retry_at") else None
            state.pending[c["call_id"]] = PendingCall(**c)
        return state


def _progress(
    call: PendingCall, event: ev.ToolStarted | ev.ToolAttemptFailed | ev.ChildStarted
) -> None:
    """A pending call was started, failed an attempt (and runs again), or was handed to a
    sub-agent."""
    match event:
        case ev.ToolStarted():
            # A write-ahead record repeated (stores refuse one since `start_refused`; an
            # older thread may hold one) is the same attempt, never a new run.
            call.attempt = max(call.attempt, event.attempt)
            call.idempotency_key = event.idempotency_key
        case ev.ToolAttemptFailed():
            call.failed = event.attempt
            call.retry_at = event.retry_at
        case ev.ChildStarted():
            call.child = event.thread_id


_state_fields = attrgetter(*(f.name for f in fields(ThreadState)))
_call_fields = attrgetter(*(f.name for f in fields(PendingCall)))
"""A state's (a pending call's) fields in constructor order, read in one C call."""

_EMPTY: dict[str, Any] = {}

_NOT_PLAIN = frozenset({"pending", "terminal", "waiting_until", "budget"})
"""`to_dict` keys `from_dict` rebuilds itself (the rest are passed as they are)."""
