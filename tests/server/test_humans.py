"""routers/humans.py: approvals (one winner among racing ones, named approvers only), the inbox."""

from __future__ import annotations

import json
import sqlite3
import threading

from server_support import LiveServer, approval_body, assert_problem, signed


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
        assert_problem(
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
            in assert_problem(c.post(path, json={"approved": True}), 403)["detail"]
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
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 403)
    assert live.stored_events(thread_id) == before
    with live.client("alice") as c:
        assert c.post(path, json={"approved": True}).status_code == 200
    assert live.wait_status(thread_id, {"done"})["status"] == "done"


def test_named_responders_only(live: LiveServer) -> None:
    """A question names who may answer it (`Agent.responders`), enforced like approvers:
    anyone else gets 403 by API, message or webhook, and nothing is written."""
    thread = live.launch("gated_asker", "deploy something")
    thread_id = thread["id"]
    question = thread["question"]
    assert question["responders"] == ["alice"]
    before = live.stored_events(thread_id)
    answer = {"request_id": question["request_id"], "text": "staging"}
    with live.client("bob") as c:
        problem = assert_problem(c.post(f"/v1/threads/{thread_id}/responses", json=answer), 403)
        assert "bob may not answer this question" in problem["detail"]
    with live.client("admin") as c:  # a message would answer the question: same rule
        assert_problem(c.post(f"/v1/threads/{thread_id}/messages", json={"text": "prod"}), 403)
    with live.client(None) as c:
        for by in ("mallory", None):
            raw, headers = signed({"type": "response", "thread_id": thread_id, **answer, "by": by})
            assert_problem(c.post("/v1/webhooks/inbound", content=raw, headers=headers), 403)
    assert live.stored_events(thread_id) == before
    with live.client("alice") as c:
        assert c.post(f"/v1/threads/{thread_id}/responses", json=answer).status_code == 200
    done = live.wait_status(thread_id, {"done"})
    assert done["result"] == "Thanks: staging"


def test_the_inbox_lists_threads_waiting_for_a_person(live: LiveServer) -> None:
    approval = live.launch()
    question = live.launch("asker", "deploy something")
    finished = live.launch()
    with live.client("admin") as c:
        call_id = finished["pending_approvals"][0]["call_id"]
        c.post(f"/v1/threads/{finished['id']}/approvals/{call_id}", json={"approved": True})
    live.wait_status(finished["id"], {"done"})
    with live.client("reader") as c:
        r = c.get("/v1/inbox")
    assert r.status_code == 200, r.text
    items = {t["id"]: t for t in r.json()["items"]}
    assert set(items) == {approval["id"], question["id"]}
    assert items[approval["id"]]["pending_approvals"][0]["tool"] == "deploy_backend"
    assert items[question["id"]]["question"]["question"] == "Which environment?"
    with live.client(None) as c:
        assert_problem(c.get("/v1/inbox"), 401)


def test_acting_on_a_thread_whose_agent_this_server_does_not_serve_is_409(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, call_id = pending
    with sqlite3.connect(live.db_path) as conn:
        conn.execute("UPDATE threads SET agent = 'ghost' WHERE id = ?", (thread_id,))
    before = live.stored_events(thread_id)
    with live.client("admin") as c:
        for path, body in [
            (f"/v1/threads/{thread_id}/approvals/{call_id}", {"approved": True}),
            (f"/v1/threads/{thread_id}/responses", {"request_id": "r1", "text": "yes"}),
            (f"/v1/threads/{thread_id}/messages", {"text": "hello"}),
            (f"/v1/threads/{thread_id}/resume", None),
            (f"/v1/threads/{thread_id}/events", {"name": "payment_received"}),
            # A fork after the tags came back would be `running` (the model to call next),
            # with nothing here to advance it.
            (f"/v1/threads/{thread_id}/fork", {"at": 2}),
        ]:
            problem = assert_problem(c.post(path, json=body), 409)
            assert problem["title"] == "Not served here", path
            assert "'ghost'" in problem["detail"], path
        raw, headers = signed(approval_body(thread_id, call_id, delivery_id="d-ghost"))
        with live.client(None) as anon:
            r = anon.post("/v1/webhooks/inbound", content=raw, headers=headers)
        assert assert_problem(r, 409)["title"] == "Not served here"
        assert c.get(f"/v1/threads/{thread_id}").json()["status"] == "awaiting_approval"
    assert live.stored_events(thread_id) == before
    with sqlite3.connect(live.db_path) as conn:  # and no fork was written
        assert conn.execute("SELECT id FROM threads").fetchall() == [(thread_id,)]


def test_respond_instead_of_a_verdict(live: LiveServer) -> None:
    thread = live.launch("guarded")
    thread_id, call_id = thread["id"], thread["pending_approvals"][0]["call_id"]
    path = f"/v1/threads/{thread_id}/approvals/{call_id}/instead"
    with live.client("bob") as c:  # not one of the approval's approvers
        assert_problem(c.post(path, json={"text": "staging first"}), 403)
    with live.client("alice") as c:
        assert_problem(c.post(path, json={"text": ""}), 422)
        assert_problem(c.post(path, json={"text": "x", "approved": True}), 422)
        r = c.post(path, json={"text": "Try <b>staging</b> first, please."})
        assert r.status_code == 200, r.text
        again = live.wait_status(thread_id, {"awaiting_approval"})
        assert_problem(c.post(path, json={"text": "once more"}), 409)  # no longer pending
    kinds = [json.loads(body)["kind"] for _, body in live.stored_events(thread_id)]
    assert "approval" not in kinds and "tool_started" not in kinds  # the call did not run
    instead = [json.loads(b) for _, b in live.stored_events(thread_id)]
    instead = [e for e in instead if e["kind"] == "responded_instead"]
    assert [(e["call_id"], e["by"], e["channel"]) for e in instead] == [(call_id, "alice", "api")]
    assert instead[0]["text"] == "Try <b>staging</b> first, please."
    # The model read the message and decided again: a new call awaits approval.
    assert [p["call_id"] for p in again["pending_approvals"]] != [call_id]
    with live.client("reader") as c:
        events = c.get(f"/v1/threads/{thread_id}/events").json()["events"]
    summary = next(e for e in events if e["kind"] == "responded_instead")["summary"]["text"]
    assert summary.startswith(f"instead of a verdict on {call_id} by alice via api")
