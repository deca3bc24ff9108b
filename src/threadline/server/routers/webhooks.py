"""Inbound webhooks: a human's verdict or answer, or an external event, relayed by
another system.

    POST /v1/webhooks/inbound                  signed approval, answer or event (no API key)

Verified by its HMAC signature (`..webhooks.verify`) over the exact bytes received, checked
for freshness, then remembered by delivery id (or signature) so a replayed or retried
delivery is applied once. Only then is the body parsed and acted on; a delivery that is
refused (wrong responder, unknown call or question) is forgotten again, so a corrected
retry with the same delivery id is applied.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from ...events import Thread, utcnow
from ...wire import ThreadOut, WebhookDelivery, thread_out
from ..deps import Svc
from ..problems import ProblemError
from ..services import Services
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
        thread = await _apply(svc, delivery)
    except BaseException:
        # Refused (wrong responder, unknown call, ...) or failed: not received, so the
        # right approver's retry with the same delivery id is applied, not called a replay.
        await svc.deliveries.forget(delivery_key)
        raise
    svc.runner.kick(delivery.thread_id)
    return thread_out(thread)


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


async def _apply(svc: Services, delivery: WebhookDelivery) -> Thread:
    await svc.check_served(delivery.thread_id)
    if delivery.type == "approval":
        return await svc.runtime.approve(
            delivery.thread_id,
            delivery.call_id or "",
            approved=bool(delivery.approved),
            comment=delivery.comment,
            edited_arguments=delivery.edited_arguments,
            by=delivery.by,
            channel="webhook",
        )
    if delivery.type == "event":
        return await svc.runtime.external_event(
            delivery.thread_id,
            delivery.name or "",
            delivery.payload,
            source=f"webhook:{delivery.by}" if delivery.by else "webhook",
        )
    return await svc.runtime.respond(
        delivery.thread_id,
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
