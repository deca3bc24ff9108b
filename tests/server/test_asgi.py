"""server/asgi.py: problem documents sent without a framework, and `HTTPMiddleware`, under
a real uvicorn on loopback (lifespan on, so a middleware that swallowed the lifespan
scope would stop the server from starting)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from server_support import serving
from threadline.server.asgi import HTTPMiddleware, Receive, Scope, Send, send_problem


class _Inner:
    """A bare ASGI app: answers `ok` and records the lifespan messages it handled."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class _Gate(HTTPMiddleware):
    """Refuses /closed with a problem document; stamps everything else."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/closed":
            await send_problem(send, 423, "Locked", "closed today", headers=[(b"x-why", b"rule")])
            return

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-gate", b"passed")]
            await send(message)

        await self.app(scope, receive, stamped)


def test_http_requests_reach_http_and_lifespan_passes_through() -> None:
    inner = _Inner()
    with serving(_Gate(inner)) as url:
        r = httpx.get(url + "/open")
        refused = httpx.post(url + "/closed", content=b"{}")
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["x-gate"] == "passed"
    assert refused.status_code == 423
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-why"] == "rule"
    assert int(refused.headers["content-length"]) == len(refused.content)
    assert refused.json() == {
        "type": "about:blank",
        "title": "Locked",
        "status": 423,
        "detail": "closed today",
    }
    # The lifespan scope went to the inner app untouched, both ways.
    assert inner.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def test_a_middleware_without_http_refuses_to_guess() -> None:
    async def never(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not reached")

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        raise AssertionError("not reached")

    with pytest.raises(NotImplementedError):
        asyncio.run(HTTPMiddleware(never)({"type": "http", "path": "/"}, receive, send))
