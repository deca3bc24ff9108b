"""server/deps.py: what routes get by declaring `Svc`, `Caller`, `Via` and the path
parameters (a FastAPI app of such routes under a real uvicorn on loopback)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from server_support import serving
from threadline.server.asgi import HTTPMiddleware, Receive, Scope, Send
from threadline.server.auth import LOCAL, Principal
from threadline.server.deps import CHANNEL_HEADER, Caller, CallId, Svc, ThreadId, Via
from threadline.server.problems import PROBLEM_HANDLERS

ALICE = Principal("alice", frozenset({"respond"}), "key_1")


class _AsAlice(HTTPMiddleware):
    """Stands in for `AuthMiddleware`: puts a principal in the scope when asked to."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if dict(scope["headers"]).get(b"x-as") == b"alice":
            scope.setdefault("state", {})["principal"] = ALICE
        await self.app(scope, receive, send)


def _app(services: Any) -> Any:
    app = FastAPI(exception_handlers=dict(PROBLEM_HANDLERS))
    app.state.services = services

    @app.get("/threads/{thread_id}/calls/{call_id}")
    async def probe(
        thread_id: ThreadId, call_id: CallId, svc: Svc, who: Caller, via: Via
    ) -> dict[str, Any]:
        return {
            "thread": thread_id,
            "call": call_id,
            "svc": svc["name"],
            "who": who.name,
            "scopes": sorted(who.scopes),
            "via": via,
        }

    return _AsAlice(app)


def test_routes_get_the_services_the_caller_and_the_channel() -> None:
    with serving(_app({"name": "the services"})) as url:
        local = httpx.get(f"{url}/threads/th_1/calls/c1").json()
        alice = httpx.get(
            f"{url}/threads/th_1/calls/c1", headers={"x-as": "alice", CHANNEL_HEADER: "UI"}
        ).json()
    assert local == {
        "thread": "th_1",
        "call": "c1",
        "svc": "the services",
        "who": LOCAL.name,
        "scopes": sorted(LOCAL.scopes),
        "via": "api",
    }
    assert (alice["who"], alice["scopes"], alice["via"]) == ("alice", ["respond"], "ui")


def test_a_header_cannot_claim_a_verified_channel() -> None:
    with serving(_app({"name": "s"})) as url:
        vias = [
            httpx.get(f"{url}/threads/t/calls/c", headers={CHANNEL_HEADER: claimed}).json()["via"]
            for claimed in ("slack", "email", "cron", "uii", "")
        ]
    assert vias == ["api"] * 5


def test_path_parameters_are_bounded() -> None:
    with serving(_app({"name": "s"})) as url:
        long = httpx.get(f"{url}/threads/{'x' * 201}/calls/c1")
        fine = httpx.get(f"{url}/threads/{'x' * 200}/calls/c1")
    assert long.status_code == 422 and long.headers["content-type"] == "application/problem+json"
    assert fine.status_code == 200
