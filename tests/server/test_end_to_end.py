"""Launch deploybot over HTTP, approve or reject it with a signed webhook, see it finish."""

from __future__ import annotations

import json

from server_support import LiveServer, signed


def _launch(live: LiveServer, message: str = "deploy the backend to production") -> dict:
    with live.client("admin") as c:
        r = c.post(
            "/v1/threads",
            json={"agent": "deploybot", "message": message, "wait": True, "wait_timeout": 20},
        )
    assert r.status_code == 201, r.text
    return r.json()


def test_launch_pauses_for_approval_and_a_signed_webhook_approves(live: LiveServer) -> None:
    from threadline.loader import load_agent  # noqa: F401  (deploybot module already loaded)

    thread = _launch(live)
    assert thread["status"] == "awaiting_approval"
    [pending] = thread["pending_approvals"]
    assert pending["tool"] == "deploy_backend"
    assert pending["arguments"] == {"tag": "v1.5.0", "environment": "production"}

    raw, headers = signed(
        {
            "type": "approval",
            "thread_id": thread["id"],
            "call_id": pending["call_id"],
            "approved": True,
            "by": "alice",
            "delivery_id": "d-1",
        }
    )
    with live.client(None) as c:
        r = c.post("/v1/webhooks/inbound", content=raw, headers=headers)
    assert r.status_code == 200, r.text

    done = live.wait_status(thread["id"], {"done"})
    assert done["status"] == "done"
    assert done["result"] == "Deployed v1.5.0 to production."
    kinds = [json.loads(body)["kind"] for _, body in live.stored_events(thread["id"])]
    assert kinds[-5:] == [
        "approval",
        "tool_started",
        "tool_result",
        "model_call",
        "tool_call",
    ] or kinds[-6:-1] == ["approval", "tool_started", "tool_result", "model_call", "tool_call"]
    approval = next(
        json.loads(b)
        for _, b in live.stored_events(thread["id"])
        if json.loads(b)["kind"] == "approval"
    )
    assert approval["approved"] is True and approval["by"] == "alice"
    assert approval["channel"] == "webhook"
    result = next(
        json.loads(b)
        for _, b in live.stored_events(thread["id"])
        if json.loads(b)["kind"] == "tool_result" and json.loads(b)["tool"] == "deploy_backend"
    )
    assert result["result"] == "backend v1.5.0 deployed to production"


def test_rejection_by_webhook_reaches_the_model(live: LiveServer) -> None:
    thread = _launch(live)
    [pending] = thread["pending_approvals"]
    raw, headers = signed(
        {
            "type": "approval",
            "thread_id": thread["id"],
            "call_id": pending["call_id"],
            "approved": False,
            "by": "alice",
            "comment": "change freeze until Monday",
        }
    )
    with live.client(None) as c:
        r = c.post("/v1/webhooks/inbound", content=raw, headers=headers)
    assert r.status_code == 200, r.text

    done = live.wait_status(thread["id"], {"done"})
    assert done["status"] == "done"
    assert done["result"] == "Deploy cancelled: change freeze until Monday"
    events = [json.loads(b) for _, b in live.stored_events(thread["id"])]
    assert not any(e["kind"] == "tool_result" and e["tool"] == "deploy_backend" for e in events)
    # The model's next context carried the rejection and its comment.
    last_context = live.runtime.model.contexts[-1]
    assert "change freeze until Monday" in last_context.messages[-1].content
    assert "<rejected" in last_context.messages[-1].content
