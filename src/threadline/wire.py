"""The HTTP API's request and response bodies, shared by the server and the client.

Pydantic only: nothing here imports FastAPI, Starlette or uvicorn, so `threadline.client`
(and anything else that speaks the wire format) works without the `server` extra.

Every field the API accepts is bounded (lengths, ranges), so a request the server takes is
one it can store; anything else is a 422 problem document before any handler runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from .bounds import MAX_DEPTH, check_value
from .events import (
    Budget,
    ChildStarted,
    Done,
    Escalated,
    Event,
    GuardVerdict,
    HumanRequest,
    Status,
    Thread,
    ToolCall,
    call_context,
    event_from_dict,
    summarize,
)
from .launch import unlinked

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "MAX_TEXT",
    "Ancestor",
    "ApprovalBody",
    "ApprovalsBody",
    "Channel",
    "ChannelList",
    "EventKind",
    "EventKinds",
    "EventPage",
    "ExternalEventBody",
    "ForkBody",
    "Health",
    "Inbox",
    "InsteadBody",
    "LaunchBody",
    "Listing",
    "MessageBody",
    "OpenQuestion",
    "PauseBody",
    "PendingApproval",
    "ResponseBody",
    "ScheduleBody",
    "ScheduleChannel",
    "ScheduleList",
    "ScheduleOut",
    "ServedEvent",
    "SkippedThread",
    "ThreadListItem",
    "ThreadOut",
    "ThreadPage",
    "TriggerChannel",
    "TriggerOut",
    "Usage",
    "VerdictBody",
    "WebhookDelivery",
    "event_from_wire",
    "event_json",
    "thread_out",
]

MAX_TEXT = 100_000
"""Longest message, answer or comment accepted (characters)."""

MAX_JSON_DEPTH = MAX_DEPTH
"""Deepest nesting of client JSON stored in a thread (metadata, edited arguments): the one
limit of `threadline.bounds`, the same as for model output and tool results."""
MAX_METADATA_BYTES = 65_536
"""Largest metadata object accepted (bytes of JSON)."""


def _storable(value: Any, *, what: str, max_bytes: int | None = None) -> Any:
    """`value` if every thread that stores it loads and renders forever after; else
    ValueError (a 422 naming the limit) before anything is appended.

    The limits are `threadline.bounds`' (walked without recursion): nesting deeper than
    `MAX_DEPTH`, non-finite numbers (NaN, Infinity: not JSON) and strings that are not
    valid Unicode (lone surrogates) are refused, and so is JSON larger than `max_bytes`.
    """
    check_value(value, where=what)  # BoundsError is a ValueError: pydantic reports it
    if max_bytes is not None and len(json.dumps(value)) > max_bytes:
        raise ValueError(f"{what} is larger than {max_bytes} bytes of JSON")
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(partial(_storable, what="metadata", max_bytes=MAX_METADATA_BYTES)),
]
"""A thread's or message's metadata: bounded so that what is accepted always loads."""
LaunchMetadata = Annotated[Metadata, AfterValidator(unlinked)]
"""A new thread's metadata from a client: `Metadata`, without the sub-agent links."""
EditedArguments = Annotated[dict[str, Any], AfterValidator(partial(_storable, what="arguments"))]

_Strict = ConfigDict(extra="forbid", strict=True)
"""Request bodies: unknown fields refused, and no coercion (`"wait": "yes"` is not true,
`"at": false` is not 0): a client's mistake is a 422, not a guess."""


class LaunchBody(BaseModel):
    """Start a thread of `agent` with `message` as its first event."""

    model_config = _Strict

    agent: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=MAX_TEXT)
    metadata: LaunchMetadata = Field(default_factory=dict)
    wait: bool = False
    """Answer only when the thread stops running (paused, awaiting someone, ended)."""
    wait_timeout: float = Field(default=30.0, gt=0, le=300)
    """Seconds to wait at most; the thread is returned as it is then (maybe still running)."""
    budget: Budget | None = None  # this thread's and its tree's, replacing the agent's
    tree_budget: Budget | None = None


class ApprovalBody(BaseModel):
    """A verdict on a pending call: approve (maybe with edited arguments) or reject."""

    model_config = _Strict

    approved: bool
    comment: str | None = Field(default=None, max_length=MAX_TEXT)
    """Shown to the model with a rejection: say why, and what to do instead."""
    edited_arguments: EditedArguments | None = None
    """Run with these arguments instead (re-validated against the tool's schema)."""


class InsteadBody(BaseModel):
    """A message in place of a verdict on a pending call ("respond instead"): the call is
    not run, and the model reads the message and decides again."""

    model_config = _Strict

    text: str = Field(min_length=1, max_length=MAX_TEXT)


class VerdictBody(ApprovalBody):
    """One verdict of a batch: which call, and the verdict on it."""

    call_id: str = Field(min_length=1, max_length=200)


class ApprovalsBody(BaseModel):
    """Verdicts on several pending calls of one thread: all are written, or none."""

    model_config = _Strict

    verdicts: list[VerdictBody] = Field(min_length=1, max_length=100)


class ResponseBody(BaseModel):
    model_config = _Strict

    request_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class MessageBody(BaseModel):
    model_config = _Strict

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    metadata: Metadata = Field(default_factory=dict)


class PauseBody(BaseModel):
    model_config = _Strict

    reason: str | None = Field(default=None, max_length=2000)


class ExternalEventBody(BaseModel):
    """Something happened outside: an `external_event` named `name` (it ends a
    `wait_for_event` waiting for that name) with its data."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=200)
    payload: Metadata = Field(default_factory=dict)


class ForkBody(BaseModel):
    model_config = _Strict

    at: int = Field(ge=0, le=10_000_000)
    """Keep events 0..at of the source thread."""


class WebhookDelivery(BaseModel):
    """An inbound webhook: a human's verdict or answer relayed by another system.

    `type: approval` needs `call_id` and `approved`; `type: response` needs `request_id` and
    `text`; `type: event` needs `name` (an external event, with its `payload`: it ends a
    `wait_for_event` for that name). `by` names the person (checked against the approval's
    approvers); `delivery_id`, when given, makes retried sends of one delivery count once.
    """

    model_config = _Strict

    type: Literal["approval", "response", "event"]
    thread_id: str = Field(min_length=1, max_length=200)
    delivery_id: str | None = Field(default=None, min_length=1, max_length=200)
    by: str | None = Field(default=None, max_length=200)
    call_id: str | None = Field(default=None, max_length=200)
    approved: bool | None = None
    comment: str | None = Field(default=None, max_length=MAX_TEXT)
    edited_arguments: EditedArguments | None = None
    request_id: str | None = Field(default=None, max_length=200)
    text: str | None = Field(default=None, max_length=MAX_TEXT)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """The external event's name (`type: event`)."""
    payload: Metadata | None = None
    """The external event's data (`type: event`)."""


class ScheduleBody(BaseModel):
    """A cron schedule: launch `agent` with `message` on every tick of `cron` in
    `timezone`. `missed` is what happens to ticks no worker was up for (`skip`, or
    `catch-up` once); `to` is the channel each thread's final answer goes to."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    cron: str = Field(min_length=1, max_length=200)
    agent: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=MAX_TEXT)
    timezone: str = Field(default="UTC", min_length=1, max_length=100)
    missed: Literal["skip", "catch-up"] = "skip"
    to: str | None = Field(default=None, min_length=1, max_length=200)


class ScheduleOut(BaseModel):
    """A schedule, its next tick (None while paused) and its latest firing."""

    id: str
    name: str
    agent: str
    message: str
    cron: str
    timezone: str
    missed: Literal["skip", "catch-up"]
    to: str | None
    paused: bool
    created_at: datetime
    fired_through: datetime
    next_tick: datetime | None
    last_tick: datetime | None = None
    last_thread_id: str | None = None


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class TriggerOut(BaseModel):
    """What a webhook trigger did with a delivery: `launched` a thread, acknowledged a
    `duplicate` (the delivery id was seen before), or `ignored` an event it does not
    launch on."""

    status: Literal["launched", "duplicate", "ignored"]
    trigger: str
    delivery: str
    event: str | None = None
    thread_id: str | None = None


class PendingApproval(BaseModel):
    call_id: str
    tool: str
    version: str
    arguments: dict[str, Any]
    approvers: list[str]
    """Who may answer; empty means anyone holding the `respond` scope."""
    request: str | None = None
    """The person's message the call answers (the latest user message before it)."""
    reason: str | None = None
    """What the model said alongside the call (its text, or a `reason` field of its JSON
    intent); None when it said nothing beyond the call itself."""
    guard: str | None = None
    """`"<guard>: <reason>"` when a dispatch guard sent the call to approval (the tool
    itself would not have asked); untrusted text when the guard is a judge model."""


class Ancestor(BaseModel):
    """A thread above a sub-agent's thread: which thread, its agent, and its call."""

    thread: str
    agent: str
    call: str


class OpenQuestion(BaseModel):
    request_id: str
    question: str
    responders: list[str] = Field(default_factory=list)
    """Who may answer; empty means anyone holding the `respond` scope."""


class Usage(BaseModel):
    model_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class ThreadListItem(BaseModel):
    id: str
    agent: str
    status: Status
    next_seq: int
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any]


class SkippedThread(BaseModel):
    """A thread row that does not parse: left out of the listing, reported here."""

    id: str
    reason: str


class ThreadPage(BaseModel):
    items: list[ThreadListItem]
    cursor: str | None
    """Pass back as `cursor` for the next page; null when there is none."""
    skipped: list[SkippedThread] = Field(default_factory=list)
    """Rows of this page that do not parse (bad metadata JSON, unknown status), with why."""

    @classmethod
    def from_page(cls, page: Listing) -> ThreadPage:
        """A store's page as the API sends it: each summary cut to its list fields."""
        listed = set(ThreadListItem.model_fields)
        return cls(
            items=[ThreadListItem(**s.model_dump(include=listed)) for s in page.items],
            cursor=page.cursor,
            skipped=list(page.skipped),
        )


class Listing(Protocol):
    """A page of a store's listing (`threadline.stores.base.Page`, whose summaries are
    `ThreadListItem`s with more fields), as `ThreadPage.from_page` reads it."""

    @property
    def items(self) -> Sequence[ThreadListItem]: ...

    @property
    def cursor(self) -> str | None: ...

    @property
    def skipped(self) -> Sequence[SkippedThread]: ...


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API sends it: its stored fields, and `summary` (what a person reads,
    `threadline.events.summarize`), derived on the way out and never stored."""
    data = event.model_dump(mode="json")
    data["summary"] = summarize(event).model_dump()
    return data


def _without_summary(data: Any) -> Any:
    if isinstance(data, dict) and "summary" in data:
        return {k: v for k, v in data.items() if k != "summary"}
    return data


def event_from_wire(data: dict[str, Any], *, thread_id: str = "?") -> Event:
    """An event the API sent (`event_json`), as the event it is.

    Raises:
        CorruptEvent: the data is not a valid event of any known kind.
    """
    return event_from_dict(_without_summary(data), thread_id=thread_id)


ServedEvent = Annotated[
    Event,
    BeforeValidator(_without_summary),
    PlainSerializer(event_json, return_type=dict[str, Any]),
]
"""An event on the wire: `event_json` out, its `summary` dropped on the way back in."""


class EventPage(BaseModel):
    events: list[ServedEvent]
    next_after: int
    """Pass as `after` to get the events that follow."""


class EventKind(BaseModel):
    """How to show one kind of event, as its class declares it (`Event.traits`)."""

    kind: str
    label: str
    """A short human label for timelines."""
    origin: str
    """Who writes it: `outside` (people, triggers), `model` or `runtime`."""
    error: bool
    """It counts as an error (shown as one)."""
    role: str
    """What it means to a reader: `asks` a person, `success`, `failure`, or a `step`."""


class EventKinds(BaseModel):
    items: list[EventKind]


class Health(BaseModel):
    status: str


class ThreadOut(ThreadListItem):
    """A thread's derived state (never its stored beside-state: it is folded from events):
    its listing's fields, then what is pending, its result or last error, and its usage."""

    pending_approvals: list[PendingApproval]
    question: OpenQuestion | None
    result: str | None
    """The `done` message, once the thread finished."""
    last_error: str | None
    usage: Usage
    ancestors: list[Ancestor] = Field(default_factory=list)
    """For a sub-agent's thread: the chain of parents from the root down to its parent."""
    children: list[str] = Field(default_factory=list)
    """The sub-agent threads this thread started, in order."""
    escalation: Escalated | None = None
    """For an escalated thread, its `escalated` event: the reason, and in `details` an
    exhausted budget's figures (docs/composition.md)."""


class Channel(BaseModel):
    """A way into this server: where to send, and whether it is on."""

    name: str
    path: str
    enabled: bool
    """False when its configuration is missing (e.g. webhooks without a secret)."""


class ScheduleChannel(BaseModel):
    """A cron schedule, as a way threads start: its status and where its answers go."""

    name: str
    agent: str
    status: Literal["active", "paused"]
    cron: str
    timezone: str
    next_tick: datetime | None
    to: str | None
    """The routing target its threads answer on (`slack:#reports`); None: nowhere."""


class TriggerChannel(BaseModel):
    """A webhook trigger, as a way threads start: where its sender posts, where answers go."""

    name: str
    agent: str
    status: Literal["active"]
    """Always `active`: a trigger is configuration, on while it is in the server's file."""
    path: str
    signature: Literal["github", "threadline"]
    events: list[str]
    """The events it launches on; empty: any."""
    to: str | None


class ChannelList(BaseModel):
    items: list[Channel]
    schedules: list[ScheduleChannel] = Field(default_factory=list)
    """The cron schedules of the store (none when the store keeps no schedules)."""
    triggers: list[TriggerChannel] = Field(default_factory=list)
    """The webhook triggers configured on this server."""


class Inbox(BaseModel):
    """Threads waiting for a person (an approval, an answer, or escalated), newest first."""

    items: list[ThreadOut]


def _ancestors(thread: Thread) -> list[Ancestor]:
    chain = thread.metadata.get("ancestors")
    if not isinstance(chain, list):
        return []
    try:
        return [Ancestor.model_validate(a) for a in chain]
    except ValidationError:  # metadata a launch wrote by hand: no links to show
        return []


def thread_out(thread: Thread) -> ThreadOut:
    """The API view of a loaded thread."""
    state = thread.state
    question = None
    if state.human_request is not None:
        asked = next(
            (
                e
                for e in reversed(thread.events)
                if isinstance(e, HumanRequest) and e.request_id == state.human_request
            ),
            None,
        )
        question = OpenQuestion(
            request_id=state.human_request,
            question=asked.question if asked else "",
            responders=list(asked.responders) if asked else [],
        )
    result = None
    if thread.status == Status.DONE:
        result = next((e.message for e in reversed(thread.events) if isinstance(e, Done)), None)
    return ThreadOut(
        id=thread.id,
        agent=thread.agent,
        status=thread.status,
        next_seq=thread.next_seq,
        created_at=thread.created_at,
        updated_at=thread.events[-1].at if thread.events else thread.created_at,
        metadata=thread.metadata,
        pending_approvals=[
            PendingApproval(
                call_id=c.call_id,
                tool=c.tool,
                version=c.version,
                arguments=c.arguments,
                approvers=list(c.approvers),
                guard=_guard_note(thread, c.call_id),
                **call_context(thread, c.call_id),
            )
            for c in state.pending.values()
            if c.approval == "requested"
        ],
        question=question,
        result=result,
        last_error=state.last_error,
        ancestors=_ancestors(thread),
        children=[e.thread_id for e in thread.events if isinstance(e, ChildStarted)],
        escalation=_escalation(thread),
        usage=Usage(
            model_calls=state.model_calls,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            cost_usd=state.cost_usd,
        ),
    )


def _guard_note(thread: Thread, call_id: str) -> str | None:
    """The guard that required approval of `call_id`, and why (the latest such verdict)."""
    for event in reversed(thread.events):
        if isinstance(event, ToolCall) and event.call_id == call_id:
            return None
        if (
            isinstance(event, GuardVerdict)
            and event.call_id == call_id
            and event.verdict == "require_approval"
        ):
            return f"{event.guard}: {event.reason}" if event.reason else event.guard
    return None


def _escalation(thread: Thread) -> Escalated | None:
    found = (e for e in reversed(thread.events) if isinstance(e, Escalated))
    return next(found, None) if thread.status == Status.ESCALATED else None
