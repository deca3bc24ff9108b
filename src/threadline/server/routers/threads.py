"""Threads: launch, list, inspect, stream events, pause, resume, fork.

    POST /v1/threads                           launch {agent, message, metadata?, wait?}
    GET  /v1/threads?status=&agent=&channel=&q=&limit=&cursor=
    GET  /v1/threads/{id}
    GET  /v1/threads/{id}/events?after=SEQ     (Accept: text/event-stream streams instead)
    GET  /v1/threads/{id}/events/stream        Server-Sent Events, live
    POST /v1/threads/{id}/events               an external event {name, payload?} (`launch`)
    POST /v1/threads/{id}/pause | /resume | /cancel | /fork {at}
    POST /v1/threads/{id}/budget               raise its budget {max_model_calls?, max_tokens?,
                                               max_usd?}

Every route loads what it needs from the store and asks the runtime to act; the runtime
checks that the action fits the thread's state and appends optimistically. A thread the
action made runnable is handed to the background runner (`runner.kick`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from ...errors import ConfigError
from ...events import Budget, Status
from ...observability.propagation import TRACEPARENT_KEY, inbound_traceparent
from ...wire import (
    EventPage,
    ExternalEventBody,
    ForkBody,
    LaunchBody,
    PauseBody,
    ThreadOut,
    ThreadPage,
    thread_out,
)
from ..deps import Caller, Svc, ThreadId, Via
from ..problems import ProblemError
from ..search import Filters, search_threads
from ..services import Services
from ..sse import event_stream, wait_until_settled

__all__ = ["router"]

router = APIRouter(prefix="/v1/threads")

After = Annotated[int, Query(ge=-1, le=10_000_000)]


@router.post("", status_code=201, response_model=ThreadOut, tags=["threads"])
async def launch(body: LaunchBody, svc: Svc, who: Caller, via: Via) -> ThreadOut:
    """Start a thread. Returns at once (status `running`), or with `wait` once it stops
    running (paused, awaiting someone, ended) or `wait_timeout` passes."""
    if svc.closing():
        raise ProblemError(503, "Shutting down", "this server is stopping; retry shortly")
    runtime = svc.runtime
    if body.agent not in runtime.agents:
        served = ", ".join(sorted(runtime.agents)) or "none"
        raise ProblemError(
            422, "Unknown agent", f"no agent named {body.agent!r}; this server serves: {served}"
        )
    metadata = body.metadata
    traceparent = inbound_traceparent()
    if traceparent and TRACEPARENT_KEY not in (metadata or {}):
        # The caller's trace: every step of the thread becomes part of it.
        metadata = {**(metadata or {}), TRACEPARENT_KEY: traceparent}
    try:
        thread = await runtime.launch(
            body.agent,
            body.message,
            channel=via,
            sender=who.name,
            metadata=metadata,
            advance=False,
            budget=body.budget,
            tree_budget=body.tree_budget,
        )
    except ConfigError as exc:  # e.g. a USD budget over a model without a price
        raise ProblemError(422, "Launch refused", str(exc)) from None
    svc.runner.kick(thread.id)
    if body.wait:
        await wait_until_settled(
            svc.store,
            svc.feed,
            thread.id,
            within=body.wait_timeout,
            poll=svc.config.poll_interval,
            closing=svc.closing,
        )
        thread = await svc.store.load(thread.id)
    return thread_out(thread)


@router.get("", response_model=ThreadPage, tags=["threads"])
async def list_threads(
    svc: Svc,
    status: Status | None = None,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]*$")] = None,
    channel: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> ThreadPage:
    """Threads newest first; pass the returned `cursor` back for the next page.

    `channel` keeps the threads launched from that channel (`api`, `ui`, `cron`, ...);
    `q` those whose id, agent, metadata or messages contain the text. With either, a
    page looks at a bounded number of threads, so it may be short (or empty) and still
    have a `cursor` to go on with (see `server/search.py`)."""
    filters = Filters(status=status, agent=agent, channel=channel or None, text=q or None)
    page = await search_threads(svc.store, filters, limit=limit, cursor=cursor)
    return ThreadPage.from_page(page)


@router.get("/{thread_id}", response_model=ThreadOut, tags=["threads"])
async def get_thread(thread_id: ThreadId, svc: Svc) -> ThreadOut:
    """The thread's derived state: status, pending approvals, open question, usage."""
    return thread_out(await svc.store.load(thread_id))


def _stream(svc: Services, thread_id: str, after: int) -> StreamingResponse:
    return StreamingResponse(
        event_stream(
            svc.store,
            svc.feed,
            thread_id,
            after,
            poll=svc.config.poll_interval,
            closing=svc.closing,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{thread_id}/events",
    response_model=EventPage,
    tags=["events"],
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def list_events(
    thread_id: ThreadId,
    request: Request,
    svc: Svc,
    after: After = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> Any:
    """Events with seq > `after`, oldest first. With `Accept: text/event-stream`, the
    same as `/events/stream`."""
    if "text/event-stream" in request.headers.get("accept", ""):
        await svc.store.load(thread_id)  # a damaged thread: one 409 before any stream
        return _stream(svc, thread_id, after)
    events = await svc.store.events(thread_id, after=after, limit=limit)
    return EventPage(events=events, next_after=events[-1].seq if events else after)


@router.post("/{thread_id}/events", response_model=ThreadOut, tags=["events"])
async def external_event(
    thread_id: ThreadId, body: ExternalEventBody, svc: Svc, who: Caller
) -> ThreadOut:
    """Record an external event (a payment arrived, a job finished): it ends a
    `wait_for_event` waiting for `name`, and the thread runs on. Needs the `launch` scope;
    the caller's key name is recorded as the event's `source`."""
    return await svc.act(
        thread_id, svc.runtime.external_event, body.name, body.payload, source=f"api:{who.name}"
    )


@router.get(
    "/{thread_id}/events/stream",
    tags=["events"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "SSE: `id` is the seq, `event` the kind, `data` the event as JSON",
        }
    },
)
async def stream_events(
    thread_id: ThreadId,
    svc: Svc,
    after: After = -1,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Every event after `after` (or `Last-Event-ID`), then new ones live."""
    await svc.store.load(thread_id)  # a damaged thread: one 409 before any stream
    if last_event_id is not None:
        after = max(after, _last_event_id(last_event_id))
    return _stream(svc, thread_id, after)


def _reason(body: PauseBody | None = None) -> str | None:
    return body.reason if body else None


Reason = Annotated[str | None, Depends(_reason)]
"""The `reason` of an optional `{reason}` body (pause, cancel)."""


@router.post("/{thread_id}/pause", response_model=ThreadOut, tags=["lifecycle"])
async def pause(thread_id: ThreadId, svc: Svc, who: Caller, reason: Reason) -> ThreadOut:
    """Pause: the thread stops after its current step until resumed."""
    return thread_out(await svc.runtime.pause(thread_id, by=who.name, reason=reason))


@router.post("/{thread_id}/cancel", response_model=ThreadOut, tags=["lifecycle"])
async def cancel(thread_id: ThreadId, svc: Svc, who: Caller, reason: Reason) -> ThreadOut:
    """Cancel: the thread ends `failed`, and so do the sub-agent threads working for it."""
    return thread_out(await svc.runtime.cancel(thread_id, by=who.name, reason=reason))


@router.post("/{thread_id}/resume", response_model=ThreadOut, tags=["lifecycle"])
async def resume(thread_id: ThreadId, svc: Svc, who: Caller) -> ThreadOut:
    """Resume a paused or escalated thread."""
    return await svc.act(thread_id, svc.runtime.resume, by=who.name)


@router.post("/{thread_id}/budget", response_model=ThreadOut, tags=["lifecycle"])
async def raise_budget(thread_id: ThreadId, body: Budget, svc: Svc, who: Caller) -> ThreadOut:
    """Raise the thread's own budget (the limits given; the others kept). A thread its
    budget stopped runs on. 409 with the reason for a limit below the current one or what
    was used, a thread that ended or escalated otherwise, or one without a budget."""
    return await svc.act(thread_id, svc.runtime.raise_budget, body, by=who.name)


@router.post("/{thread_id}/fork", status_code=201, response_model=ThreadOut, tags=["lifecycle"])
async def fork(thread_id: ThreadId, body: ForkBody, svc: Svc) -> ThreadOut:
    """A new thread holding events 0..`at` of this one (then advanced if runnable).
    Refused (409 "Not served here") before anything is written when this server advances
    threads but not this one's agent: the fork would sit `running` with nothing to advance
    it."""
    await svc.hub_or_fail().check_served(thread_id)
    forked = await svc.runtime.fork(thread_id, at=body.at)
    if forked.status == Status.RUNNING:
        svc.runner.kick(forked.id)
    return thread_out(forked)


def _last_event_id(value: str) -> int:
    """`Last-Event-ID` as a seq: ASCII digits (or -1), else a 400 problem."""
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ProblemError(
            400, "Bad Last-Event-ID", "Last-Event-ID must be the seq of an event (ASCII digits)"
        )
    return int(text)
