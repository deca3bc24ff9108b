"""Outbound notifications, API-only servers (--no-worker), live streams and shutdown."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from server_support import SECRET, LiveServer, deploy_model, signed, start_server
from threadline import Agent
from threadline.runtime import Runtime
from threadline.server import ServerConfig
from threadline.server.webhooks import verify
from threadline.stores import SQLiteStore


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


def test_api_only_server_appends_and_streams_what_a_worker_does(
    tmp_path: Path, deploybot: Agent
) -> None:
    config = ServerConfig(worker=False, webhook_secret=SECRET, poll_interval=0.1)
    live = start_server(
        tmp_path, [deploybot], deploy_model(), config=config, keys={"admin": ["admin"]}
    )
    try:
        with live.client("admin") as c:
            r = c.post(
                "/v1/threads",
                json={"agent": "deploybot", "message": "deploy", "wait": True, "wait_timeout": 0.5},
            )
            assert r.status_code == 201
            thread_id = r.json()["id"]
            assert r.json()["status"] == "running"
            assert [json.loads(b)["kind"] for _, b in live.stored_events(thread_id)] == [
                "user_message"
            ]

            seen: list[str] = []

            def listen() -> None:
                with (
                    httpx.Client(base_url=live.url, headers=c.headers, timeout=30) as s,
                    s.stream(
                        "GET",
                        f"/v1/threads/{thread_id}/events",
                        headers={"Accept": "text/event-stream"},
                    ) as resp,
                ):
                    assert resp.headers["content-type"].startswith("text/event-stream")
                    for line in resp.iter_lines():
                        if line.startswith("event: "):
                            seen.append(line[7:])
                            if line == "event: approval_requested":
                                return

            listener = threading.Thread(target=listen)
            listener.start()

            # A worker in another "process" (its own runtime and store) advances the thread.
            async def work() -> str:
                async with SQLiteStore(live.db_path) as store:
                    worker = Runtime(store, agents=[deploybot], model=deploy_model())
                    return (await worker.advance(thread_id)).status.value

            assert asyncio.run(work()) == "awaiting_approval"
            listener.join(timeout=20)
            assert seen[0] == "user_message" and seen[-1] == "approval_requested"

            call_id = c.get(f"/v1/threads/{thread_id}").json()["pending_approvals"][0]["call_id"]
            r = c.post(f"/v1/threads/{thread_id}/approvals/{call_id}", json={"approved": True})
            assert r.status_code == 200 and r.json()["status"] == "running"
        # The API-only server appended the approval and ran nothing itself.
        kinds = [json.loads(b)["kind"] for _, b in live.stored_events(thread_id)]
        assert kinds[-1] == "approval" and "tool_started" not in kinds
    finally:
        live.stop()


def test_shutdown_refuses_new_work(live: LiveServer) -> None:
    thread = live.launch()
    live.services.lifecycle.begin_shutdown()
    with live.client("admin") as c:
        r = c.post("/v1/threads", json={"agent": "deploybot", "message": "one more"})
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
        assert c.get(f"/v1/threads/{thread['id']}").status_code == 200  # reads still work


def test_stream_resumes_after_last_event_id(live: LiveServer) -> None:
    thread = live.launch()
    with (
        live.client("reader") as c,
        c.stream(
            "GET", f"/v1/threads/{thread['id']}/events/stream", headers={"Last-Event-ID": "4"}
        ) as resp,
    ):
        ids = []
        for line in resp.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if len(ids) == thread["next_seq"] - 5:
                break
    assert ids == list(range(5, thread["next_seq"]))


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
