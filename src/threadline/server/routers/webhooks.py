"""Inbound webhooks: a human's verdict or answer, or an external event, relayed by
another system; and triggers, another system's event launching a thread.

    POST /v1/webhooks/inbound                  signed approval, answer or event (no API key)
    POST /v1/webhooks/triggers/{name}          signed by the sender: launch (see triggers.py)

Verified by its HMAC signature (`..webhooks.verify`) over the exact bytes received, checked
for freshness, then remembered by delivery id (or signature) so a replayed or retried
delivery is applied once. Only then is the body parsed and acted on; a delivery that is
refused (wrong responder, unknown call or question) is forgotten again, so a corrected
retry with the same delivery id is applied.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from pydantic import ValidationError

from ...events import Thread, utcnow
from ...wire import ThreadOut, TriggerOut, WebhookDelivery
from ..deps import Svc
from ..problems import ProblemError
from ..services import Services
from ..triggers import GITHUB_SIGNATURE, Trigger, TriggerEvent, read_delivery
from ..webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookRejected, verify

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["humans"])

_SIGNED: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WebhookDelivery.model_json_schema()}},
    },
    "parameters": [
        {
            "name": TIMESTAMP_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": "unix seconds",
        },
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": 'sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))',
        },
    ],
}


@router.post("/inbound", response_model=ThreadOut, openapi_extra=_SIGNED)
async def inbound_webhook(request: Request, svc: Svc) -> ThreadOut:
    """A human's verdict or answer relayed by another system, signed with the shared
    secret (no API key). Stale (over 5 minutes) and replayed deliveries are refused."""
    secret = svc.config.webhook_secret
    if not secret:
        raise ProblemError(
            403,
            "Webhooks disabled",
            "inbound webhooks need THREADLINE_WEBHOOK_SECRET on the server",
        )
    raw = await request.body()
    try:
        signature = verify(secret, request.headers, raw, tolerance=svc.config.webhook_tolerance)
    except WebhookRejected as exc:
        raise ProblemError(401, "Webhook rejected", exc.reason) from None
    delivery = _parse(raw)
    delivery_key = f"webhook:{delivery.delivery_id or signature}"
    if not await svc.deliveries.remember(delivery_key, at=utcnow()):
        raise ProblemError(
            409, "Replayed delivery", "this delivery was already received; it is not applied twice"
        )
    try:
        return await svc.act(delivery.thread_id, _apply, svc, delivery)
    except BaseException:
        # Refused (wrong responder, unknown call, ...) or failed: not received, so the
        # right approver's retry with the same delivery id is applied, not called a replay.
        await svc.deliveries.forget(delivery_key)
        raise


@router.post(
    "/triggers/{name}",
    status_code=201,
    response_model=TriggerOut,
    responses={200: {"description": "A duplicate delivery"}, 202: {"description": "Ignored"}},
    openapi_extra={
        "parameters": [
            {"name": GITHUB_SIGNATURE, "in": "header", "schema": {"type": "string"}},
            {"name": "X-GitHub-Delivery", "in": "header", "schema": {"type": "string"}},
            {"name": "X-GitHub-Event", "in": "header", "schema": {"type": "string"}},
        ]
    },
)
async def trigger_webhook(
    name: Annotated[str, PathParam(min_length=1, max_length=100)],
    request: Request,
    response: Response,
    svc: Svc,
) -> TriggerOut:
    """Another system's event launches a thread: signed by the sender (no API key), once
    per delivery id (a retry is a 200 `duplicate`), for the events the trigger takes."""
    trigger = svc.config.trigger(name)
    if trigger is None:
        raise ProblemError(404, "Not found", f"no webhook trigger named {name!r}")
    if svc.closing():
        raise ProblemError(503, "Shutting down", "this server is stopping; retry shortly")
    try:
        event = read_delivery(trigger, request.headers, await request.body())
    except WebhookRejected as exc:
        raise ProblemError(401, "Webhook rejected", exc.reason) from None
    except ValueError as exc:
        raise ProblemError(422, "Invalid delivery", str(exc)) from None
    out = TriggerOut(status="ignored", trigger=name, delivery=event.delivery, event=event.event)
    if event.message is None:
        response.status_code = 202
        return out
    key = f"trigger:{name}:{event.delivery}"
    if not await svc.deliveries.remember(key, at=utcnow()):
        response.status_code = 200
        return out.model_copy(update={"status": "duplicate"})
    try:
        thread = await _launch(svc, trigger, event)
    except BaseException:
        await svc.deliveries.forget(key)  # not launched: the sender's retry must launch
        raise
    svc.runner.kick(thread.id)
    return out.model_copy(update={"status": "launched", "thread_id": thread.id})


async def _launch(svc: Services, trigger: Trigger, event: TriggerEvent) -> Thread:
    metadata: dict[str, Any] = {"trigger": trigger.name, "delivery": event.delivery}
    if event.event:
        metadata["event"] = event.event
    if trigger.to:
        metadata["reply_to"] = trigger.to
    return await svc.runtime.launch(
        trigger.agent,
        event.message or "",
        channel="webhook",
        sender=f"trigger:{trigger.name}",
        metadata=metadata,
        advance=False,
    )


def _parse(raw: bytes) -> WebhookDelivery:
    """The delivery, with the fields its type needs; a 422 problem otherwise."""
    try:
        delivery = WebhookDelivery.model_validate_json(raw)
    except ValidationError as exc:
        raise ProblemError(422, "Invalid delivery", _first_error(exc)) from None
    if delivery.type == "approval" and (delivery.call_id is None or delivery.approved is None):
        raise ProblemError(422, "Invalid delivery", "an approval needs call_id and approved")
    if delivery.type == "response" and (delivery.request_id is None or not delivery.text):
        raise ProblemError(422, "Invalid delivery", "a response needs request_id and text")
    if delivery.type == "event" and not delivery.name:
        raise ProblemError(422, "Invalid delivery", "an event needs a name")
    return delivery


async def _apply(thread_id: str, svc: Services, delivery: WebhookDelivery) -> Thread:
    if delivery.type == "approval":
        return await svc.runtime.approve(
            thread_id,
            delivery.call_id or "",
            approved=bool(delivery.approved),
            comment=delivery.comment,
            edited_arguments=delivery.edited_arguments,
            by=delivery.by,
            channel="webhook",
        )
    if delivery.type == "event":
        return await svc.runtime.external_event(
            thread_id,
            delivery.name or "",
            delivery.payload,
            source=f"webhook:{delivery.by}" if delivery.by else "webhook",
        )
    return await svc.runtime.respond(
        thread_id,
        delivery.request_id or "",
        delivery.text or "",
        by=delivery.by,
        channel="webhook",
    )


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
