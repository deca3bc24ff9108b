"""routers/threads.py: launch, get, events and the live stream (also on an API-only server
whose threads a separate worker advances), pause, resume, fork, unknown ids."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import httpx

from server_support import SECRET, LiveServer, assert_problem, deploy_model, start_server
from threadline import Agent
from threadline.bounds import MAX_DEPTH
from threadline.events import Thread, utcnow
from threadline.models.base import Context, Message
from threadline.runtime import Runtime
from threadline.server import ServerConfig
from threadline.stores import SQLiteStore
from threadline.testing import FunctionModel, intent
from threadline.waits import WAIT_TOOLS


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
            # the input and deploybot's pre-fetched tag listing, not run: nothing advanced
            assert [json.loads(b)["kind"] for _, b in live.stored_events(thread_id)] == [
                "user_message",
                "tool_call",
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


def test_a_last_event_id_that_is_not_ascii_digits_is_400(live: LiveServer) -> None:
    thread = live.launch()
    path = f"/v1/threads/{thread['id']}/events/stream"
    with live.client("reader") as c:
        for value in ["\xb2".encode("latin-1"), "¹²".encode("latin-1"), b"4x", b"--1", b"-"]:
            problem = assert_problem(c.get(path, headers={"Last-Event-ID": value}), 400)
            assert "Last-Event-ID" in problem["detail"], value


def test_a_bad_thread_row_is_skipped_and_reported_by_the_listing(live: LiveServer) -> None:
    good, bad = live.launch()["id"], live.launch()["id"]
    with sqlite3.connect(live.db_path) as conn:
        conn.execute("UPDATE threads SET status = 'zombie' WHERE id = ?", (bad,))
    with live.client("reader") as c:
        r = c.get("/v1/threads")
    assert r.status_code == 200, r.text
    assert [t["id"] for t in r.json()["items"]] == [good]
    [skipped] = r.json()["skipped"]
    assert skipped["id"] == bad and "zombie" in skipped["reason"]


def test_a_damaged_thread_is_one_clear_409_everywhere(live: LiveServer) -> None:
    corrupt, holed = live.launch()["id"], live.launch()["id"]
    with sqlite3.connect(live.db_path) as conn:
        conn.execute("UPDATE events SET body = '{oops' WHERE thread_id = ? AND seq = 2", (corrupt,))
        conn.execute("DELETE FROM events WHERE thread_id = ? AND seq = 3", (holed,))
    sse = {"Accept": "text/event-stream"}
    with live.client("reader") as c:
        for thread_id, seq in [(corrupt, 2), (holed, 3)]:
            for path, headers in [
                (f"/v1/threads/{thread_id}", {}),
                (f"/v1/threads/{thread_id}/events", {}),
                (f"/v1/threads/{thread_id}/events", sse),
                (f"/v1/threads/{thread_id}/events/stream", {}),
            ]:
                problem = assert_problem(c.get(path, headers=headers), 409)
                assert problem["title"] == "Damaged thread", path
                assert (problem["thread_id"], problem["seq"]) == (thread_id, seq), path
                assert f"thread {thread_id} event {seq}" in problem["detail"], path
        # Before the damage the pages are whole; past it they are served.
        r = c.get(f"/v1/threads/{holed}/events", params={"after": 3})
        assert r.status_code == 200 and r.json()["events"][0]["seq"] == 4


def _nested(depth: int) -> str:
    return '{"k": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_metadata_that_could_not_load_is_refused_at_launch(live: LiveServer) -> None:
    head = '{"agent": "deploybot", "message": "deploy", "metadata": '
    json_headers = {"Content-Type": "application/json"}
    with live.client("admin") as c:
        for metadata, says in [
            (_nested(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
            (_nested(220), f"deeper than {MAX_DEPTH}"),
            (_nested(300), f"deeper than {MAX_DEPTH}"),
            ('{"a": ' + "[" * 70 + "1" + "]" * 70 + "}", f"deeper than {MAX_DEPTH}"),
            ('{"x": NaN}', "not a finite number"),
            ('{"x": -Infinity}', "not a finite number"),
            ('{"x": "a\\ud800b"}', "not valid Unicode"),
            ('{"\\udfff": 1}', "not valid Unicode"),
            ('{"x": "' + "y" * 70_000 + '"}', "larger than"),
        ]:
            r = c.post("/v1/threads", content=head + metadata + "}", headers=json_headers)
            problem = assert_problem(r, 422)
            assert says in problem["errors"][0]["msg"], says
        deep = "[" * 100_000 + "]" * 100_000
        r = c.post("/v1/threads", content=head + deep + "}", headers=json_headers)
        assert r.status_code in (400, 422), r.text
        assert c.get("/v1/threads").json()["items"] == []  # nothing launched
        # At the limit (the one of threadline.bounds, as for model output): accepted, and
        # it loads, lists and streams ever after.
        r = c.post("/v1/threads", content=head + _nested(MAX_DEPTH) + "}", headers=json_headers)
        assert r.status_code == 201, r.text
        thread_id = r.json()["id"]
        assert c.get(f"/v1/threads/{thread_id}").status_code == 200
        assert c.get(f"/v1/threads/{thread_id}/events").status_code == 200
        assert [t["id"] for t in c.get("/v1/threads").json()["items"]] == [thread_id]


def test_a_launch_cannot_link_itself_to_another_thread_as_its_sub_agent(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    # A sub-agent's end is delivered to its parent's call, and its spending charged to its
    # tree's budget (composition.py, budgets.py): those links are the runtime's, never a
    # client's (threadline.launch.LINK_KEYS).
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    with live.client("admin") as c:
        listed = c.get("/v1/threads").json()["items"]
        for forged in [
            {"parent_thread": thread_id, "parent_call": call_id},
            {"ancestors": [{"thread": thread_id, "agent": "deploybot", "call": call_id}]},
            {"team": "a", "parent_call": call_id},
        ]:
            body = {"agent": "deploybot", "message": "deploy", "metadata": forged}
            problem = assert_problem(c.post("/v1/threads", json=body), 422)
            message = problem["errors"][0]["msg"]
            assert "only the runtime sets them" in message, message
            assert all(repr(key) in message for key in forged if key != "team"), message
        assert c.get("/v1/threads").json()["items"] == listed  # nothing launched
        ok = {"agent": "deploybot", "message": "deploy", "metadata": {"parent": "ops"}}
        assert c.post("/v1/threads", json=ok).status_code == 201
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
            assert_problem(c.request(method, path, json=body), 404)
        # State checks: 409 with a clear message, nothing written.
        r = c.post(f"/v1/threads/{thread_id}/approvals/c999", json={"approved": True})
        assert "not awaiting approval" in assert_problem(r, 409)["detail"]
        r = c.post(f"/v1/threads/{thread_id}/responses", json={"request_id": "r", "text": "t"})
        assert "asked nothing" in assert_problem(r, 409)["detail"]
        assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"text": "hi"}), 409)
        assert_problem(c.post(f"/v1/threads/{thread_id}/resume"), 409)
        assert_problem(c.post(f"/v1/threads/{thread_id}/fork", json={"at": 999}), 409)
    assert live.stored_events(thread_id) == before


def test_serve_alone_wakes_a_durable_wait_when_it_is_due(tmp_path: Path) -> None:
    until = utcnow() + timedelta(seconds=1)

    def outline(agent: Agent, thread: Thread) -> Context:
        lines = [f"{e.tool}_result" if e.kind == "tool_result" else e.kind for e in thread.events]
        return Context(system="", messages=(Message("user", "\n".join(lines)),))

    def script(context: Context) -> object:
        if "sleep_until_result" not in context.as_text():
            return intent("sleep_until", until=until.isoformat(), reason="cool down")
        return intent("done_for_now", message="woke up")

    sleeper = Agent(
        "sleeper", tools=list(WAIT_TOOLS), model=FunctionModel(script), renderer=outline
    )
    live = start_server(tmp_path, [sleeper], None, keys={"admin": ["admin"]})
    try:
        with live.client("admin") as c:
            r = c.post(
                "/v1/threads",
                json={"agent": "sleeper", "message": "nap", "wait": True, "wait_timeout": 20},
            )
        assert r.status_code == 201 and r.json()["status"] == "waiting", r.text
        # No worker, no request: the server's own periodic pass wakes it once due.
        done = live.wait_status(r.json()["id"], {"done"}, timeout=30)
        assert done["result"] == "woke up"
        kinds = [json.loads(b)["kind"] for _, b in live.stored_events(r.json()["id"])]
        assert kinds[kinds.index("waiting") + 1] == "wait_timed_out"
    finally:
        live.stop()
