"""Signed webhooks, both ways (factor 11's foundation).

Signature scheme (the same for inbound and outbound)::

    X-Threadline-Timestamp: <unix seconds>
    X-Threadline-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

The receiver recomputes the HMAC over the exact bytes it received, compares in constant
time, and refuses deliveries whose timestamp is more than `tolerance` (5 minutes) away from
its clock. Inbound, a delivery that verified is remembered in the store (its `delivery_id`,
else its signature) so the same delivery is never acted on twice.

Outbound, `Notifier` is a runtime observer: when an approval or question is written it POSTs
a signed payload (thread, call or question, where to respond) to the configured URL, in a
background task with a few quick retries. It never blocks or breaks the run loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import httpx

from ..events import ApprovalRequested, Event, HumanRequest, Thread

__all__ = ["Notifier", "WebhookRejected", "sign", "signed_headers", "verify"]

log = logging.getLogger("threadline.server.webhooks")

TIMESTAMP_HEADER = "X-Threadline-Timestamp"
SIGNATURE_HEADER = "X-Threadline-Signature"
_ASCII_DIGITS = re.compile(r"[0-9]{1,12}")
"""Unix seconds: ASCII digits only (`str.isdigit` takes `¹²`, which `int` refuses)."""
TOLERANCE = 300.0
"""Seconds a delivery's timestamp may differ from the receiver's clock."""


class WebhookRejected(Exception):
    """A delivery failed verification; `reason` says which check."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `timestamp.body`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that make `body` a valid delivery at time `now` (default: the clock)."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Content-Type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> str:
    """Check a delivery's signature and freshness; return the signature.

    Raises:
        WebhookRejected: a header is missing or malformed, the signature does not match the
            body, or the timestamp is more than `tolerance` seconds from `now`.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    signature = lowered.get(SIGNATURE_HEADER.lower())
    if not timestamp or not signature:
        raise WebhookRejected(
            f"unsigned delivery: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
        )
    if not _ASCII_DIGITS.fullmatch(timestamp):
        raise WebhookRejected(f"{TIMESTAMP_HEADER} must be unix seconds")
    expected = sign(secret, timestamp, body)
    # Signature first, freshness second: an attacker learns nothing about our clock.
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookRejected("signature does not match the body")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > tolerance:
        raise WebhookRejected(
            f"stale delivery: timestamp is {abs(age):.0f}s away from the server's clock "
            f"(limit {tolerance:.0f}s)"
        )
    return expected


def notification(thread: Thread, event: Event, public_url: str) -> dict[str, Any] | None:
    """The outbound payload for an approval request or a question, else None."""
    base = public_url.rstrip("/")
    respond: dict[str, Any] = {
        "webhook": f"{base}/v1/webhooks/inbound",
        "ui": f"{base}/ui/#thread={thread.id}",
    }
    payload: dict[str, Any] = {
        "delivery_id": f"{thread.id}:{event.seq}",
        "thread_id": thread.id,
        "agent": thread.agent,
        "seq": event.seq,
        "at": event.at.isoformat(),
    }
    if isinstance(event, ApprovalRequested):
        route, key = f"approvals/{event.call_id}", "call"
        asks: dict[str, Any] = {
            "call_id": event.call_id,
            "tool": event.tool,
            "arguments": event.arguments,
            "approvers": list(event.approvers),
        }
    elif isinstance(event, HumanRequest):
        route, key = "responses", "request"
        asks = {
            "request_id": event.request_id,
            "question": event.question,
            "responders": list(event.responders),
        }
    else:
        return None
    respond["api"] = f"{base}/v1/threads/{thread.id}/{route}"
    payload.update({"type": event.kind, key: asks, "respond": respond})
    return payload


@dataclass(eq=False)
class Notifier:
    """Runtime observer posting signed notifications of pending approvals and questions.

    Args:
        url: where to POST.
        secret: HMAC secret for the signature (the receiver verifies with `verify`).
        public_url: this server's base URL, put in the payload as where to respond.
        attempts: tries per notification (network errors, 5xx and 429 are retried).
        timeout: seconds one attempt may take.
        backoff: seconds before the second attempt, doubling for each one after.
    """

    url: str
    secret: str = field(repr=False)
    public_url: str
    _: KW_ONLY
    attempts: int = 3
    timeout: float = 5.0
    backoff: float = 0.5
    delivered: int = field(default=0, init=False)
    """Notifications the receiver accepted."""
    failed: int = field(default=0, init=False)
    """Notifications given up on (refused, or every attempt failed)."""
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        for event in events:
            payload = notification(thread, event, self.public_url)
            if payload is None:
                continue
            # A background task: the run loop has already checkpointed and must not wait.
            task = asyncio.get_running_loop().create_task(self._deliver(payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in range(self.attempts):
            try:
                resp = await self._client.post(
                    self.url, content=body, headers=signed_headers(self.secret, body)
                )
                if resp.status_code < 300:
                    self.delivered += 1
                    return
                if resp.status_code < 500 and resp.status_code != 429:
                    log.warning(
                        "notification %s refused: HTTP %s", payload["delivery_id"], resp.status_code
                    )
                    break
            except httpx.HTTPError as exc:
                log.info(
                    "notification %s attempt %d failed: %s",
                    payload["delivery_id"],
                    attempt + 1,
                    type(exc).__name__,
                )
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff * 2**attempt)
        self.failed += 1
        log.warning("notification %s to %s not delivered", payload["delivery_id"], self.url)

    async def aclose(self, grace: float = 5.0) -> None:
        """Give in-flight notifications `grace` seconds, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
