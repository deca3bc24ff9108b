"""Events, the thread they form, and the state derived from it (factor 5).

A thread is an append-only sequence of events; it is the only state an agent run has.
Everything else - status, pending tool call, step count, consecutive errors - is *derived*
by folding the events in order. The fold is incremental: `ThreadState.apply` costs O(1) per
event, so deciding the next step never re-reads the thread from event 0.

Invariants:
    * `seq` is 0-based and dense: event i of a thread has `seq == i`.
    * Events are frozen; a thread only grows at its end.
    * `Thread.state` always equals folding `Thread.events` from an empty state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import CorruptEvent

__all__ = [
    "CONTEXT_SOURCE",
    "EVENT_CLASSES",
    "PREFETCH_PREFIX",
    "SCHEMA_VERSION",
    "Approval",
    "ApprovalRequested",
    "Compacted",
    "Done",
    "Escalated",
    "Event",
    "EventTraits",
    "ExternalEvent",
    "Failed",
    "ForkedFrom",
    "HumanRequest",
    "HumanResponse",
    "InvalidOutput",
    "ModelCall",
    "ModelError",
    "Origin",
    "Paused",
    "PendingCall",
    "RawToolCall",
    "ReplayRole",
    "Resumed",
    "Status",
    "Thread",
    "ThreadState",
    "TokenBudgetExceeded",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolStarted",
    "UserMessage",
    "WaitTimedOut",
    "Waiting",
    "event_from_dict",
    "event_from_json",
    "is_prefetch",
    "utcnow",
]

SCHEMA_VERSION = 1
"""The event schema this code writes. Older threads are upgraded on load (see `_UPGRADES`)."""

PREFETCH_PREFIX = "prefetch-"
"""Call ids of pre-fetched tool calls start with this (they come from the agent's
configuration, not from a model; their results are 'retrieved' material)."""

CONTEXT_SOURCE = "context"
"""`Escalated.details["source"]` of escalations the context layer writes (budget, prompt)."""

JsonValue = Any


def utcnow() -> datetime:
    """The current time in UTC. The only clock the runtime reads; `decide` never calls it."""
    return datetime.now(UTC)


Origin = Literal["outside", "model", "runtime"]
ReplayRole = Literal["input", "derived", "outcome"]


@dataclass(frozen=True, slots=True)
class EventTraits:
    """What every consumer needs to know about an event kind, declared once by its class.

    Attributes:
        label: a short human label (timelines, the web page).
        origin: who writes it. `outside`: people and triggers (messages, approvals,
            answers, pause and resume, external events); they land whenever they like, and
            an advancer whose step raced one re-bases its step over it. `model`: a model call
            and what is read from its answer. `runtime`: what advancing writes (tool runs,
            questions, endings) and what the context layer, the clock or an operator write.
        replay: how replay treats it. `input`: fed in as recorded. `derived`: re-derived by
            `decide` / `interpret` and compared. `outcome`: the recorded result of I/O (a
            model call, a tool run), matched to the step that made it.
        untrusted: fields holding content from outside the agent: masked before storage
            (unless the agent stores secrets), never taken as instructions.
        human_input: a person acted: resets the step count and the consecutive errors.
        error: counts as one consecutive error.
    """

    label: str
    origin: Origin
    replay: ReplayRole
    untrusted: tuple[str, ...] = ()
    human_input: bool = False
    error: bool = False


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    traits: ClassVar[EventTraits]
    seq: int = Field(ge=0)
    at: datetime


class UserMessage(_EventBase):
    """Input from a person or a trigger."""

    kind: Literal["user_message"] = "user_message"
    traits: ClassVar[EventTraits] = EventTraits(
        "user message", "outside", "input", ("text",), human_input=True
    )
    text: str
    channel: str = "api"
    sender: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class RawToolCall(BaseModel):
    """A tool call as a provider returned it, before validation."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    name: str
    arguments: str
    """The arguments exactly as the model wrote them (a JSON string, maybe malformed)."""


class ModelCall(_EventBase):
    """One LLM request and its raw answer."""

    kind: Literal["model_call"] = "model_call"
    traits: ClassVar[EventTraits] = EventTraits("model call", "model", "outcome")
    model: str
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    output: str = ""
    """The model's text output, verbatim."""
    tool_calls: tuple[RawToolCall, ...] = ()
    """Native tool calls, verbatim (arguments unparsed)."""


class ModelError(_EventBase):
    """A provider failed after its retries; counts as one consecutive error."""

    kind: Literal["model_error"] = "model_error"
    traits: ClassVar[EventTraits] = EventTraits("model error", "model", "outcome", error=True)
    model: str
    error_type: str
    message: str
    retryable: bool = False
    attempts: int = 1


class ToolCall(_EventBase):
    """The model's chosen intent, already validated against the tool's schema."""

    kind: Literal["tool_call"] = "tool_call"
    traits: ClassVar[EventTraits] = EventTraits("tool call", "model", "derived")
    call_id: str
    tool: str
    version: str
    arguments: dict[str, JsonValue]


class InvalidOutput(_EventBase):
    """The model's output failed parsing or validation; `reason` is shown to the model."""

    kind: Literal["invalid_output"] = "invalid_output"
    traits: ClassVar[EventTraits] = EventTraits("invalid output", "model", "derived", error=True)
    reason: str
    output: str = ""


class ApprovalRequested(_EventBase):
    """The pause between choosing a tool and running it."""

    kind: Literal["approval_requested"] = "approval_requested"
    traits: ClassVar[EventTraits] = EventTraits("approval requested", "runtime", "derived")
    call_id: str
    tool: str
    arguments: dict[str, JsonValue]
    approvers: tuple[str, ...] = ()
    """Who may answer; empty means anyone with the `respond` scope."""


class Approval(_EventBase):
    """A human's verdict on a pending call."""

    kind: Literal["approval"] = "approval"
    traits: ClassVar[EventTraits] = EventTraits("approval", "outside", "input", human_input=True)
    call_id: str
    approved: bool
    comment: str | None = None
    edited_arguments: dict[str, JsonValue] | None = None
    by: str | None = None
    channel: str = "api"


class ToolStarted(_EventBase):
    """Written before a tool with side effects runs. Without an outcome it means 'maybe ran'."""

    kind: Literal["tool_started"] = "tool_started"
    traits: ClassVar[EventTraits] = EventTraits("tool started", "runtime", "outcome")
    call_id: str
    idempotency_key: str
    attempt: int = 1


class ToolResult(_EventBase):
    kind: Literal["tool_result"] = "tool_result"
    traits: ClassVar[EventTraits] = EventTraits("tool result", "runtime", "outcome", ("result",))
    call_id: str
    tool: str
    result: JsonValue = None


class ToolError(_EventBase):
    """A tool failed; compacted to type and message, never a stack trace."""

    kind: Literal["tool_error"] = "tool_error"
    traits: ClassVar[EventTraits] = EventTraits(
        "tool error", "runtime", "outcome", ("message",), error=True
    )
    call_id: str
    tool: str
    error_type: str
    message: str
    retryable: bool = False


class HumanRequest(_EventBase):
    """The agent asked a human something (the `request_more_information` intent)."""

    kind: Literal["human_request"] = "human_request"
    traits: ClassVar[EventTraits] = EventTraits("question", "runtime", "derived")
    request_id: str
    question: str
    responders: tuple[str, ...] = ()


class HumanResponse(_EventBase):
    kind: Literal["human_response"] = "human_response"
    traits: ClassVar[EventTraits] = EventTraits(
        "answer", "outside", "input", ("text",), human_input=True
    )
    request_id: str
    text: str
    by: str | None = None
    channel: str = "api"


class Done(_EventBase):
    kind: Literal["done"] = "done"
    traits: ClassVar[EventTraits] = EventTraits("done", "runtime", "derived")
    message: str = ""


class Escalated(_EventBase):
    """Handed to a human: too many errors, step limit, a tool that may have run, ..."""

    kind: Literal["escalated"] = "escalated"
    traits: ClassVar[EventTraits] = EventTraits("escalated", "runtime", "derived")
    reason: str
    details: dict[str, JsonValue] = Field(default_factory=dict)


class Failed(_EventBase):
    kind: Literal["failed"] = "failed"
    traits: ClassVar[EventTraits] = EventTraits("failed", "runtime", "input")
    reason: str


class Paused(_EventBase):
    kind: Literal["paused"] = "paused"
    traits: ClassVar[EventTraits] = EventTraits("paused", "outside", "input")
    by: str | None = None
    reason: str | None = None


class Resumed(_EventBase):
    kind: Literal["resumed"] = "resumed"
    traits: ClassVar[EventTraits] = EventTraits("resumed", "outside", "input", human_input=True)
    by: str | None = None


class Compacted(_EventBase):
    """Events `from_seq..to_seq` are represented in context by `summary`."""

    kind: Literal["compacted"] = "compacted"
    traits: ClassVar[EventTraits] = EventTraits("compacted", "runtime", "input")
    from_seq: int
    to_seq: int
    summary: str


class ForkedFrom(_EventBase):
    kind: Literal["forked_from"] = "forked_from"
    traits: ClassVar[EventTraits] = EventTraits("forked", "runtime", "input")
    thread_id: str
    at_seq: int


class ExternalEvent(_EventBase):
    """Something happened outside (a webhook, a timer, another agent)."""

    kind: Literal["external_event"] = "external_event"
    traits: ClassVar[EventTraits] = EventTraits("external event", "outside", "input", ("payload",))
    name: str
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    source: str | None = None


class TokenBudgetExceeded(_EventBase):
    kind: Literal["token_budget_exceeded"] = "token_budget_exceeded"
    traits: ClassVar[EventTraits] = EventTraits("token budget exceeded", "runtime", "input")
    needed: int
    available: int


class Waiting(_EventBase):
    """A durable wait: no process holds the thread until `until` or the named event."""

    kind: Literal["waiting"] = "waiting"
    traits: ClassVar[EventTraits] = EventTraits("waiting", "runtime", "input")
    until: datetime | None = None
    event: str | None = None
    """Name of the external event that ends the wait early, if any."""
    reason: str | None = None


class WaitTimedOut(_EventBase):
    kind: Literal["wait_timed_out"] = "wait_timed_out"
    traits: ClassVar[EventTraits] = EventTraits("wait timed out", "runtime", "input")
    event: str | None = None


Event = Annotated[
    UserMessage
    | ModelCall
    | ModelError
    | ToolCall
    | InvalidOutput
    | ApprovalRequested
    | Approval
    | ToolStarted
    | ToolResult
    | ToolError
    | HumanRequest
    | HumanResponse
    | Done
    | Escalated
    | Failed
    | Paused
    | Resumed
    | Compacted
    | ForkedFrom
    | ExternalEvent
    | TokenBudgetExceeded
    | Waiting
    | WaitTimedOut,
    Field(discriminator="kind"),
]

EVENT_CLASSES: tuple[type[_EventBase], ...] = (
    UserMessage,
    ModelCall,
    ModelError,
    ToolCall,
    InvalidOutput,
    ApprovalRequested,
    Approval,
    ToolStarted,
    ToolResult,
    ToolError,
    HumanRequest,
    HumanResponse,
    Done,
    Escalated,
    Failed,
    Paused,
    Resumed,
    Compacted,
    ForkedFrom,
    ExternalEvent,
    TokenBudgetExceeded,
    Waiting,
    WaitTimedOut,
)
"""Every event class, in the order of the `Event` union."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_EVENT_LIST_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def is_prefetch(event: Event) -> bool:
    """Whether `event` is a pre-fetched tool call (configuration, not a model's choice)."""
    return isinstance(event, ToolCall) and event.call_id.startswith(PREFETCH_PREFIX)


def _upgrade_v0(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (the 0.0.x previews) named the discriminator `type` and the tool `tool_name`."""
    data = dict(data)
    if "type" in data and "kind" not in data:
        data["kind"] = data.pop("type")
    if "tool_name" in data:
        data["tool"] = data.pop("tool_name")
    if data.get("kind") == "tool_call" and "version" not in data:
        data["version"] = "1"
    return data


_UPGRADES = {0: _upgrade_v0}
"""schema_version -> function that lifts one event dict to schema_version + 1."""


def event_from_dict(
    data: dict[str, Any], *, schema_version: int = SCHEMA_VERSION, thread_id: str = "?"
) -> Event:
    """Parse one stored event, upgrading it from `schema_version` first.

    Raises:
        CorruptEvent: the data is not a valid event of any known kind.
    """
    for version in range(schema_version, SCHEMA_VERSION):
        data = _UPGRADES[version](data)
    try:
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        seq = data.get("seq", -1) if isinstance(data, dict) else -1
        raise CorruptEvent(
            thread_id, int(seq) if isinstance(seq, int) else -1, _short_validation(exc)
        ) from None


def event_from_json(
    raw: str | bytes, *, schema_version: int = SCHEMA_VERSION, thread_id: str = "?"
) -> Event:
    """Parse one stored event from JSON (see `event_from_dict`)."""
    if schema_version == SCHEMA_VERSION:
        try:
            return _EVENT_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            raise CorruptEvent(thread_id, -1, _short_validation(exc)) from None
    import json

    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptEvent(thread_id, -1, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptEvent(thread_id, -1, "not a JSON object")
    return event_from_dict(data, schema_version=schema_version, thread_id=thread_id)


def _short_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else first["msg"]


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


TERMINAL = frozenset({Status.DONE, Status.ESCALATED, Status.FAILED})


@dataclass(slots=True)
class PendingCall:
    """A validated tool call that has no outcome yet."""

    call_id: str
    tool: str
    version: str
    arguments: dict[str, JsonValue]
    seq: int
    approval: Literal["none", "requested", "approved"] = "none"
    approvers: tuple[str, ...] = ()
    attempt: int = 0
    """Number of `tool_started` events seen; >0 with no outcome means 'maybe ran'."""
    idempotency_key: str | None = None
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
        last_error: the compacted text of the latest error, for escalation messages.
        last_kind: kind of the latest event.
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
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

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
        for call in self.pending.values():
            if call.approval == "requested":
                return Status.AWAITING_APPROVAL
        return Status.RUNNING

    def copy(self) -> ThreadState:
        """An independent copy: only `pending` holds mutable values. (`copy.deepcopy` was
        the largest cost of an append in bench/overhead.py.)"""
        return _replace(
            self,
            pending={k: _replace(c, arguments=dict(c.arguments)) for k, c in self.pending.items()},
        )

    def apply(self, event: Event) -> None:
        """Fold one event into the state. O(1) in the thread's length."""
        if event.seq != self.next_seq:
            raise CorruptEvent("?", event.seq, f"expected seq {self.next_seq}")
        self.next_seq += 1
        self.last_kind = event.kind
        traits = event.traits
        if traits.human_input:
            self.run_steps = 0
            self.consecutive_errors = 0
        if traits.error:
            self.consecutive_errors += 1
        match event:
            case UserMessage():
                self.terminal = None
                self.waiting = False
            case ModelCall():
                self.model_calls += 1
                self.run_steps += 1
                self.input_tokens += event.input_tokens
                self.output_tokens += event.output_tokens
                self.cost_usd += event.cost_usd or 0.0
            case ModelError():
                self.last_error = f"{event.error_type}: {event.message}"
            case InvalidOutput():
                self.last_error = event.reason
            case ToolCall():
                self.pending[event.call_id] = PendingCall(
                    event.call_id, event.tool, event.version, dict(event.arguments), event.seq
                )
            case ApprovalRequested():
                call = self.pending.get(event.call_id)
                if call is not None:
                    call.approval = "requested"
                    call.approvers = event.approvers
            case Approval():
                call = self.pending.get(event.call_id)
                if call is not None:
                    if event.approved:
                        call.approval = "approved"
                        if event.edited_arguments is not None:
                            call.arguments = dict(event.edited_arguments)
                            call.validated = None
                    else:
                        del self.pending[event.call_id]
            case ToolStarted():
                call = self.pending.get(event.call_id)
                if call is not None:
                    call.attempt = event.attempt
                    call.idempotency_key = event.idempotency_key
            case ToolResult():
                self.pending.pop(event.call_id, None)
                self.consecutive_errors = 0
            case ToolError():
                self.pending.pop(event.call_id, None)
                self.last_error = f"{event.tool}: {event.error_type}: {event.message}"
            case HumanRequest():
                self.human_request = event.request_id
            case HumanResponse():
                if self.human_request == event.request_id:
                    self.human_request = None
                self.pending.pop(event.request_id, None)
                self.terminal = None
            case Done():
                self.terminal = Status.DONE
                self.pending.clear()
            case Escalated():
                self.terminal = Status.ESCALATED
            case Failed():
                self.terminal = Status.FAILED
            case Paused():
                self.paused = True
            case Resumed():
                self.paused = False
                if self.terminal == Status.ESCALATED:
                    self.terminal = None
            case Waiting():
                self.waiting = True
                self.waiting_until = event.until
                self.waiting_for = event.event
            case ExternalEvent():
                if self.waiting and (self.waiting_for is None or self.waiting_for == event.name):
                    self._end_wait()
            case WaitTimedOut():
                self._end_wait()
            case Compacted() | ForkedFrom() | TokenBudgetExceeded():
                pass
            case _:
                assert_never(event)

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
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThreadState:
        state = cls(
            **{k: v for k, v in data.items() if k not in {"pending", "terminal", "waiting_until"}}
        )
        state.terminal = Status(data["terminal"]) if data.get("terminal") else None
        until = data.get("waiting_until")
        state.waiting_until = datetime.fromisoformat(until) if until else None
        for c in data.get("pending", []):
            c = dict(c)
            c["approvers"] = tuple(c.get("approvers", ()))
            state.pending[c["call_id"]] = PendingCall(**c)
        return state


_EMPTY: dict[str, Any] = {}


class Thread:
    """An agent run: its id, agent name, events and derived state.

    A `Thread` is the in-memory form a store loads and the runtime extends. `append`
    checks seq density and folds the event into `state` in O(1).
    """

    __slots__ = ("agent", "created_at", "events", "id", "metadata", "schema_version", "state")

    def __init__(
        self,
        id: str,
        agent: str,
        events: Iterable[Event] = (),
        *,
        metadata: dict[str, JsonValue] | None = None,
        created_at: datetime | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self.id = id
        self.agent = agent
        self.metadata: dict[str, JsonValue] = metadata if metadata is not None else {}
        self.created_at = created_at or utcnow()
        self.schema_version = schema_version
        self.events: list[Event] = []
        self.state = ThreadState()
        for event in events:
            self.append(event)

    def append(self, event: Event) -> None:
        """Add one event at the end. Raises CorruptEvent if its seq is not the next one."""
        try:
            self.state.apply(event)
        except CorruptEvent:
            raise CorruptEvent(self.id, event.seq, f"expected seq {self.state.next_seq}") from None
        self.events.append(event)

    def extend(self, events: Sequence[Event]) -> None:
        for event in events:
            self.append(event)

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def next_seq(self) -> int:
        return self.state.next_seq

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return (
            f"Thread(id={self.id!r}, agent={self.agent!r}, events={len(self.events)}, "
            f"status={self.status.value!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-ready form: `Thread.from_dict(t.to_dict())` equals `t`."""
        return {
            "id": self.id,
            "agent": self.agent,
            "schema_version": SCHEMA_VERSION,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
            "events": [e.model_dump(mode="json") for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thread:
        """Load a thread written by this or any older schema version."""
        version = int(data.get("schema_version", 0))
        thread_id = str(data["id"])
        if version == SCHEMA_VERSION:
            try:
                events = _EVENT_LIST_ADAPTER.validate_python(data.get("events", []))
            except ValidationError as exc:
                raise CorruptEvent(thread_id, -1, _short_validation(exc)) from None
        else:
            events = [
                event_from_dict(e, schema_version=version, thread_id=thread_id)
                for e in data.get("events", [])
            ]
        created = data.get("created_at")
        return cls(
            thread_id,
            str(data["agent"]),
            events,
            metadata=dict(data.get("metadata") or _EMPTY),
            created_at=datetime.fromisoformat(created) if created else None,
        )
