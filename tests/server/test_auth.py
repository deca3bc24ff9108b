"""auth.py: which scope each route needs, keys missing, wrong, revoked or out of scope,
a key store that fails, and a --no-auth server acting as the local user."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from server_support import LiveServer, assert_problem, deploy_model, signed, start_server
from threadline import Agent
from threadline.server import ServerConfig
from threadline.server.auth import required_scope


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/threads", "read"),
        ("GET", "/v1/threads/th_1/events/stream", "read"),
        ("POST", "/v1/threads", "launch"),
        ("POST", "/v1/threads/th_1/messages", "launch"),
        ("POST", "/v1/threads/th_1/fork", "launch"),
        ("POST", "/v1/threads/th_1/approvals/c4", "respond"),
        ("POST", "/v1/threads/th_1/approvals/pause", "respond"),  # a call id named "pause"
        ("POST", "/v1/threads/th_1/responses", "respond"),
        ("POST", "/v1/threads/th_1/pause", "admin"),
        ("POST", "/v1/threads/th_1/resume", "admin"),
        ("POST", "/v1/webhooks/inbound", None),
        ("GET", "/healthz", None),
        ("GET", "/ui/app.js", None),
    ],
)
def test_required_scope(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope


def test_keys_missing_wrong_revoked_and_out_of_scope(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    approve = f"/v1/threads/{thread_id}/approvals/{call_id}"
    verdict = {"approved": True}
    with httpx.Client(base_url=live.url) as c:
        assert_problem(c.get(f"/v1/threads/{thread_id}"), 401)
        r = c.post(approve, json=verdict)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer tl_" + secrets.token_urlsafe(32)}
        assert_problem(c.post(approve, json=verdict, headers=wrong), 401)
        assert_problem(c.post(approve, json=verdict, headers={"Authorization": "Basic x"}), 401)
    with live.client("reader") as c:
        assert c.get(f"/v1/threads/{thread_id}").status_code == 200
        assert_problem(c.post(approve, json=verdict), 403)
        assert_problem(c.post("/v1/threads", json={"agent": "deploybot", "message": "x"}), 403)
    with live.client("launcher") as c:
        assert_problem(c.post(approve, json=verdict), 403)
    with live.client("alice") as c:
        assert_problem(c.post(f"/v1/threads/{thread_id}/pause"), 403)  # admin only
    assert live.stored_events(thread_id) == before

    # A revoked key stops working at once.
    import asyncio

    from threadline.events import utcnow
    from threadline.stores import SQLiteStore, key_store

    async def revoke() -> None:
        async with SQLiteStore(live.db_path) as store:
            [key] = [k for k in await key_store(store).list() if k.name == "alice"]
            assert await key_store(store).revoke(key.id, at=utcnow())

    asyncio.run(revoke())
    with live.client("alice") as c:
        assert_problem(c.post(approve, json=verdict), 401)
    assert live.stored_events(thread_id) == before


def test_no_auth_server_acts_as_local(tmp_path: Path, deploybot: Agent) -> None:
    config = ServerConfig(auth=False, webhook_secret=None, poll_interval=0.2)
    live = start_server(tmp_path, [deploybot], deploy_model(), config=config)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            r = c.post(
                "/v1/threads", json={"agent": "deploybot", "message": "deploy", "wait": True}
            )
            thread = r.json()
            call_id = thread["pending_approvals"][0]["call_id"]
            r = c.post(f"/v1/threads/{thread['id']}/approvals/{call_id}", json={"approved": True})
            assert r.status_code == 200
            approval = next(
                json.loads(b)
                for _, b in live.stored_events(thread["id"])
                if json.loads(b)["kind"] == "approval"
            )
            assert approval["by"] == "local"
            # Without a secret, inbound webhooks are off rather than unauthenticated.
            raw, headers = signed(
                {"type": "response", "thread_id": thread["id"], "request_id": "x", "text": "y"}
            )
            r = c.post("/v1/webhooks/inbound", content=raw, headers=headers)
            assert r.status_code == 403 and r.json()["title"] == "Webhooks disabled"
    finally:
        live.stop()


async def test_key_store_failure_is_a_503_problem_not_a_crash() -> None:
    import httpx

    from threadline.server.auth import AuthMiddleware
    from threadline.stores.keys import MemoryKeyStore

    class Broken(MemoryKeyStore):
        async def find(self, secret_hash: str):  # type: ignore[override]
            raise OSError("disk on fire")

    async def app(scope, receive, send) -> None:  # never reached
        raise AssertionError("the route ran without a key check")

    guarded = AuthMiddleware(app, keys=Broken(), enabled=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://t"
    ) as c:
        r = await c.get("/v1/threads", headers={"Authorization": "Bearer tl_x"})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "disk on fire" not in r.text
