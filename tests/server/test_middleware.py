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
