"""Signed webhooks both ways: routers/webhooks.py (inbound approvals and answers: bad,
stale, replayed and invalid deliveries refused, writing nothing) and webhooks.py (signing,
the notifier posting pending approvals to a receiver that can answer)."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from server_support import (
    SECRET,
    LiveServer,
    approval_body,
    assert_problem,
    deploy_model,
    signed,
    start_server,
)
from threadline import Agent
from threadline.events import ExternalEvent, HumanRequest, Thread, UserMessage, utcnow
from threadline.models.base import Context, Message
from threadline.server import ServerConfig
from threadline.server.webhooks import (
    Notifier,
    WebhookRejected,
    notification,
    sign,
    signed_headers,
    verify,
)
from threadline.testing import FunctionModel, intent
from threadline.waits import WAIT_TOOLS


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


def test_bad_webhooks_are_refused_and_write_nothing(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    body = approval_body(thread_id, call_id)
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
        # Digits to str.isdigit, not to int(): once a 500.
        "superscript timestamp": (raw, {**good, "X-Threadline-Timestamp": "¹²".encode("latin-1")}),
        "arabic-indic timestamp": (raw, {**good, "X-Threadline-Timestamp": "١٧٠٠٠٠٠٠٠٠".encode()}),
    }
    with live.client(None) as c:
        for name, (content, headers) in cases.items():
            r = c.post("/v1/webhooks/inbound", content=content, headers=headers)
            problem = assert_problem(r, 401)
            assert problem["title"] == "Webhook rejected", name
            assert live.stored_events(thread_id) == before, name
        assert (
            "stale" in c.post("/v1/webhooks/inbound", content=raw, headers=stale).json()["detail"]
        )
    with live.client("admin") as c:
        assert c.get(f"/v1/threads/{thread_id}").json()["status"] == "awaiting_approval"


def test_replayed_webhook_is_refused(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    raw, headers = signed(approval_body(thread_id, call_id))
    with live.client(None) as c:
        assert c.post("/v1/webhooks/inbound", content=raw, headers=headers).status_code == 200
        live.wait_status(thread_id, {"done"})
        after_first = live.stored_events(thread_id)
        assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 409)
        assert live.stored_events(thread_id) == after_first


def test_same_delivery_id_resent_with_a_fresh_signature_counts_once(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    body = approval_body(thread_id, call_id, approved=False, comment="no", delivery_id="slack-42")
    raw, headers = signed(body, now=time.time() - 5)
    with live.client(None) as c:
        assert c.post("/v1/webhooks/inbound", content=raw, headers=headers).status_code == 200
        live.wait_status(thread_id, {"done"})
        after_first = live.stored_events(thread_id)
        raw2, headers2 = signed(body)  # new timestamp, new signature, same delivery
        problem = assert_problem(
            c.post("/v1/webhooks/inbound", content=raw2, headers=headers2), 409
        )
        assert problem["title"] == "Replayed delivery"
    assert live.stored_events(thread_id) == after_first
    verdicts = [json.loads(b) for _, b in after_first if json.loads(b)["kind"] == "approval"]
    assert len(verdicts) == 1


def test_a_refused_delivery_does_not_burn_its_delivery_id(live: LiveServer) -> None:
    thread = live.launch("guarded")  # only alice may approve
    thread_id, call_id = thread["id"], thread["pending_approvals"][0]["call_id"]
    before = live.stored_events(thread_id)
    wrong_responder = approval_body(thread_id, call_id, by="mallory", delivery_id="slack-7")
    wrong_call = approval_body(thread_id, "c999", delivery_id="slack-7")
    with live.client(None) as c:
        for body, status in [(wrong_responder, 403), (wrong_call, 409)]:
            raw, headers = signed(body)
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), status)
            assert live.stored_events(thread_id) == before
        # The right approver's retry with the same delivery id is applied, once.
        raw, headers = signed(approval_body(thread_id, call_id, delivery_id="slack-7"))
        r = c.post("/v1/webhooks/inbound", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        live.wait_status(thread_id, {"done"})
        raw, headers = signed(approval_body(thread_id, call_id, delivery_id="slack-7"))
        problem = assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 409)
        assert problem["title"] == "Replayed delivery"


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
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 422)
        raw = b"{not json"
        from threadline.server.webhooks import signed_headers

        assert_problem(
            c.post(
                "/v1/webhooks/inbound",
                content=raw,
                headers=signed_headers("test-webhook-secret", raw),
            ),
            422,
        )
    assert live.stored_events(thread_id) == before


class Receiver:
    """A webhook receiver on loopback: records deliveries, answers with scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        statuses_iter = iter(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = next(statuses_iter, 200)
                outer.deliveries.put(({k: v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def next(self) -> tuple[dict[str, str], bytes]:
        return self.deliveries.get(timeout=15)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([503])  # the first attempt fails: the notifier must retry
    yield r
    r.http.shutdown()


def test_pending_approval_notifies_a_signed_webhook_that_can_answer(
    tmp_path: Path, deploybot: Agent, receiver: Receiver
) -> None:
    config = ServerConfig(
        webhook_secret=SECRET,
        notify_url=receiver.url,
        public_url="https://threadline.example",
        poll_interval=0.2,
    )
    live = start_server(
        tmp_path, [deploybot], deploy_model(), config=config, keys={"admin": ["admin"]}
    )
    try:
        thread = live.launch()
        _, first = receiver.next()  # answered 503
        headers, body = receiver.next()  # the retry
        assert body == first
        verify(SECRET, headers, body)  # raises if the signature is wrong
        payload = json.loads(body)
        call = thread["pending_approvals"][0]
        assert payload["type"] == "approval_requested"
        assert payload["thread_id"] == thread["id"]
        assert payload["call"] == {
            "call_id": call["call_id"],
            "tool": "deploy_backend",
            "arguments": {"tag": "v1.5.0", "environment": "production"},
            "approvers": [],
        }
        assert payload["respond"]["webhook"] == "https://threadline.example/v1/webhooks/inbound"
        assert payload["respond"]["api"].endswith(f"/approvals/{call['call_id']}")

        # Whoever received it answers through the signed inbound webhook.
        raw, headers = signed(
            {
                "type": "approval",
                "thread_id": payload["thread_id"],
                "call_id": payload["call"]["call_id"],
                "approved": True,
                "by": "oncall",
                "delivery_id": payload["delivery_id"],
            }
        )
        r = httpx.post(live.url + "/v1/webhooks/inbound", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        assert live.wait_status(thread["id"], {"done"})["status"] == "done"
        assert receiver.deliveries.empty()  # nothing else was pending
    finally:
        live.stop()


def test_signature_round_trip_and_failures() -> None:
    body = b'{"a": 1}'
    headers = signed_headers("s3cret", body, now=1_700_000_000)
    assert headers["X-Threadline-Signature"] == sign("s3cret", 1_700_000_000, body)
    assert verify("s3cret", headers, body, now=1_700_000_100) == headers["X-Threadline-Signature"]
    lower = {k.lower(): v for k, v in headers.items()}
    verify("s3cret", lower, body, now=1_700_000_000)  # header names are case-insensitive
    for secret, hdrs, raw, now, reason in [
        ("other", headers, body, 1_700_000_000, "does not match"),
        ("s3cret", headers, body + b" ", 1_700_000_000, "does not match"),
        ("s3cret", headers, body, 1_700_000_301, "stale"),
        ("s3cret", {}, body, 1_700_000_000, "unsigned"),
        ("s3cret", {**headers, "X-Threadline-Timestamp": "¹²"}, body, 12, "unix seconds"),
        ("s3cret", {**headers, "X-Threadline-Timestamp": " 12"}, body, 12, "unix seconds"),
    ]:
        with pytest.raises(WebhookRejected, match=reason):
            verify(secret, hdrs, raw, now=now)


def _outline(agent: Agent, thread: Thread) -> Context:
    """One line per event (external events as `<name amount>`): the script reads it."""
    lines = []
    for e in thread.events:
        if isinstance(e, ExternalEvent):
            lines.append(f"<{e.name} {e.payload.get('amount')}>")
        else:
            lines.append(e.kind)
    return Context(system="", messages=(Message("user", "\n".join(lines)),))


def _payee_script(context: Context) -> object:
    """Wait for a payment, then report its amount."""
    paid = re.search(r"<payment (\d+)>", context.as_text())
    if paid:
        return intent("done_for_now", message=f"paid {paid.group(1)}")
    return intent("wait_for_event", event="payment", timeout_seconds=3600)


PAYEE = Agent(
    "payee", tools=list(WAIT_TOOLS), model=FunctionModel(_payee_script), renderer=_outline
)


def _waiting_payee(live: LiveServer) -> str:
    """Launch the payee and return its thread id once it waits for the payment."""
    with live.client("admin") as c:
        r = c.post(
            "/v1/threads",
            json={"agent": "payee", "message": "wait", "wait": True, "wait_timeout": 20},
        )
    assert r.status_code == 201 and r.json()["status"] == "waiting", r.text
    return str(r.json()["id"])


def test_a_signed_event_webhook_ends_a_wait_for_event(tmp_path: Path) -> None:
    config = ServerConfig(webhook_secret=SECRET, poll_interval=0.1)
    live = start_server(tmp_path, [PAYEE], None, config=config, keys={"admin": ["admin"]})
    try:
        thread_id = _waiting_payee(live)
        event = {"type": "event", "thread_id": thread_id, "delivery_id": "pay-1"}
        with live.client(None) as c:
            raw, headers = signed({**event, "payload": {"amount": 5}})  # no name
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 422)
            raw, headers = signed({**event, "name": "payment", "payload": {"amount": 5}})
            forged = {**headers, "X-Threadline-Signature": "sha256=" + "0" * 64}
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=forged), 401)
            r = c.post("/v1/webhooks/inbound", content=raw, headers=headers)
            assert r.status_code == 200, r.text
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 409)
        done = live.wait_status(thread_id, {"done"})
        assert done["result"] == "paid 5"
        [external] = [
            json.loads(b) for _, b in live.stored_events(thread_id) if "external_event" in b
        ]
        assert external["name"] == "payment" and external["payload"] == {"amount": 5}
        assert external["source"] == "webhook"
    finally:
        live.stop()


def test_an_external_event_by_api_key_ends_a_wait_for_event(tmp_path: Path) -> None:
    """`POST /v1/threads/{id}/events` (the `launch` scope): the API route for the external
    events that end a `wait_for_event`, beside the signed webhook."""
    keys = {"admin": ["admin"], "launcher": ["launch"], "reader": ["read"]}
    live = start_server(tmp_path, [PAYEE], None, config=ServerConfig(poll_interval=0.1), keys=keys)
    try:
        thread_id = _waiting_payee(live)
        path = f"/v1/threads/{thread_id}/events"
        body = {"name": "payment", "payload": {"amount": 5}}
        with live.client("reader") as c:
            assert_problem(c.post(path, json=body), 403)
            assert c.get(path).status_code == 200  # reading events stays `read`
        with live.client("launcher") as c:
            assert_problem(c.post(path, json={"payload": {"amount": 5}}), 422)  # no name
            infinite = '{"name": "payment", "payload": {"x": Infinity}}'
            headers = {"Content-Type": "application/json"}
            assert_problem(c.post(path, content=infinite, headers=headers), 422)
            assert_problem(c.post("/v1/threads/th_nope/events", json=body), 404)
            r = c.post(path, json=body)
            assert r.status_code == 200, r.text
        done = live.wait_status(thread_id, {"done"})
        assert done["result"] == "paid 5"
        [external] = [
            json.loads(b) for _, b in live.stored_events(thread_id) if "external_event" in b
        ]
        assert external["payload"] == {"amount": 5} and external["source"] == "api:launcher"
    finally:
        live.stop()


def test_a_question_notifies_where_to_answer_and_the_notifier_keeps_its_secret() -> None:
    at = utcnow()
    asked = HumanRequest(seq=1, at=at, request_id="r1", question="Which env?", responders=("ann",))
    thread = Thread("th_q", "deploybot", [UserMessage(seq=0, at=at, text="deploy"), asked])
    payload = notification(thread, asked, "https://threadline.example/")
    assert payload == {
        "delivery_id": "th_q:1",
        "thread_id": "th_q",
        "agent": "deploybot",
        "seq": 1,
        "at": at.isoformat(),
        "type": "human_request",
        "request": {"request_id": "r1", "question": "Which env?", "responders": ["ann"]},
        "respond": {
            "webhook": "https://threadline.example/v1/webhooks/inbound",
            "ui": "https://threadline.example/ui/#thread=th_q",
            "api": "https://threadline.example/v1/threads/th_q/responses",
        },
    }
    assert list(payload)[5:] == ["type", "request", "respond"]  # as sent before
    assert notification(thread, thread.events[0], "https://threadline.example") is None
    notifier = Notifier("https://hooks.example", SECRET, "https://threadline.example", attempts=1)
    assert SECRET not in repr(notifier) and (notifier.delivered, notifier.failed) == (0, 0)
    with pytest.raises(TypeError):
        Notifier("https://hooks.example", SECRET, "https://x", 1)  # type: ignore[misc]
