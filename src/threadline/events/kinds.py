"""The event kinds and their traits (parsing stored events: `threadline.events.thread`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BUDGET_SOURCE",
    "CONTEXT_SOURCE",
    "EVENT_CLASSES",
    "PREFETCH_PREFIX",
    "SCHEMA_VERSION",
    "Approval",
    "ApprovalRequested",
    "Budget",
    "BudgetRaised",
    "BudgetReserved",
    "BudgetSettled",
    "ChildStarted",
    "Compacted",
    "Done",
    "Escalated",
    "Event",
    "EventTraits",
    "ExternalEvent",
    "Failed",
    "ForkedFrom",
    "GuardVerdict",
    "HumanRequest",
    "HumanResponse",
    "InvalidOutput",
    "ModelCall",
    "ModelError",
    "Origin",
    "Paused",
    "RawToolCall",
    "ReplayRole",
    "RespondedInstead",
    "Resumed",
    "Role",
    "TokenBudgetExceeded",
    "ToolAttemptFailed",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolStarted",
    "UserMessage",
    "WaitTimedOut",
    "Waiting",
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

BUDGET_SOURCE = "budget"
"""`Escalated.details["source"]` of escalations for an exhausted budget (`threadline.budgets`):
written from figures outside the thread (a tree's totals), so replay takes them as input."""

JsonValue = Any


def utcnow() -> datetime:
    """The current time in UTC. The only clock the runtime reads; `decide` never calls it."""
    return datetime.now(UTC)


Origin = Literal["outside", "model", "runtime"]
ReplayRole = Literal["input", "derived", "outcome"]
Role = Literal["step", "asks", "success", "failure"]


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
        role: what it means to someone reading the timeline: it `asks` a person for
            something (an approval, an answer), is a `success` (a tool's result, the end
            of the work) or a `failure` (the thread ended badly), else a `step`. Pages
            style events by role and origin, never by kind.
    """

    label: str
    origin: Origin
    replay: ReplayRole
    untrusted: tuple[str, ...] = ()
    human_input: bool = False
    error: bool = False
    role: Role = "step"


def _absent(count: int) -> bool:
    """An optional count absent: left out of the stored and served JSON."""
    return count == 0


def _none_listed(values: tuple[str, ...]) -> bool:
    """An optional list empty: left out of the stored and served JSON."""
    return not values


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
    """Every token of the prompt, cached or not (the cache counts below are part of it)."""
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    output: str = ""
    """The model's text output, verbatim."""
    tool_calls: tuple[RawToolCall, ...] = ()
    """Native tool calls, verbatim (arguments unparsed)."""
    cache_write_tokens: int = Field(default=0, ge=0, exclude_if=_absent)
    """Of the input, the tokens written to the provider's prompt cache. Left out of the
    JSON when 0, so an event without caching serialises as before the field existed."""
    cache_read_tokens: int = Field(default=0, ge=0, exclude_if=_absent)
    """Of the input, the tokens read from the provider's prompt cache (left out when 0)."""
    cache_write_1h_tokens: int = Field(default=0, ge=0, exclude_if=_absent)
    """Of the cache writes, those made 1-hour entries (Anthropic's `cache_control` with
    `ttl: 1h`; the rest live 5 minutes), priced at their own rate (left out when 0)."""


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
    traits: ClassVar[EventTraits] = EventTraits(
        "approval requested", "runtime", "derived", role="asks"
    )
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


class RespondedInstead(_EventBase):
    """A person's message in place of a verdict on a pending call ("respond instead"): the
    call is not run, and the model reads the message, as the person's, and decides again."""

    kind: Literal["responded_instead"] = "responded_instead"
    traits: ClassVar[EventTraits] = EventTraits(
        "responded instead", "outside", "input", ("text",), human_input=True
    )
    call_id: str
    text: str
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
    traits: ClassVar[EventTraits] = EventTraits(
        "tool result", "runtime", "outcome", ("result",), role="success"
    )
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


class ToolAttemptFailed(_EventBase):
    """One attempt of a call failed in a way worth trying again (`threadline.retries`): the
    call stays pending and runs again, with the same idempotency key, from `retry_at` on.
    Not shown to the model, and not an error of the thread: the call's final outcome is."""

    kind: Literal["tool_attempt_failed"] = "tool_attempt_failed"
    traits: ClassVar[EventTraits] = EventTraits(
        "tool attempt failed", "runtime", "outcome", ("message",)
    )
    call_id: str
    tool: str
    attempt: int
    error_type: str
    message: str
    retry_at: datetime


class HumanRequest(_EventBase):
    """The agent asked a human something (the `request_more_information` intent)."""

    kind: Literal["human_request"] = "human_request"
    traits: ClassVar[EventTraits] = EventTraits("question", "runtime", "derived", role="asks")
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
    traits: ClassVar[EventTraits] = EventTraits("done", "runtime", "derived", role="success")
    message: str = ""


class Escalated(_EventBase):
    """Handed to a human: too many errors, step limit, a tool that may have run, ..."""

    kind: Literal["escalated"] = "escalated"
    traits: ClassVar[EventTraits] = EventTraits("escalated", "runtime", "derived", role="failure")
    reason: str
    details: dict[str, JsonValue] = Field(default_factory=dict)


class Failed(_EventBase):
    """The thread ended failed: its advance kept failing (a worker gave up on it) or an
    operator cancelled it (`Runtime.cancel`)."""

    kind: Literal["failed"] = "failed"
    traits: ClassVar[EventTraits] = EventTraits("failed", "runtime", "input", role="failure")
    reason: str
    withdrawn: tuple[str, ...] = Field(default=(), exclude_if=_none_listed)
    """Calls a cancel withdrew: they had not started, are no longer pending and never run.
    A call already started is not withdrawn: it may be running, and its outcome is recorded
    when it comes."""


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


class Budget(BaseModel):
    """Limits on what model calls may use: of one thread, or of a tree (a root thread and
    every sub-agent thread under it). None: no limit of that kind. See docs/composition.md.

    Attributes:
        max_model_calls: model calls in all.
        max_tokens: input plus output tokens in all.
        max_usd: cost in USD, priced by each model's `ModelProfile.price` (a model without
            a price cannot run under a USD limit: a configuration error, never a free call).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_model_calls: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @property
    def empty(self) -> bool:
        """No limit of any kind."""
        return self.max_model_calls is None and self.max_tokens is None and self.max_usd is None


class BudgetReserved(_EventBase):
    """Written, and committed, before a model call of a thread under a budget: the most the
    call can use (the rendered input's tokens plus the output cap, priced by the model). A
    reservation counts against the limits until the next `budget_settled` replaces it with
    what the call used. With `tree`, the store adds it to that tree's totals in the same
    transaction, refusing it when it would pass `tree_budget`."""

    kind: Literal["budget_reserved"] = "budget_reserved"
    traits: ClassVar[EventTraits] = EventTraits("budget reserved", "runtime", "input")
    model: str
    input_tokens: int = Field(ge=0)
    """The rendered context, as the renderer counted it."""
    output_tokens: int = Field(ge=0)
    """The output cap the call is sent with."""
    usd: float = Field(ge=0, allow_inf_nan=False)
    """0 when the model has no price (allowed only when no USD limit applies)."""
    tree: str | None = None
    """The root thread of the tree whose totals this counts in (None: no tree budget)."""
    tree_budget: Budget | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class BudgetSettled(_EventBase):
    """The open reservation replaced by what was used, in the same append as the model's
    answer (or its error). `calls` is 0 when no request was sent (an open circuit breaker);
    a reservation left open by a crash is settled in full (the call may have been made)."""

    kind: Literal["budget_settled"] = "budget_settled"
    traits: ClassVar[EventTraits] = EventTraits("budget settled", "runtime", "input")
    calls: int = Field(ge=0)
    tokens: int = Field(ge=0)
    usd: float = Field(ge=0, allow_inf_nan=False)
    reserved_tokens: int = Field(ge=0)
    reserved_usd: float = Field(ge=0, allow_inf_nan=False)
    """What the reservation held (released from the tree's totals)."""
    tree: str | None = None


class BudgetRaised(_EventBase):
    """An operator raised the thread's own budget (`Runtime.raise_budget`): from here on
    `budget` is its limits (every kind; replacing the launch's or the agent's). A thread an
    exhausted budget escalated runs on: the escalation is cleared, so the next model call
    is reserved against the new limits."""

    kind: Literal["budget_raised"] = "budget_raised"
    traits: ClassVar[EventTraits] = EventTraits("budget raised", "outside", "input")
    budget: Budget
    by: str | None = None


class ChildStarted(_EventBase):
    """A call handed to a sub-agent (`Agent.as_tool`): the child thread `thread_id` works on
    it, and its end becomes the call's outcome. Until then the parent waits, holding no
    process."""

    kind: Literal["child_started"] = "child_started"
    traits: ClassVar[EventTraits] = EventTraits("sub-agent started", "runtime", "outcome")
    call_id: str
    thread_id: str
    agent: str


class GuardVerdict(_EventBase):
    """A dispatch guard's verdict on a validated call, before it is dispatched
    (`threadline.guards`): `allow`, `block` (the call is over: the model reads `reason`
    next turn) or `require_approval` (the call goes to the approval flow).

    A judge's verdict records the judge model's call (model, prompt, usage, its raw
    `output`); replay takes the recorded verdict and never asks the judge again. `failed`:
    the guard itself failed (timeout, provider down, malformed verdict) and `verdict` is
    the agent's failure policy (`Agent.guard_failure`), `reason` saying why.
    """

    kind: Literal["guard_verdict"] = "guard_verdict"
    traits: ClassVar[EventTraits] = EventTraits(
        "guard verdict", "runtime", "outcome", ("reason", "output")
    )
    call_id: str
    tool: str
    guard: str
    verdict: Literal["allow", "block", "require_approval"]
    reason: str = ""
    failed: bool = False
    model: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    output: str = ""
    """A judge's answer, verbatim (untrusted model text)."""


class Waiting(_EventBase):
    """A durable wait: no process holds the thread until `until` or the named event."""

    kind: Literal["waiting"] = "waiting"
    traits: ClassVar[EventTraits] = EventTraits("waiting", "runtime", "input")
    until: datetime | None = None
    event: str | None = None
    """Name of the external event that ends the wait early, if any."""
    reason: str | None = None
    breaker: bool = False
    """Written by the runtime because the model provider's circuit breaker is open (not by
    a tool): not shown to the model, and counted toward `Agent.max_breaker_waits`."""
    call_id: str | None = None
    """Written by the runtime for the backoff of a failed attempt of this call (a
    `tool_attempt_failed` before it): not shown to the model; the call runs again after."""
    rate_limit: str | None = None
    """Written by the runtime because a call would pass this rate limit (its key, e.g.
    `model:openai`; see `threadline.ratelimits`): not shown to the model, not an error."""


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
    | RespondedInstead
    | ToolStarted
    | ToolResult
    | ToolError
    | ToolAttemptFailed
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
    | ChildStarted
    | GuardVerdict
    | BudgetReserved
    | BudgetSettled
    | BudgetRaised
    | Waiting
    | WaitTimedOut,
    Field(discriminator="kind"),
]

EVENT_CLASSES: tuple[type[_EventBase], ...] = get_args(get_args(Event)[0])
"""Every event class, in the order of the `Event` union (read from it: a kind is listed
once)."""


def is_prefetch(event: Event) -> bool:
    """Whether `event` is a pre-fetched tool call (configuration, not a model's choice)."""
    return isinstance(event, ToolCall) and event.call_id.startswith(PREFETCH_PREFIX)
