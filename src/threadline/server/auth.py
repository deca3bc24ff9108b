"""API keys and scopes: who may call which route.

A key is `tl_` + 43 url-safe characters (256 random bits). The store keeps only its sha256
digest, so a leaked database does not leak working keys; the secret is shown once, when the
key is created. Each key has a name (recorded as `by` on the approvals it makes) and scopes:

    read      GET any thread, its events and its live stream
    launch    start threads, send messages and external events, fork
    respond   approve, reject, answer questions
    admin     pause, resume, raise a budget; implies every other scope

Authentication happens in `AuthMiddleware`, before the request body is read, so a caller
without the right key learns nothing from validation errors and costs no body parsing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..errors import ConfigError
from ..events import utcnow
from ..stores.keys import ApiKey, KeyStore
from .asgi import ASGIApp, HTTPMiddleware, Receive, Scope, Send, send_problem

__all__ = [
    "SCOPES",
    "AuthMiddleware",
    "Principal",
    "create_key",
    "hash_secret",
    "required_scope",
]

SCOPES = ("launch", "respond", "read", "admin")

log = logging.getLogger("threadline.server")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's name and scopes (or the local user when auth is off)."""

    name: str
    scopes: frozenset[str]
    key_id: str | None = None

    def can(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


LOCAL = Principal("local", frozenset(SCOPES))
"""The caller when the server runs with `--no-auth` on loopback."""


def hash_secret(secret: str) -> str:
    """The stored form of a key: sha256 hex. A 256-bit random secret needs no slow hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Validate and de-duplicate scopes, keeping the canonical order."""
    wanted = set(scopes)
    unknown = wanted - set(SCOPES)
    if unknown or not wanted:
        raise ConfigError(
            f"scopes must be some of {', '.join(SCOPES)}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "; none given")
        )
    return tuple(s for s in SCOPES if s in wanted)


async def create_key(
    keys: KeyStore, name: str, scopes: Iterable[str], *, now: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create and store a key; returns the record and the secret (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ConfigError("a key needs a name of 1-200 characters (who holds it)")
    key = ApiKey(
        id=f"key_{secrets.token_hex(6)}",
        name=name,
        scopes=check_scopes(scopes),
        created_at=now or utcnow(),
    )
    secret = "tl_" + secrets.token_urlsafe(32)
    await keys.create(key, hash_secret(secret))
    return key, secret


def required_scope(method: str, path: str) -> str | None:
    """The scope a /v1 route needs, or None for routes outside key auth: webhooks and the
    channels' own routes (each verifies its own signatures: Slack's signing secret, ...)."""
    if not path.startswith("/v1/") or path.startswith(("/v1/webhooks/", "/v1/channels/")):
        return None
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    parts = path.strip("/").split("/")  # v1, threads, {id}, action, ...
    if parts[1:] == ["threads"]:
        return "launch"
    action = parts[3] if len(parts) >= 4 and parts[1] == "threads" else ""
    return _ACTION_SCOPES.get(action, "admin")  # anything unlisted: the strictest scope


_ACTION_SCOPES = {
    "approvals": "respond",
    "responses": "respond",
    "messages": "launch",
    "events": "launch",  # POST: an external event (GET events is `read`)
    "fork": "launch",
    "pause": "admin",
    "resume": "admin",
    "budget": "admin",
}


class AuthMiddleware(HTTPMiddleware):
    """Checks the bearer key of every /v1 request before the route (and its body) runs.

    Missing or unknown or revoked key: 401. Valid key without the route's scope: 403. The
    principal is put in `scope["state"]["principal"]` for handlers.
    """

    def __init__(self, app: ASGIApp, *, keys: KeyStore, enabled: bool) -> None:
        super().__init__(app)
        self.keys = keys
        self.enabled = enabled

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        needed = required_scope(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = LOCAL if not self.enabled else await self._authenticate(scope)
        except Exception:
            log.exception("API key lookup failed")
            await send_problem(
                send, 503, "Service Unavailable", "the key store did not answer; retry shortly"
            )
            return
        if principal is None:
            await send_problem(
                send,
                401,
                "Unauthorized",
                "send a valid API key: `Authorization: Bearer tl_...` "
                "(create one with `threadline keys create`)",
                headers=[(b"www-authenticate", b'Bearer realm="threadline"')],
            )
            return
        if not principal.can(needed):
            await send_problem(
                send,
                403,
                "Forbidden",
                f"key {principal.key_id} ({principal.name}) lacks the "
                f"{needed!r} scope this route needs",
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal | None:
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith("tl_") or len(token) > 200:
            return None
        # Looked up by digest: timing reveals nothing useful about a 256-bit secret's hash.
        key = await self.keys.find(hash_secret(token))
        if key is None or key.revoked_at is not None:
            return None
        return Principal(key.name, frozenset(key.scopes), key.id)
