"""Webhook triggers: another system's event launches a thread (factor 11).

    POST /v1/webhooks/triggers/{name}          signed by the sender (no API key)

A trigger is configuration (the `triggers:` list of `threadline serve --config`, or
`ServerConfig.triggers`), its secret read from the environment variable it names::

    triggers:
      - name: github-prs
        agent: reviewer
        signature: github               # X-Hub-Signature-256: sha256=HMAC(secret, body)
        secret_env: GITHUB_WEBHOOK_SECRET
        events: [pull_request]          # X-GitHub-Event values that launch (default: any)
        template: "Review PR #{{ payload.number }}: {{ payload.pull_request.title }}"
        to: slack                       # where the final answer goes (optional)

Each delivery is checked in this order, and a refused one changes nothing:

1. The signature over the exact bytes received. `github`: `X-Hub-Signature-256` (GitHub,
   Gitea, and most senders that copied it); `threadline`: the timestamped scheme of
   `webhooks.py` (`X-Threadline-Timestamp` and `-Signature`, five-minute window).
2. The event filter (`events`), on `X-GitHub-Event` (or the configured `event_header`):
   an event the trigger does not launch on is acknowledged (202) and ignored.
3. The delivery id (`X-GitHub-Delivery`, or `delivery_header`) is remembered: a sender's
   retry or redelivery of the same id is acknowledged (200, `duplicate`) and launches
   nothing. Without the header, the body's digest stands in for it.
4. The message is the trigger's Jinja2 template rendered in a sandbox (no attribute
   access to Python internals, no I/O) over `payload` (the JSON body), `event` and
   `delivery`; an undefined variable is an error, not an empty string. A template that
   fails is a 422 and the delivery is forgotten, so a fixed retry launches.

The thread is an ordinary one with `channel="webhook"`, `sender="trigger:NAME"` and the
trigger, event and delivery in its metadata (`reply_to` when the trigger has `to`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..channels.routing import parse_target
from ..errors import ConfigError
from ..wire import MAX_TEXT, TriggerChannel
from .webhooks import TOLERANCE, WebhookRejected, verify

__all__ = [
    "Trigger",
    "TriggerEvent",
    "parse_triggers",
    "read_delivery",
    "sign_github",
    "trigger_view",
]

GITHUB_SIGNATURE = "X-Hub-Signature-256"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class Trigger:
    """A configured webhook trigger (see the module docstring)."""

    name: str
    agent: str
    secret: str
    template: str
    signature: Literal["github", "threadline"] = "github"
    events: tuple[str, ...] = ()
    delivery_header: str = "X-GitHub-Delivery"
    event_header: str = "X-GitHub-Event"
    to: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"trigger name {self.name!r}: letters, digits, '.', '_', '-'")
        if not self.secret:
            raise ConfigError(f"trigger {self.name}: an empty secret would accept anyone")
        if self.to:
            parse_target(self.to)  # `slack:#reviews`, `email:ops@example.com`
        try:
            _ENV.from_string(self.template)
        except TemplateError as exc:
            raise ConfigError(f"trigger {self.name}: template does not parse: {exc}") from None


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """A verified delivery: what to launch, and the key that makes it count once."""

    delivery: str
    event: str | None
    message: str | None
    """None: the trigger does not launch on this event (acknowledged, ignored)."""
    payload: Any


def trigger_view(trigger: Trigger) -> TriggerChannel:
    """How a trigger is listed (`GET /v1/channels`, `threadline triggers list`): never
    its secret."""
    return TriggerChannel(
        name=trigger.name,
        agent=trigger.agent,
        status="active",
        path=f"/v1/webhooks/triggers/{trigger.name}",
        signature=trigger.signature,
        events=list(trigger.events),
        to=trigger.to,
    )


def sign_github(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, body): GitHub's `X-Hub-Signature-256`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _verify(trigger: Trigger, headers: Mapping[str, str], body: bytes) -> None:
    if trigger.signature == "threadline":
        verify(trigger.secret, headers, body, tolerance=TOLERANCE)
        return
    given = headers.get(GITHUB_SIGNATURE.lower(), "").strip()
    if not given:
        raise WebhookRejected(f"unsigned delivery: send {GITHUB_SIGNATURE}")
    if not hmac.compare_digest(sign_github(trigger.secret, body).encode(), given.encode()):
        raise WebhookRejected("signature does not match the body")


def read_delivery(trigger: Trigger, headers: Mapping[str, str], body: bytes) -> TriggerEvent:
    """Verify a delivery and build its message (see the module docstring).

    Raises:
        WebhookRejected: a missing or wrong signature (or, `threadline`, a stale one).
        ValueError: the body is not JSON, or the template fails on it (says why).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    _verify(trigger, lowered, body)
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError("the body is not valid JSON") from None
    delivery = lowered.get(trigger.delivery_header.lower(), "").strip()[:200]
    delivery = delivery or "sha256:" + hashlib.sha256(body).hexdigest()
    event = lowered.get(trigger.event_header.lower()) or None
    if trigger.events and event not in trigger.events:
        return TriggerEvent(delivery, event, None, payload)
    try:
        text = _ENV.from_string(trigger.template).render(
            payload=payload, event=event, delivery=delivery
        )
    except TemplateError as exc:
        raise ValueError(f"trigger {trigger.name}: the template failed: {exc}") from None
    text = text.strip()
    if not text:
        raise ValueError(f"trigger {trigger.name}: the template rendered an empty message")
    return TriggerEvent(delivery, event, text[:MAX_TEXT], payload)


def parse_triggers(
    items: Sequence[Any], *, environ: Mapping[str, str] | None = None
) -> list[Trigger]:
    """Triggers from the `triggers:` list of a config file; each `secret_env` is read from
    `environ` (default: the process environment). Raises ConfigError naming the entry."""
    env = os.environ if environ is None else environ
    known = {
        "name",
        "agent",
        "secret_env",
        "template",
        "signature",
        "events",
        "delivery_header",
        "event_header",
        "to",
    }
    out: list[Trigger] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"triggers[{i}] must be a mapping")
        unknown = set(item) - known
        missing = {"name", "agent", "secret_env", "template"} - set(item)
        if unknown or missing:
            raise ConfigError(
                f"triggers[{i}]: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown keys {', '.join(sorted(unknown))}" if unknown else "",
                        f"missing {', '.join(sorted(missing))}" if missing else "",
                    )
                    if part
                )
            )
        secret = env.get(str(item["secret_env"]), "")
        if not secret:
            raise ConfigError(f"trigger {item['name']}: set the secret in ${item['secret_env']}")
        signature = item.get("signature", "github")
        if signature not in ("github", "threadline"):
            raise ConfigError(f"trigger {item['name']}: signature must be github or threadline")
        out.append(
            Trigger(
                name=str(item["name"]),
                agent=str(item["agent"]),
                secret=secret,
                template=str(item["template"]),
                signature=signature,
                events=tuple(str(e) for e in item.get("events", ())),
                delivery_header=str(item.get("delivery_header", "X-GitHub-Delivery")),
                event_header=str(item.get("event_header", "X-GitHub-Event")),
                to=item.get("to"),
            )
        )
    if len({t.name for t in out}) != len(out):
        raise ConfigError("two triggers have the same name")
    return out
