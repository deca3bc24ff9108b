"""middleware.py and problems.py: oversized, malformed and invalid bodies get the right 4xx
problem document and write nothing."""

from __future__ import annotations

from server_support import LiveServer, assert_problem


def test_oversized_malformed_and_invalid_bodies(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    approve = f"/v1/threads/{thread_id}/approvals/{call_id}"
    with live.client("admin") as c:
        huge = {"approved": False, "comment": "x" * (1 << 20)}
        assert_problem(c.post(approve, json=huge), 413)

        def chunks():  # no Content-Length: the limit still applies
            for _ in range(40):
                yield b"x" * 65536

        assert_problem(
            c.post(approve, content=chunks(), headers={"Content-Type": "application/json"}), 413
        )
        headers = {"Content-Type": "application/json"}
        assert (
            assert_problem(c.post(approve, content=b'{"approved": tru', headers=headers), 400)[
                "title"
            ]
            == "Malformed JSON"
        )
        assert_problem(c.post(approve, content=b"[1, 2]", headers=headers), 422)
        problem = assert_problem(c.post(approve, json={"approved": "maybe"}), 422)
        assert problem["errors"][0]["loc"][-1] == "approved"
        assert_problem(c.post(approve, json={"approved": True, "sneaky": 1}), 422)
        assert_problem(
            c.post(approve, json={"approved": True, "edited_arguments": {"tag": 5}}), 409
        )
        assert_problem(c.get("/v1/threads", params={"status": "napping"}), 422)
        assert_problem(c.get("/v1/threads", params={"cursor": "__4"}), 400)  # not UTF-8
        assert_problem(c.post("/v1/threads", json={"agent": "nobody", "message": "hi"}), 422)
    assert live.stored_events(thread_id) == before


def test_request_bodies_are_strict_no_coercion(live: LiveServer, pending: tuple[str, str]) -> None:
    thread_id, call_id = pending
    before = live.stored_events(thread_id)
    approve = f"/v1/threads/{thread_id}/approvals/{call_id}"
    with live.client("admin") as c:
        for path, body, field in [
            (f"/v1/threads/{thread_id}/fork", {"at": False}, "at"),
            (f"/v1/threads/{thread_id}/fork", {"at": "2"}, "at"),
            (f"/v1/threads/{thread_id}/fork", {"at": 2.5}, "at"),
            ("/v1/threads", {"agent": "deploybot", "message": "hi", "wait": "yes"}, "wait"),
            ("/v1/threads", {"agent": "deploybot", "message": "hi", "wait": 1}, "wait"),
            (approve, {"approved": "true"}, "approved"),
            (approve, {"approved": 1}, "approved"),
        ]:
            problem = assert_problem(c.post(path, json=body), 422)
            assert problem["errors"][0]["loc"][-1] == field, body
        listed = c.get("/v1/threads").json()["items"]
    assert live.stored_events(thread_id) == before
    assert [t["id"] for t in listed] == [thread_id]  # no fork, no launch


def test_options_and_405_list_every_method_of_the_path(
    live: LiveServer, pending: tuple[str, str]
) -> None:
    thread_id, _ = pending
    with live.client("admin") as c:
        for path, methods in [
            ("/v1/threads", {"GET", "POST", "OPTIONS"}),
            (f"/v1/threads/{thread_id}", {"GET", "OPTIONS"}),
            (f"/v1/threads/{thread_id}/messages", {"POST", "OPTIONS"}),
        ]:
            r = c.options(path)
            assert r.status_code == 204, (path, r.text)
            assert {m.strip() for m in r.headers["allow"].split(",")} == methods, path
        r = c.delete("/v1/threads")
        assert_problem(r, 405)
        assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "POST", "OPTIONS"}
