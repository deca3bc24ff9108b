"""Every bad request gets the right 4xx problem document and writes nothing."""

from __future__ import annotations

import json
import secrets
import threading
import time

import httpx
import pytest

from server_support import LiveServer, signed


def _assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text
    return body


@pytest.fixture
def pending(live: LiveServer) -> tuple[str, str]:
    thread = live.launch()
    assert thread["status"] == "awaiting_approval"
    return thread["id"], thread["pending_approvals"][0]["call_id"]


def _approval(thread_id: str, call_id: str, **extra: object) -> dict:
    return {
        "type": "approval",
        "thread_id": thread_id,
        "call_id": call_id,
        "approved": True,
        "by": "alice",
        **extra,
    }


def test_bad_webhooks_are_refused_and_write_nothing(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    body = _approval(thread_id, call_id)
    raw, good = signed(body)
    forged_raw, forged = signed(body, secret="not-the-secret")
    _, stale = signed(body, now=time.time() - 301)
    # 302, not 301: the header holds whole seconds, and flooring t + 301 can land
    # under the 300 s limit by the time the server checks it.
    _, future = signed(body, now=time.time() + 302)
    tampered = json.dumps({**body, "approved": False}).encode()
    cases = {
        "unsigned": (raw, {"Content-Type": "application/json"}),
        "forged": (forged_raw, forged),
        "tampered body": (tampered, good),
        "stale": (raw, stale),
        "from the future": (raw, future),
        "garbage timestamp": (raw, {**good, "X-Threadline-Timestamp": "yesterday"}),
    }
    with live.client(None) as c:
        for name, (content, headers) in cases.items():
            r = c.post("/v1/webhooks/inbound", content=content, headers=headers)
            problem = _assert_problem(r, 401)
            assert problem["title"] == "Webhook rejected", name
            assert live.stored_events(thread_id) == before, name
        assert (
            "stale" in c.post("/v1/webhooks/inbound", content=raw, headers=stale).json()["detail"]
        )
    with live.client("admin") as c:
        assert c.get(f"/v1/threads/{thread_id}").json()["status"] == "awaiting_approval"


def test_replayed_webhook_is_refused(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    raw, headers = signed(_approval(thread_id, call_id))
    with live.client(None) as c:
        assert c.post("/v1/webhooks/inbound", content=raw, headers=headers).status_code == 200
        live.wait_status(thread_id, {"done"})
        after_first = live.stored_events(thread_id)
        _assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 409)
        assert live.stored_events(thread_id) == after_first


def test_same_delivery_id_resent_with_a_fresh_signature_counts_once(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    body = _approval(thread_id, call_id, approved=False, comment="no", delivery_id="slack-42")
    raw, headers = signed(body, now=time.time() - 5)
    with live.client(None) as c:
        assert c.post("/v1/webhooks/inbound", content=raw, headers=headers).status_code == 200
        live.wait_status(thread_id, {"done"})
        after_first = live.stored_events(thread_id)
        raw2, headers2 = signed(body)  # new timestamp, new signature, same delivery
        problem = _assert_problem(
            c.post("/v1/webhooks/inbound", content=raw2, headers=headers2), 409
        )
        assert problem["title"] == "Replayed delivery"
    assert live.stored_events(thread_id) == after_first
    verdicts = [json.loads(b) for _, b in after_first if json.loads(b)["kind"] == "approval"]
    assert len(verdicts) == 1


def test_invalid_webhook_payloads_are_422_and_write_nothing(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    with live.client(None) as c:
        for body in (
            {"type": "approval", "thread_id": thread_id},  # no call_id / verdict
            {"type": "launch", "thread_id": thread_id},
            {"type": "response", "thread_id": thread_id, "request_id": "x"},
        ):
            raw, headers = signed(body)
            _assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 422)
        raw = b"{not json"
        from threadline.server.webhooks import signed_headers

        _assert_problem(
            c.post(
                "/v1/webhooks/inbound",
                content=raw,
                headers=signed_headers("test-webhook-secret", raw),
            ),
            422,
        )
    assert live.stored_events(thread_id) == before


def test_keys_missing_wrong_revoked_and_out_of_scope(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    approve = f"/v1/threads/{thread_id}/approvals/{call_id}"
    verdict = {"approved": True}
    with httpx.Client(base_url=live.url) as c:
        _assert_problem(c.get(f"/v1/threads/{thread_id}"), 401)
        r = c.post(approve, json=verdict)
        _assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer tl_" + secrets.token_urlsafe(32)}
        _assert_problem(c.post(approve, json=verdict, headers=wrong), 401)
        _assert_problem(c.post(approve, json=verdict, headers={"Authorization": "Basic x"}), 401)
    with live.client("reader") as c:
        assert c.get(f"/v1/threads/{thread_id}").status_code == 200
        _assert_problem(c.post(approve, json=verdict), 403)
        _assert_problem(c.post("/v1/threads", json={"agent": "deploybot", "message": "x"}), 403)
    with live.client("launcher") as c:
        _assert_problem(c.post(approve, json=verdict), 403)
    with live.client("alice") as c:
        _assert_problem(c.post(f"/v1/threads/{thread_id}/pause"), 403)  # admin only
    assert live.stored_events(thread_id) == before

    # A revoked key stops working at once.
    import asyncio

    from threadline.events import utcnow
    from threadline.stores import SQLiteStore

    async def revoke() -> None:
        async with SQLiteStore(live.db_path) as store:
            [key] = [k for k in await store.list_api_keys() if k.name == "alice"]
            assert await store.revoke_api_key(key.id, at=utcnow())

    asyncio.run(revoke())
    with live.client("alice") as c:
        _assert_problem(c.post(approve, json=verdict), 401)
    assert live.stored_events(thread_id) == before


def test_oversized_malformed_and_invalid_bodies(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    approve = f"/v1/threads/{thread_id}/approvals/{call_id}"
    with live.client("admin") as c:
        huge = {"approved": False, "comment": "x" * (1 << 20)}
        _assert_problem(c.post(approve, json=huge), 413)

        def chunks():  # no Content-Length: the limit still applies
            for _ in range(40):
                yield b"x" * 65536

        _assert_problem(
            c.post(approve, content=chunks(), headers={"Content-Type": "application/json"}), 413
        )
        headers = {"Content-Type": "application/json"}
        assert (
            _assert_problem(c.post(approve, content=b'{"approved": tru', headers=headers), 400)[
                "title"
            ]
            == "Malformed JSON"
        )
        _assert_problem(c.post(approve, content=b"[1, 2]", headers=headers), 422)
        problem = _assert_problem(c.post(approve, json={"approved": "maybe"}), 422)
        assert problem["errors"][0]["loc"][-1] == "approved"
        _assert_problem(c.post(approve, json={"approved": True, "sneaky": 1}), 422)
        _assert_problem(
            c.post(approve, json={"approved": True, "edited_arguments": {"tag": 5}}), 409
        )
        _assert_problem(c.get("/v1/threads", params={"status": "napping"}), 422)
        _assert_problem(c.get("/v1/threads", params={"cursor": "__4"}), 400)  # not UTF-8
        _assert_problem(c.post("/v1/threads", json={"agent": "nobody", "message": "hi"}), 422)
    assert live.stored_events(thread_id) == before


def test_unknown_ids_and_actions_that_do_not_fit(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    with live.client("admin") as c:
        for method, path, body in [
            ("GET", "/v1/threads/th_missing", None),
            ("GET", "/v1/threads/th_missing/events", None),
            ("GET", "/v1/threads/th_missing/events/stream", None),
            ("POST", f"/v1/threads/th_missing/approvals/{call_id}", {"approved": True}),
            ("POST", "/v1/threads/th_missing/responses", {"request_id": "r", "text": "t"}),
            ("POST", "/v1/threads/th_missing/messages", {"text": "t"}),
            ("POST", "/v1/threads/th_missing/pause", None),
            ("POST", "/v1/threads/th_missing/resume", None),
            ("POST", "/v1/threads/th_missing/fork", {"at": 0}),
        ]:
            _assert_problem(c.request(method, path, json=body), 404)
        # State checks: 409 with a clear message, nothing written.
        r = c.post(f"/v1/threads/{thread_id}/approvals/c999", json={"approved": True})
        assert "not awaiting approval" in _assert_problem(r, 409)["detail"]
        r = c.post(f"/v1/threads/{thread_id}/responses", json={"request_id": "r", "text": "t"})
        assert "asked nothing" in _assert_problem(r, 409)["detail"]
        _assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"text": "hi"}), 409)
        _assert_problem(c.post(f"/v1/threads/{thread_id}/resume"), 409)
        _assert_problem(c.post(f"/v1/threads/{thread_id}/fork", json={"at": 999}), 409)
    assert live.stored_events(thread_id) == before


def test_second_approval_is_409(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    with live.client("alice") as c:
        assert (
            c.post(
                f"/v1/threads/{thread_id}/approvals/{call_id}", json={"approved": True}
            ).status_code
            == 200
        )
        live.wait_status(thread_id, {"done"})
        after = live.stored_events(thread_id)
        _assert_problem(
            c.post(f"/v1/threads/{thread_id}/approvals/{call_id}", json={"approved": False}), 409
        )
    assert live.stored_events(thread_id) == after


def test_racing_approvals_exactly_one_wins(live: LiveServer) -> None:
    for _ in range(3):
        thread = live.launch()
        thread_id, call_id = thread["id"], thread["pending_approvals"][0]["call_id"]
        codes: list[int] = []
        barrier = threading.Barrier(4)

        def answer(approved: bool) -> None:
            with live.client("alice") as c:
                barrier.wait()
                r = c.post(
                    f"/v1/threads/{thread_id}/approvals/{call_id}",
                    json={"approved": approved, "comment": "race"},
                )
                codes.append(r.status_code)

        workers = [threading.Thread(target=answer, args=(i % 2 == 0,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(codes) == [200, 409, 409, 409]
        live.wait_status(thread_id, {"done"})
        verdicts = [
            b for _, b in live.stored_events(thread_id) if json.loads(b)["kind"] == "approval"
        ]
        assert len(verdicts) == 1


def test_named_approvers_only(live: LiveServer) -> None:
    thread = live.launch("guarded")
    thread_id = thread["id"]
    [pending] = thread["pending_approvals"]
    assert pending["approvers"] == ["alice"]
    before = live.stored_events(thread_id)
    path = f"/v1/threads/{thread_id}/approvals/{pending['call_id']}"
    with live.client("bob") as c:
        assert (
            "bob may not answer"
            in _assert_problem(c.post(path, json={"approved": True}), 403)["detail"]
        )
    with live.client(None) as c:
        for by in ("mallory", None):
            raw, headers = signed(
                {
                    "type": "approval",
                    "thread_id": thread_id,
                    "call_id": pending["call_id"],
                    "approved": True,
                    "by": by,
                }
            )
            _assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 403)
    assert live.stored_events(thread_id) == before
    with live.client("alice") as c:
        assert c.post(path, json={"approved": True}).status_code == 200
    assert live.wait_status(thread_id, {"done"})["status"] == "done"
