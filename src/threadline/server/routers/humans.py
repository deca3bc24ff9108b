"""People in the loop (factor 7): the inbox, approvals, answers and new messages.

    GET  /v1/inbox                             threads waiting for a person (an approval, an
                                               answer, or escalated to one), newest first
    POST /v1/threads/{id}/approvals/{call_id}  {approved, comment?, edited_arguments?}
    POST /v1/threads/{id}/approvals            {verdicts: [{call_id, approved, ...}, ...]}
    POST /v1/threads/{id}/approvals/{call_id}/instead   {text}: respond instead of a verdict
    POST /v1/threads/{id}/responses            {request_id, text}
    POST /v1/threads/{id}/messages             {text}

The caller's key name is recorded as `by` on what they write; a named approver list on an
approval is enforced by the runtime (403 for anyone else).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...errors import ThreadNotFound
from ...events import Status
from ...runtime_actions import Verdict
from ...wire import (
    ApprovalBody,
    ApprovalsBody,
    Inbox,
    InsteadBody,
    MessageBody,
    ResponseBody,
    ThreadOut,
    thread_out,
)
from ..deps import Caller, CallId, Svc, ThreadId, Via

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["humans"])

WAITING = (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.ESCALATED)
"""Handed to a person: an escalation (an exhausted budget, too many errors, ...) too."""


@router.get("/inbox", response_model=Inbox)
async def inbox(svc: Svc, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Inbox:
    """Threads awaiting an approval or an answer, or escalated to a person, each with what
    it waits for (`escalation`: the reason and, for a budget, its figures)."""
    summaries = []
    for status in WAITING:
        summaries += (await svc.store.list(status=status, limit=limit)).items
    summaries.sort(key=lambda s: s.updated_at, reverse=True)
    items = []
    for summary in summaries[:limit]:
        try:
            items.append(thread_out(await svc.store.load(summary.id)))
        except ThreadNotFound:  # deleted since it was listed (retention)
            continue
    return Inbox(items=items)


@router.post("/threads/{thread_id}/approvals/{call_id}", response_model=ThreadOut)
async def approve(
    thread_id: ThreadId, call_id: CallId, body: ApprovalBody, svc: Svc, who: Caller, via: Via
) -> ThreadOut:
    """Approve (maybe with edited arguments) or reject a pending call. A rejection's
    comment is shown to the model. 409 if the call is not awaiting approval."""
    verdict = Verdict(call_id, body.approved, body.comment, body.edited_arguments)
    return await svc.act(thread_id, svc.runtime.approve_many, [verdict], by=who.name, channel=via)


@router.post("/threads/{thread_id}/approvals/{call_id}/instead", response_model=ThreadOut)
async def respond_instead(
    thread_id: ThreadId, call_id: CallId, body: InsteadBody, svc: Svc, who: Caller, via: Via
) -> ThreadOut:
    """Answer a pending call with a message instead of a verdict: the call is not run and
    the model reads the message. 409 if the call is not awaiting approval."""
    return await svc.act(
        thread_id, svc.runtime.respond_instead, call_id, body.text, by=who.name, channel=via
    )


@router.post("/threads/{thread_id}/approvals", response_model=ThreadOut)
async def approve_many(
    thread_id: ThreadId, body: ApprovalsBody, svc: Svc, who: Caller, via: Via
) -> ThreadOut:
    """Verdicts on several pending calls at once (approve some, reject some, edit some):
    all are written in one append, or none (409 naming the call that is not awaiting
    approval, 403 if the caller may not answer one of them)."""
    verdicts = [
        Verdict(v.call_id, v.approved, v.comment, v.edited_arguments) for v in body.verdicts
    ]
    return await svc.act(thread_id, svc.runtime.approve_many, verdicts, by=who.name, channel=via)


@router.post("/threads/{thread_id}/responses", response_model=ThreadOut)
async def respond(
    thread_id: ThreadId, body: ResponseBody, svc: Svc, who: Caller, via: Via
) -> ThreadOut:
    """Answer the thread's open question. 409 if it asked nothing (or something else)."""
    return await svc.act(
        thread_id, svc.runtime.respond, body.request_id, body.text, by=who.name, channel=via
    )


@router.post("/threads/{thread_id}/messages", response_model=ThreadOut)
async def message(
    thread_id: ThreadId, body: MessageBody, svc: Svc, who: Caller, via: Via
) -> ThreadOut:
    """A new user message to a finished, escalated, waiting or question-asking thread."""
    return await svc.act(
        thread_id,
        svc.runtime.message,
        body.text,
        sender=who.name,
        channel=via,
        metadata=body.metadata,
    )
